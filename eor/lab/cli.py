"""`eor lab`: small experiments where everything is known exactly (docs/lab.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click


@click.group()
def lab() -> None:
    """Small experiments that check the paper's claims where everything is known exactly."""


@lab.command("edge-of-reach")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for summary.json and one figure per method (<method>.png).",
)
@click.option("--quick", is_flag=True, help="A run of seconds (tiny sizes), for a first look.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of everything.")
@click.option(
    "--methods",
    default="base,patch,ravl",
    show_default=True,
    help="Comma-separated methods: base (SAC, N=2, eta=0), patch (base with the oracle's "
    "values at edge-of-reach targets), ravl (N=10, eta=1).",
)
@click.option("--epochs", type=int, default=None, help="Epochs [default: 25; --quick: 2].")
@click.option(
    "--updates-per-epoch",
    "--updates_per_epoch",
    type=int,
    default=None,
    help="Updates per epoch [default: 1000; --quick: 50].",
)
@click.option(
    "--steps-k", "--steps_k", type=int, default=None, help="Rollout length k [default: 5]."
)
@click.option(
    "--eval-every",
    "--eval_every",
    type=int,
    default=None,
    help="Evaluate after epochs 1, N+1, ... and the last; 0: the last only [default: 1].",
)
@click.option("--device", default="cpu", show_default=True, help="Torch device of the learners.")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="Torch CPU threads (the networks are small: one is about as fast as two).",
)
def edge_of_reach(
    out_dir: Path,
    quick: bool,
    seed: int,
    methods: str,
    epochs: int | None,
    updates_per_epoch: int | None,
    steps_k: int | None,
    eval_every: int | None,
    device: str,
    threads: int,
) -> None:
    """Base, base + oracle patch and RAVL on a 2-D point mass with the TRUE dynamics.

    Trains each method on k-step rollouts of the point mass itself, labels edge-of-reach
    states exactly, and writes OUT/<method>.png (reward map and final trajectories, returns,
    mean Q on the data beside the true Q*, Q-ensemble std at edge-of-reach vs within-reach
    states) and OUT/summary.json. The defaults (3 x 25,000 updates) took 15 minutes on a
    busy 2-core CPU (docs/lab.md).

    \b
    Example:
      eor lab edge-of-reach --out lab/edge-of-reach
      eor lab edge-of-reach --out /tmp/eor-quick --quick --methods base,ravl
    """
    from eor.lab.edge_of_reach import LabConfig, run_lab
    from eor.runtime import tune_malloc

    names = tuple(m.strip() for m in methods.split(",") if m.strip())
    changes: dict[str, Any] = {
        "seed": seed,
        "methods": names,
        "device": device,
        "threads": threads,
    }
    for key, value in (
        ("epochs", epochs),
        ("updates_per_epoch", updates_per_epoch),
        ("steps_k", steps_k),
        ("eval_every", eval_every),
    ):
        if value is not None:
            changes[key] = value
    config = LabConfig.quick(**changes) if quick else dataclasses.replace(LabConfig(), **changes)
    try:
        config.validate()
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0].rstrip(":")
        hint = "--" + name.replace("_", "-") if name in _OPTION_FIELDS else None
        raise click.BadParameter(str(exc), param_hint=hint) from None
    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)
    summary = run_lab(config, out_dir, echo=click.echo)
    click.echo(f"summary: {out_dir / 'summary.json'} ({summary['wall_time_s']:.0f} s in all)")


_OPTION_FIELDS = (
    "methods",
    "epochs",
    "updates_per_epoch",
    "steps_k",
    "eval_every",
    "seed",
    "threads",
)
