"""`eor train-online`: online SAC in a gymnasium MuJoCo env (docs/online.md).

Every option is a `TrainOnlineConfig` field, spelled with underscores or dashes; booleans take
a value as in `eor train-agent` (`--save_policies False`) or none (`--quiet` alone is True).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from eor.agent.cli import (
    _bad_parameter,
    _field_option,
    _given,
    _option_fields,
    _resume_option,
    _spellings,
)
from eor.online.config import TrainOnlineConfig


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per TrainOnlineConfig field: the run fields, then the learner group."""
    for field in reversed(_option_fields(TrainOnlineConfig)):
        decls = _spellings(field.name) + (["-q"] if field.name == "quiet" else [])
        help_text = field.metadata["help"]
        if str(field.type) in ("bool", "<class 'bool'>"):
            help_text = f"{help_text} Also {decls[0]} alone (True)."
        func = _field_option(field, decls, help_text)(func)
    return func


EXAMPLE = """Train SAC online in a MuJoCo env (docs/online.md): RAVL's learner with eta = 0 and
two critics, one update per env step after uniformly random actions for start_steps.

\b
Example:
  eor train-online --env_name halfcheetah --total_steps 300000 --seed 0 --run_dir runs/sac-hc-s0
  eor train-online --resume runs/sac-hc-s0                    # after Ctrl-C or a crash
  eor train-online --resume runs/sac-hc-s0 --total_steps 1000000
  eor plot runs/sac-hc-s0

The run directory gets config.json, metrics.jsonl, policies.json, checkpoints/latest.pt (the
whole state, replay buffer included), checkpoints/policy_<env step>.pt and summary.json.
With --resume only total_steps, device, eval_*, checkpoint_every, save_policies, log_every,
threads, deterministic and quiet may change. Exit status: 0 done, 1 a NaN loss or another
error, 2 bad input, 130 interrupted (Ctrl-C saves a checkpoint first).
"""


@click.command(help=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"]})
@_config_options
@_resume_option
@click.pass_context
def train_online(ctx: click.Context, resume: str | None, **options: Any) -> None:
    from eor.online.trainer import NonFiniteLossError, OnlineTrainer, TrainingSetupError
    from eor.runtime import tune_malloc

    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)
    given = {k for k in options if _given(ctx, k)}
    try:
        if resume is not None:
            trainer = OnlineTrainer.resume(resume, overrides={k: options[k] for k in given})
        else:
            trainer = OnlineTrainer(TrainOnlineConfig(**options))
    except (TrainingSetupError, ValueError, FileNotFoundError) as exc:
        raise _bad_parameter(exc, TrainOnlineConfig) from None

    cfg = trainer.config
    if not cfg.quiet:
        what = "Resuming" if resume else "Training"
        click.echo(
            f"{what} SAC online in {trainer.env_spec.gym_id} on {trainer.device}: env step "
            f"{trainer.env_steps}/{cfg.total_steps}, run dir {trainer.run_dir}",
            err=True,
        )
    try:
        summary = trainer.train()
    except NonFiniteLossError as exc:
        raise click.ClickException(str(exc)) from None

    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    click.echo(
        f"{summary['status']}: {summary['env_steps']} env steps, {summary['total_updates']} "
        f"updates in {summary['wall_time_s']:.1f} s; return last {fmt(summary['last_return'])} "
        f"best {fmt(summary['best_return'])}; {trainer.run_dir}/summary.json"
    )
    if summary["status"] == "interrupted":
        sys.exit(130)
