"""`eor train-agent`: train a RAVL agent on a dataset and a trained dynamics model.

Every option is a `TrainAgentConfig` field, accepted with underscores (the reference scripts'
spelling, SPEC 4) and with dashes. The options are generated from the dataclass, so the CLI
and the config cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from eor.agent.config import TrainAgentConfig

HELP: dict[str, str] = {
    "env_name": "D4RL dataset name, e.g. halfcheetah-medium-v2 (picks env, data, score).",
    "dataset": "Dataset name or HDF5/NPZ path to train on instead of env_name's dataset.",
    "seed": "Seed of the networks, buffers, rollouts and evaluation envs.",
    "device": "auto (CUDA if visible), cpu, cuda, cuda:1, ...",
    "run_dir": "Output directory [default: runs/<env_name>-s<seed>-<UTC time>].",
    "epochs": "Epochs (each: rollouts, updates_per_epoch updates, evaluation).",
    "updates_per_epoch": "Gradient updates per epoch.",
    "eval_every": "Evaluate every N epochs (and after the last); 0: only after the last.",
    "eval_episodes": "Deterministic evaluation episodes, run as one batch of envs.",
    "eval_max_steps": "Cap evaluation episodes at N steps [default: the env's 1000].",
    "checkpoint_every": "Rewrite checkpoints/latest.pt (whole state) every N epochs.",
    "save_every": "Also keep checkpoints/epoch_XXXX.pt (learner only) every N epochs; 0: never.",
    "log_every": "Write a train metrics record every N updates.",
    "deterministic": "Bit-reproducible CPU run (deterministic algorithms, 1 thread).",
    "wandb": "Mirror the metrics to Weights & Biases (needs `pip install wandb`; "
    "WANDB_MODE=offline works).",
    "wandb_project": "wandb project name.",
    "quiet": "No progress bar.",
    "batch_size": "Transitions per update.",
    "dataset_ratio": "Share of real transitions in each batch, in [0, 1].",
    "rollouts_per_epoch": "Model rollouts (distinct dataset start states) per epoch.",
    "steps_k": "Model steps per rollout (k).",
    "buffer_retain_epochs": "Epochs of rollouts the FIFO model buffer keeps.",
    "load_model_dir": "Directory of a dynamics model written by `eor train-model` (required).",
    "hidden_dim": "Width of the actor's and critics' three hidden layers.",
    "num_critics": "Critics in the ensemble (N); >= 2 when eta > 0.",
    "gamma": "Discount factor.",
    "tau": "Polyak rate of the target critics.",
    "eta": "Weight of the EDAC diversity term (0 disables it).",
    "actor_lr": "Actor learning rate (Adam).",
    "critic_lr": "Critic learning rate (Adam).",
    "alpha_lr": "Entropy temperature learning rate (Adam).",
}

FLAGS: dict[str, tuple[str, ...]] = {
    "deterministic": ("--deterministic/--no-deterministic",),
    "wandb": ("--wandb/--no-wandb",),
    "quiet": ("--quiet/--no-quiet", "-q"),
}


def _click_type(annotation: Any) -> Any:
    """click type of a dataclass field annotation ("int", "float | None", ...)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = str(text).replace(" ", "")
    for name, ctype in (("int", click.INT), ("float", click.FLOAT), ("str", click.STRING)):
        if text in (name, f"{name}|None", f"Optional[{name}]"):
            return ctype
    raise TypeError(f"no click type for annotation {annotation!r}")  # pragma: no cover


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per TrainAgentConfig field, with the dataclass default."""
    for field in reversed(dataclasses.fields(TrainAgentConfig)):
        name = field.name
        default = field.default
        help_text = HELP[name]
        if name in FLAGS:
            option = click.option(*FLAGS[name], name, default=default, help=help_text)
        else:
            decls = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
            option = click.option(
                *decls,
                name,
                type=_click_type(field.type),
                default=default,
                show_default=default is not None,
                help=help_text,
            )
        func = option(func)
    return func


EXAMPLE = """Train a RAVL agent (SPEC 3) on a dataset and a trained dynamics model.

\b
Example:
  eor train-model --env_name halfcheetah-medium-v2 --seed 0 --save_path models/hc-med
  eor train-agent --env_name halfcheetah-medium-v2 --num_critics 10 --steps_k 5 \\
      --dataset_ratio 0.05 --eta 1.0 --seed 0 --load_model_dir models/hc-med \\
      --run_dir runs/hc-med-s0
  eor train-agent --resume runs/hc-med-s0            # continue after Ctrl-C or a crash
  eor train-agent --resume runs/hc-med-s0 --epochs 4000

The run directory gets config.json, metrics.jsonl, checkpoints/latest.pt and summary.json.
Options accept underscores (--num_critics) and dashes (--num-critics). With --resume, only
run settings given on the command line (epochs, device, eval_*, save_every, log_every,
wandb, quiet, deterministic) may change; the rest comes from the run's checkpoint.
Exit status: 0 done, 1 a NaN loss (the last good checkpoint is kept), 2 bad input,
130 interrupted by Ctrl-C (a checkpoint was saved).
"""


def _bad_parameter(exc: Exception) -> click.ClickException:
    """ValueError "name must ..." / "name: ..." -> a usage error naming --name."""
    message = str(exc)
    head = message.split(" ", 1)[0].rstrip(":")
    if head in {f.name for f in dataclasses.fields(TrainAgentConfig)} | {"resume"}:
        if message.startswith(f"{head}: "):
            message = message[len(head) + 2 :]
        return click.BadParameter(message, param_hint=f"--{head}")
    return click.UsageError(message)


@click.command(help=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"]})
@_config_options
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Continue the run in RUN_DIR from its checkpoints/latest.pt.",
    metavar="RUN_DIR",
)
@click.pass_context
def train_agent(ctx: click.Context, resume: str | None, **options: Any) -> None:
    from eor.agent.trainer import NonFiniteLossError, Trainer, TrainingSetupError
    from eor.runtime import tune_malloc

    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)

    try:
        if resume is not None:
            given = {
                k: v
                for k, v in options.items()
                if ctx.get_parameter_source(k)
                in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            }
            trainer = Trainer.resume(resume, overrides=given)
        else:
            trainer = Trainer(TrainAgentConfig(**options))
    except (TrainingSetupError, ValueError, FileNotFoundError) as exc:
        raise _bad_parameter(exc) from None

    if not trainer.config.quiet:
        what = "Resuming" if resume else "Training"
        click.echo(
            f"{what} RAVL on {trainer.components.dataset_name} ({trainer.env_spec.gym_id}) on "
            f"{trainer.device}: epoch {trainer.epochs_done + 1}/{trainer.config.epochs}, "
            f"run dir {trainer.run_dir}",
            err=True,
        )
    try:
        summary = trainer.train()
    except NonFiniteLossError as exc:
        raise click.ClickException(str(exc)) from None
    except TrainingSetupError as exc:
        raise click.ClickException(str(exc)) from None
    _print_summary(summary, trainer.run_dir)
    if summary["status"] == "interrupted":
        sys.exit(130)


def _print_summary(summary: dict[str, Any], run_dir: Any) -> None:
    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    click.echo(
        f"{summary['status']}: {summary['epochs_completed']} epochs, "
        f"{summary['total_updates']} updates in {summary['wall_time_s']:.1f} s; "
        f"score last {fmt(summary['last_score'])} best {fmt(summary['best_score'])} "
        f"(return last {fmt(summary['last_return'])} best {fmt(summary['best_return'])}); "
        f"{run_dir}/summary.json"
    )
