"""What eor's commands show of its log records: INFO and up from every `eor.*` logger, on stderr.

Library code logs through `logging.getLogger("eor.<part>")` and never prints; the command line
calls `show_logs()` once, so a user sees, for example, which dataset file was loaded, that an
ant run zeroes contact forces, or that a reference-format model was converted. Programs that
import eor keep full control of its loggers.
"""

from __future__ import annotations

import logging

import click


class ClickHandler(logging.Handler):
    """Writes records with `click.echo(err=True)`, looked up at each message so that it follows
    click's (and click's test runner's) current stream. Warnings and errors are prefixed with
    their level. Below WARNING, nothing is shown while the running command has `--quiet`."""

    def emit(self, record: logging.LogRecord) -> None:
        ctx = click.get_current_context(silent=True)
        if record.levelno < logging.WARNING and ctx is not None and ctx.params.get("quiet"):
            return  # a command's --quiet silences the information lines, not the warnings
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        click.echo(f"{prefix}{record.getMessage()}", err=True)


def show_logs(level: int = logging.INFO, logger_name: str = "eor") -> None:
    """Show `logger_name`'s records at `level` and up on stderr (idempotent). The one handler
    sits on the "eor" logger, so a record is shown once whichever loggers were asked for."""
    root = logging.getLogger("eor")
    if not any(isinstance(h, ClickHandler) for h in root.handlers):
        root.addHandler(ClickHandler())
    logger = logging.getLogger(logger_name)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
