"""`eor train-agent`: train a RAVL agent on a dataset and a trained dynamics model.

Every option is a `TrainAgentConfig` field, accepted with underscores (the reference scripts'
spelling, docs/algorithm.md §4) and with dashes, and also under the reference's field name where
that differs (`--actor_learning_rate` is `--actor_lr`, `--deterministic_torch` is
`--deterministic`, `--project`/`--group` are `--wandb_project`/`--wandb_group`): one click
option per field, the other spellings its aliases. The options are generated from the
dataclass, so the CLI and the config cannot drift apart.

Booleans take a value written as pyrallis takes it (`--auto_alpha False`, `--save true`, also
1/0, yes/no, on/off, any case) or none (`--deterministic` alone means True), and `--no-<name>`
sets False. The reference's derived fields (env_name_short, env_type, dataset_type,
name_expanded) are refused: the reference overwrote them, eor computes them the same way.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from eor.agent.config import DERIVED_FIELDS, REFERENCE_FIELDS, TrainAgentConfig
from eor.agent.ravl import RAVLHyperparams

ALIASES: dict[str, tuple[str, ...]] = {}
"""TrainAgentConfig field -> the reference's other names for it (REFERENCE_FIELDS)."""
for _ref, _ours in REFERENCE_FIELDS.items():
    if _ref != _ours and _ours not in DERIVED_FIELDS:
        ALIASES[_ours] = (*ALIASES.get(_ours, ()), _ref)

SHORT: dict[str, tuple[str, ...]] = {"quiet": ("-q",)}

BOOL_SPELLINGS = "True/False (any case), 1/0, yes/no, on/off"


class PyrallisBool(click.ParamType):
    """True/False as pyrallis (and click) read them: true/false, 1/0, yes/no, y/n, on/off,
    t/f, in any case."""

    name = "boolean"
    _TRUE = frozenset({"true", "1", "yes", "y", "on", "t"})
    _FALSE = frozenset({"false", "0", "no", "n", "off", "f"})

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self._TRUE:
            return True
        if text in self._FALSE:
            return False
        self.fail(f"{value!r} is not a boolean: use {BOOL_SPELLINGS}", param, ctx)


class OptionalNumber(click.ParamType):
    """A float or int, or None (spelled None or null, as pyrallis writes it)."""

    def __init__(self, base: click.ParamType) -> None:
        self.base = base
        self.name = f"{base.name} or None"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return self.base.convert(value, param, ctx)


def _click_type(annotation: Any) -> Any:
    """click type of a dataclass field annotation ("int", "float | None", "bool", ...)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = str(text).replace(" ", "")
    if text == "bool":
        return PyrallisBool()
    for name, ctype in (("int", click.INT), ("float", click.FLOAT), ("str", click.STRING)):
        if text == name or (name == "str" and text in ("str|None", "Optional[str]")):
            return ctype
        if text in (f"{name}|None", f"Optional[{name}]"):
            return OptionalNumber(ctype)
    raise TypeError(f"no click type for annotation {annotation!r}")  # pragma: no cover


def _spellings(name: str) -> list[str]:
    """--name and, for names with underscores, --na-me."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


BOOL_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(TrainAgentConfig)
    if str(f.type) in ("bool", "<class 'bool'>")
)


def _option_fields(
    config_cls: type[RAVLHyperparams] = TrainAgentConfig,
) -> list[dataclasses.Field[Any]]:
    """A config's fields in --help order: its own (TrainAgentConfig: run, data mix, rollouts),
    then the learner group (inherited, so first in `dataclasses.fields`)."""
    learner = {f.name for f in dataclasses.fields(RAVLHyperparams)}
    everything = dataclasses.fields(config_cls)
    return [f for f in everything if f.name not in learner] + [
        f for f in everything if f.name in learner
    ]


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per TrainAgentConfig field, with the dataclass default and the field's
    `metadata["help"]`; booleans also get a `--no-<name>` option; the reference's derived fields
    get options that refuse a value."""
    for name in reversed(DERIVED_FIELDS):
        func = click.option(*_spellings(name), name, default=None, hidden=True)(func)
    for field in reversed(_option_fields()):
        name = field.name
        if name in DERIVED_FIELDS:
            continue
        decls = [*_spellings(name)]
        for alias in ALIASES.get(name, ()):
            decls += _spellings(alias)
        decls += SHORT.get(name, ())
        help_text = field.metadata["help"]
        if name in BOOL_FIELDS:
            no_decls = [f"--no-{n}" for n in dict.fromkeys(d[2:] for d in decls if d[:2] == "--")]
            func = click.option(*no_decls, f"no_{name}", is_flag=True, default=False, hidden=True)(
                func
            )
            help_text = f"{help_text} Also {decls[0]} alone (True), --no-{name} (False)."
        func = _field_option(field, decls, help_text)(func)
    return func


def _field_option(
    field: dataclasses.Field[Any], decls: list[str], help_text: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one config field, spelled `decls`, with the field's default: a
    boolean takes a value (PyrallisBool) or none (True)."""
    name, default = field.name, field.default
    if str(field.type) in ("bool", "<class 'bool'>"):
        return click.option(
            *decls,
            name,
            type=PyrallisBool(),
            is_flag=False,
            flag_value=True,
            default=default,
            show_default=True,
            metavar="[BOOL]",
            help=help_text,
        )
    return click.option(
        *decls,
        name,
        type=_click_type(field.type),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )


def _collect_options(
    ctx: click.Context, options: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """The TrainAgentConfig values from the parsed options, and the fields given on the command
    line. Refuses the derived fields and a boolean given both as --x and --no-x."""
    for name in DERIVED_FIELDS:
        if options.pop(name) is not None or _given(ctx, name):
            source = (
                "[name_prefix-]name-<env short>-N<num_critics>-eta<eta>-k<steps_k>"
                "-r<dataset_ratio>--<uuid>; set --name or --name_prefix instead"
                if name == "name_expanded"
                else "--env_name; set --env_name instead"
            )
            raise click.BadParameter(
                f"is derived, not set: the reference computes it (overwriting a given value), "
                f"and so does eor, from {source}",
                param_hint=f"--{name}",
            )
    given = {k for k in options if not k.startswith("no_") and _given(ctx, k)}
    for name in BOOL_FIELDS:
        if options.pop(f"no_{name}"):
            if name in given:
                raise click.BadParameter(
                    f"given both as --{name} and --no-{name}; use one", param_hint=f"--{name}"
                )
            options[name] = False
            given.add(name)
    return options, given


EXAMPLE = """Train a RAVL agent (docs/algorithm.md §3) on a dataset and a trained dynamics model.

\b
Example:
  eor train-model --env_name halfcheetah-medium-v2 --seed 0 --save_path models/hc-med
  eor train-agent --env_name halfcheetah-medium-v2 --num_critics 10 --steps_k 5 \\
      --dataset_ratio 0.05 --eta 1.0 --seed 0 --load_model_dir models/hc-med \\
      --run_dir runs/hc-med-s0
  eor train-agent --resume runs/hc-med-s0            # continue after Ctrl-C or a crash
  eor train-agent --env_name hopper-medium-v2 --true_dynamics   # rollouts in the simulator
  eor train-agent --resume runs/hc-med-s0 --epochs 4000

The run directory gets config.json, metrics.jsonl, checkpoints/latest.pt and summary.json.
Options accept underscores (--num_critics) and dashes (--num-critics), and the reference's
names (--actor_learning_rate, --deterministic_torch, --project, ...). Booleans: --auto_alpha
False, --save True (also true/false, 1/0, yes/no), --deterministic alone, --no-deterministic.
--save writes SAVE_PATH/agent_<name_expanded>/weights.pt at the end, as the reference did.
With --resume, only run settings given on the command line (epochs, device, threads,
eval_*, save_every, log_every, wandb*, save*, quiet, deterministic, cuda_graph) may change; the
rest comes from the run's checkpoint. --cuda_graph (needs CUDA) replays each update as one CUDA
graph; it has not been run on a GPU yet.
Exit status: 0 done, 1 a NaN loss (the last good checkpoint is kept), 2 bad input,
130 interrupted by Ctrl-C (a checkpoint was saved).
"""


def _bad_parameter(
    exc: Exception, config_cls: type[RAVLHyperparams] = TrainAgentConfig
) -> click.ClickException:
    """ValueError "name must ..." / "name: ..." -> a usage error naming --name (a field of
    `config_cls`, or --resume)."""
    message = str(exc)
    head = message.split(" ", 1)[0].rstrip(":")
    if head in {f.name for f in dataclasses.fields(config_cls)} | {"resume"}:
        if message.startswith(f"{head}: "):
            message = message[len(head) + 2 :]
        return click.BadParameter(message, param_hint=f"--{head}")
    return click.UsageError(message)


_resume_option = click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Continue the run in RUN_DIR from its checkpoints/latest.pt.",
    metavar="RUN_DIR",
)
"""--resume RUN_DIR of train-agent and train-online."""


@click.command(help=EXAMPLE, context_settings={"help_option_names": ["-h", "--help"]})
@_config_options
@_resume_option
@click.pass_context
def train_agent(ctx: click.Context, resume: str | None, **options: Any) -> None:
    from eor.agent.trainer import NonFiniteLossError, Trainer, TrainingSetupError
    from eor.runtime import tune_malloc

    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)

    options, given = _collect_options(ctx, options)
    try:
        if resume is not None:
            trainer = Trainer.resume(resume, overrides={k: options[k] for k in given})
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
        if trainer.config.save:
            save_dir = trainer.config.agent_save_dir(trainer.name_expanded)
            click.echo(f"Saving trained agent to: {save_dir} (weights.pt at the end)", err=True)
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
