"""The `eor` command line.

Sub-commands live beside the code they drive and are imported only when used, so that
`eor --help` answers in well under a second.
"""

from __future__ import annotations

import importlib

import click

from eor import __version__
from eor.logs import show_logs

# name -> "module:attribute" of a click command. One line per command.
_COMMANDS: dict[str, str] = {
    "info": "eor.cli:info",
    "train-model": "eor.dynamics.cli:train_model",
    "collect": "eor.data.cli:collect",
    "datasets": "eor.data.cli:datasets",
    "make-dataset": "eor.data.cli:make_dataset",
    "plot": "eor.results.cli:plot",
    "report": "eor.results.cli:report",
    "train-agent": "eor.agent.cli:train_agent",
    "convert-model": "eor.dynamics.convert_cli:convert_model",
    "lab": "eor.lab.cli:lab",
    "train-online": "eor.online.cli:train_online",
    "sweep": "eor.sweep.cli:sweep",
}


class LazyGroup(click.Group):
    """A click group that imports each sub-command on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="eor")
def main() -> None:
    """eor: RAVL offline model-based RL, fast and faithful.

    \b
    Typical workflow:
      eor collect halfcheetah-random-v2 --steps 200000
      eor train-model --env_name halfcheetah-random-v2 --seed 0 --save_path models/hc
      eor train-agent --env_name halfcheetah-random-v2 --load_model_dir models/hc --run_dir runs/hc
      eor plot runs/hc --out hc.png
      eor report runs/*
    """
    show_logs()


def _version_of(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure, never crash `info`
        return f"not available ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "unknown"))


@click.command()
def info() -> None:
    """Print versions, whether the C++ core loaded, CUDA visibility and the backend of each op."""
    import torch

    import eor

    click.echo(f"eor        {__version__}")
    for name in ("torch", "numpy", "triton", "mujoco", "gymnasium", "h5py"):
        click.echo(f"{name:<10} {_version_of(name)}")
    core = "loaded" if eor.CORE_AVAILABLE else f"NOT loaded ({eor.CORE_ERROR})"
    click.echo(f"C++ core   {core}")
    cuda = torch.cuda.is_available()
    click.echo(
        f"CUDA       {'visible: ' + torch.cuda.get_device_name(0) if cuda else 'not visible'}"
    )
    from eor import ops, runtime

    click.echo(f"malloc     {runtime.describe()}")
    device = torch.device("cuda" if cuda else "cpu")
    click.echo(f"backends on {device} (EOR_BACKEND={ops.requested_backend()}):")
    for op_name, backend in ops.backend_report(device).items():
        click.echo(f"  {op_name:<24} {backend}")
