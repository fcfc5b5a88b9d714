"""eor.logs: what the command line shows of eor's log records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from eor.logs import ClickHandler, show_logs


@pytest.fixture(autouse=True)
def clean_loggers() -> Iterator[None]:
    names = ("eor", "eor.data", "eor.results")
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    for n in names:
        logging.getLogger(n).handlers = [
            h for h in logging.getLogger(n).handlers if not isinstance(h, ClickHandler)
        ]
    yield
    for n, (level, handlers) in saved.items():
        logging.getLogger(n).setLevel(level)
        logging.getLogger(n).handlers = handlers


@click.command()
@click.option("--quiet", "-q", is_flag=True)
def _cmd(quiet: bool) -> None:
    show_logs()
    logging.getLogger("eor.data").info("loaded the dataset")
    logging.getLogger("eor.results").warning("a truncated line")


def test_info_and_warnings_are_shown_once() -> None:
    show_logs(logging.WARNING, "eor.results")  # as `eor report` asks, before the main call
    result = CliRunner().invoke(_cmd, [])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["loaded the dataset", "warning: a truncated line"]


def test_quiet_hides_information_but_not_warnings() -> None:
    result = CliRunner().invoke(_cmd, ["--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["warning: a truncated line"]


def test_main_group_shows_eor_logs() -> None:
    from eor.cli import main

    show_logs(logging.WARNING)  # a quieter level set earlier is lowered to INFO by main
    logging.getLogger("eor").setLevel(logging.WARNING)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("eor").getEffectiveLevel() == logging.INFO
