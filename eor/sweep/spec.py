"""The sweep file: read, validate and expand into trials (a DAG: agents depend on models).

Layout (a commented example: examples/sweep.toml)::

    [sweep]
    datasets = ["halfcheetah-random-v2", "hopper-random-v2"]
    seeds = [0, 1]                # agent seeds
    model_seeds = "same"          # "same": model seed = agent seed; or a list, e.g. [0]
    [resources]                   # per trial
    cpus = 1                      # also the trial's --threads
    gpus = 0
    memory_gb = 2
    [train-model]                 # `eor train-model` options; a list is a grid axis
    epochs = 5
    [train-agent]                 # `eor train-agent` options; a list is a grid axis
    eta = [0.5, 1.0]

Options the sweep sets itself (env_name, seed, save_path, load_model_dir, run_dir, resume,
threads) are refused in the option tables.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import tomllib

SWEEP_SET = ("env_name", "seed", "save_path", "load_model_dir", "run_dir", "resume", "threads")
"""Options the sweep sets for every trial; a spec may not give them."""

SECTIONS = ("sweep", "resources", "train-model", "train-agent")


class SpecError(ValueError):
    """A bad sweep file: the message names the file, the table, the key and what was expected."""


@dataclass(frozen=True)
class Trial:
    """One run: `kind` "model" or "agent", its `name` (also its directory under the sweep
    directory), the command's options, and the model trial it needs (agents only)."""

    kind: str
    name: str
    dataset: str
    seed: int
    setting: str
    options: dict[str, Any] = field(hash=False)
    depends_on: str | None = None

    def argv(self, sweep_dir: Path, threads: int | None) -> list[str]:
        """The command line of this trial (without the command name)."""
        out: list[str] = []
        for key, value in self.options.items():
            out += [f"--{key}", str(value)]
        run = str(sweep_dir / self.name)
        out += ["--env_name", self.dataset, "--seed", str(self.seed)]
        if self.kind == "model":
            out += ["--save_path", run]
        else:
            assert self.depends_on is not None
            out += ["--run_dir", run, "--load_model_dir", str(sweep_dir / self.depends_on)]
        if threads is not None:
            out += ["--threads", str(threads)]
        return out


@dataclass
class SweepSpec:
    """A validated sweep file."""

    path: Path
    datasets: list[str]
    seeds: list[int]
    model_seeds: str | list[int]
    resources: dict[str, float]
    model_options: dict[str, Any]
    agent_options: dict[str, Any]

    @property
    def threads(self) -> int:
        return max(1, int(self.resources["cpus"]))

    def trials(self) -> list[Trial]:
        """Every trial, models first (each before the agents that need it)."""
        models: dict[tuple[str, int, str], Trial] = {}
        agents: list[Trial] = []
        for dataset in self.datasets:
            for seed in self.seeds:
                model_seeds: list[int] = (
                    [seed] if isinstance(self.model_seeds, str) else list(self.model_seeds)
                )
                for mseed in model_seeds:
                    for msetting, mopts in _grid(self.model_options):
                        key = (dataset, mseed, msetting)
                        if key not in models:
                            mname = f"models/{dataset}/{msetting}-s{mseed}"
                            models[key] = Trial("model", mname, dataset, mseed, msetting, mopts)
                        model = models[key]
                        for asetting, aopts in _grid(self.agent_options):
                            setting = (
                                asetting if msetting == "default" else f"{msetting}-{asetting}"
                            )
                            if len(model_seeds) > 1:
                                setting = f"{setting}-ms{mseed}"
                            name = f"runs/{dataset}/{setting}-s{seed}"
                            agents.append(
                                Trial("agent", name, dataset, seed, setting, aopts, model.name)
                            )
        return [*models.values(), *agents]


def _grid(options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(setting name, options) for every point of the grid: lists are axes; the name is
    `key<value>` of each axis joined by '-', or 'default' without axes."""
    axes = [k for k, v in options.items() if isinstance(v, list)]
    out = []
    for values in itertools.product(*(options[k] for k in axes)):
        point = {**options, **dict(zip(axes, values, strict=True))}
        name = "-".join(f"{k}{_fmt(v)}" for k, v in zip(axes, values, strict=True)) or "default"
        out.append((name, point))
    return out


def _fmt(value: Any) -> str:
    return str(value).replace("/", "_")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raises SpecError naming what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in SECTIONS:
            raise SpecError(f"{path}: unknown table [{key}]; expected one of {', '.join(SECTIONS)}")
    sweep = data.get("sweep", {})
    for key in sweep:
        if key not in ("datasets", "seeds", "model_seeds"):
            raise SpecError(
                f"{path}: [sweep] {key}: unknown key; expected datasets, seeds, model_seeds"
            )
    datasets = sweep.get("datasets")
    if not (isinstance(datasets, list) and datasets and all(isinstance(d, str) for d in datasets)):
        raise SpecError(
            f"{path}: [sweep] datasets must be a non-empty list of names, got {datasets!r}"
        )
    seeds = sweep.get("seeds", [0])
    if not _int_list(seeds):
        raise SpecError(
            f"{path}: [sweep] seeds must be a non-empty list of integers, got {seeds!r}"
        )
    model_seeds = sweep.get("model_seeds", "same")
    if model_seeds != "same" and not _int_list(model_seeds):
        raise SpecError(
            f'{path}: [sweep] model_seeds must be "same" or a non-empty list of integers, '
            f"got {model_seeds!r}"
        )
    resources = {"cpus": 1.0, "gpus": 0.0, "memory_gb": 0.0}
    for key, value in data.get("resources", {}).items():
        if key not in resources:
            raise SpecError(
                f"{path}: [resources] {key}: unknown key; expected cpus, gpus, memory_gb"
            )
        low = 1 if key == "cpus" else 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise SpecError(f"{path}: [resources] {key} must be a number >= {low}, got {value!r}")
        resources[key] = float(value)
    model_options = dict(data.get("train-model", {}))
    agent_options = dict(data.get("train-agent", {}))
    for table, options in (("train-model", model_options), ("train-agent", agent_options)):
        for key, value in options.items():
            if key in SWEEP_SET:
                raise SpecError(
                    f"{path}: [{table}] {key}: set by the sweep for every trial; remove it "
                    f"(datasets and seeds go in [sweep], CPUs in [resources])"
                )
            if isinstance(value, list) and not value:
                raise SpecError(f"{path}: [{table}] {key}: an empty list (grid axis) has no values")
            if isinstance(value, dict):
                raise SpecError(f"{path}: [{table}] {key}: expected a value or a list, got a table")
    spec = SweepSpec(path, datasets, seeds, model_seeds, resources, model_options, agent_options)
    for trial in spec.trials():
        _check(path, trial, spec)
    return spec


def _int_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _check(path: Path, trial: Trial, spec: SweepSpec) -> None:
    """Parse and validate the trial's options as its command would, without running it."""
    table = "train-model" if trial.kind == "model" else "train-agent"
    argv = trial.argv(Path("SWEEP_DIR"), spec.threads)
    try:
        if trial.kind == "model":
            _check_model(argv)
        else:
            _check_agent(argv)
    except click.ClickException as exc:
        raise SpecError(f"{path}: [{table}] (trial {trial.name}): {exc.format_message()}") from None


def _check_model(argv: list[str]) -> None:
    from eor.dynamics.cli import train_model
    from eor.dynamics.config import DynamicsConfig
    from eor.envs import get_env

    ctx = train_model.make_context("train-model", argv)
    params = ctx.params
    try:
        get_env(params["env_name"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env_name") from None
    names = {f for f in DynamicsConfig.__dataclass_fields__}
    config = DynamicsConfig(**{k: v for k, v in params.items() if k in names and k != "dataset"})
    try:
        config.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{str(exc).split(' ', 1)[0]}") from None


def _check_agent(argv: list[str]) -> None:
    from eor.agent.cli import _bad_parameter, _collect_options, train_agent
    from eor.agent.config import TrainAgentConfig

    ctx = train_agent.make_context("train-agent", argv)
    params = dict(ctx.params)
    params.pop("resume")
    options, _ = _collect_options(ctx, params)
    try:
        TrainAgentConfig(**options).validate()
    except ValueError as exc:
        raise _bad_parameter(exc) from None
