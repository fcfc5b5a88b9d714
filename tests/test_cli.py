"""The `eor` entry point: help, version and `eor info`."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import eor
from eor.cli import _COMMANDS, main


def test_version_matches_package() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert eor.__version__ in result.output


def test_help_lists_every_registered_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in _COMMANDS:
        assert name in result.output


def test_every_registered_command_imports_and_has_help() -> None:
    runner = CliRunner()
    for name in _COMMANDS:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"eor {name} --help failed:\n{result.output}"
        assert "Usage:" in result.output


def test_unknown_command_is_an_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_info_reports_versions_core_cuda_and_backends() -> None:
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("eor", "torch", "triton", "mujoco", "gymnasium", "C++ core", "CUDA"):
        assert name in out
    assert "loaded" in out
    for op in ("ensemble_linear", "ensemble_mlp", "critic_loss"):
        assert op in out


def test_console_script_runs() -> None:
    # The installed entry point, not only the click object.
    proc = subprocess.run(
        [sys.executable, "-m", "eor", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert eor.__version__ in proc.stdout
