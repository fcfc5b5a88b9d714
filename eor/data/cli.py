"""`eor collect` and `eor datasets` (list, info, export)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from eor.envs import all_dataset_names, get_env, parse_dataset_name


def _check_name(name: str, param: str = "NAME") -> tuple[str, str]:
    """(env, kind) of dataset `name`; a usage error naming `param` if it is not one."""
    try:
        return parse_dataset_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


@click.command()
@click.argument("name")
@click.option(
    "--steps",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="rows to collect",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="output file [default: eor's store, D4RL file name]",
)
@click.option(
    "--policy",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="a trained eor agent's checkpoint or run dir [default: uniform random]",
)
@click.option(
    "--noise",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="std of Gaussian noise added to the policy's mean action (with --policy)",
)
@click.option("--deterministic", is_flag=True, help="use the policy's mean action (with --policy)")
@click.option(
    "--num_envs",
    "--num-envs",
    "num_envs",
    type=click.IntRange(min=1),
    default=None,
    help="envs stepped together [default: 1 random, 4 with --policy]",
)
@click.option("--device", default="cpu", show_default=True, help="device of the policy")
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def collect(
    name: str,
    steps: int,
    seed: int,
    out: Path | None,
    policy: Path | None,
    noise: float,
    deterministic: bool,
    num_envs: int | None,
    device: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Collect NAME (e.g. halfcheetah-random-v2) from the MuJoCo simulator as D4RL HDF5.

    Episodes of up to 1000 steps; `random` uses a uniform random policy (D4RL's recipe),
    other kinds need --policy (the kind is then only a label).
    """
    from eor.data.collector import collect as run_collect

    _check_name(name)
    try:
        path = run_collect(
            name,
            steps,
            seed,
            out=out,
            policy=policy,
            noise=noise,
            deterministic=deterministic,
            num_envs=num_envs,
            device=device,
            overwrite=overwrite,
            progress=not quiet and sys.stderr.isatty(),
        )
    except FileExistsError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {steps} steps of {name} to {path}")


def _file_summary(path: Path) -> dict[str, Any]:
    """Rows and dataset name of a D4RL-style file, read from its header only."""
    import h5py

    from eor.data.load import _name_from_file

    info: dict[str, Any] = {"path": path, "size": path.stat().st_size, "rows": "?", "name": None}
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                info["rows"] = len(z["rewards"]) if "rewards" in z.files else "?"
            attrs: dict[str, Any] = {}
        else:
            with h5py.File(path, "r") as f:
                info["rows"] = f["rewards"].shape[0] if "rewards" in f else "?"
                attrs = dict(f.attrs)
        info["name"] = _name_from_file(path, {k: str(v) for k, v in attrs.items()})
    except Exception as exc:  # noqa: BLE001 - list unreadable files too, saying why
        info["rows"] = f"unreadable ({type(exc).__name__})"
    return info


@click.group(invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List the datasets available locally and where they are (or: datasets info NAME)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_datasets)


@datasets.command("list")
def list_datasets() -> None:
    """List local datasets in every place `load_dataset` searches, in resolution order."""
    from eor.data import sources

    places = [("D4RL cache", sources.d4rl_dir()), ("eor store", sources.eor_data_dir())]
    found = 0
    for label, folder in places:
        files = sorted(p for ext in ("*.hdf5", "*.h5", "*.npz") for p in folder.glob(ext))
        click.echo(f"{label}: {folder}{'' if folder.is_dir() else '  (does not exist)'}")
        for p in files:
            info = _file_summary(p)
            name = info["name"] or "(not a D4RL name)"
            click.echo(
                f"  {name:<32} {str(info['rows']):>10} rows {info['size'] / 2**20:9.1f} MiB  {p.name}"
            )
            found += 1
    minari_ids = sources.minari_local_ids()
    if sources.minari_module() is None:
        click.echo("Minari: not installed (pip install 'eor[minari]')")
    else:
        click.echo("Minari (local):")
        known = {sources.minari_id(n): n for n in all_dataset_names() if sources.minari_id(n)}
        for mid in minari_ids:
            click.echo(f"  {known.get(mid, '(no D4RL name)'):<32} {mid}")
            found += 1
    if not found:
        click.echo("no datasets found; make one with: eor collect halfcheetah-random-v2")


@datasets.command("info")
@click.argument("name")
def info(name: str) -> None:
    """Sizes, per-episode return statistics and normalised score of NAME (a D4RL name or file).

    Episodes are split at terminals or timeouts of the raw file; a trailing unfinished
    episode is left out of the statistics.
    """
    from eor.data.dataset import DatasetError, episode_returns, read_raw
    from eor.data.load import _env_for_file, _looks_like_path, not_found_message, resolve

    path = Path(name).expanduser()
    if path.is_file() or _looks_like_path(name):
        if not path.is_file():
            raise click.BadParameter(f"file {name!r} does not exist", param_hint="NAME")
        source = "file"
    else:
        _check_name(name)
        source, location = resolve(name)
        if source == "not found":
            raise click.ClickException(not_found_message(name))
        if source == "Minari":
            raise click.ClickException(
                f"{name} is the Minari dataset {location}; info reads files only"
            )
        path = Path(location)
    try:
        raw, attrs = read_raw(path)
        spec = _env_for_file(path, attrs, None if source == "file" else get_env(name))
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None
    n = len(raw.get("rewards", []))
    rewards = raw["rewards"].reshape(-1)
    terminals = raw["terminals"].reshape(-1).astype(bool)
    timeouts = raw["timeouts"].reshape(-1).astype(bool) if "timeouts" in raw else None
    returns, lengths, tail = episode_returns(rewards, terminals, timeouts)

    click.echo(f"dataset      {name}")
    click.echo(f"source       {source}: {path}")
    click.echo(f"size         {path.stat().st_size / 2**20:.1f} MiB")
    click.echo(
        f"env          {spec.name} ({spec.gym_id}), obs_dim {spec.obs_dim}, act_dim {spec.act_dim}"
    )
    keys = ", ".join(sorted(raw))
    click.echo(f"rows         {n}  (keys: {keys})")
    n_to = int(timeouts.sum()) if timeouts is not None else 0
    click.echo(f"terminals    {int(terminals.sum())}   timeouts {n_to}")
    click.echo(
        f"episodes     {len(returns)} complete"
        + (f", plus {tail} rows of an unfinished one" if tail else "")
    )
    if len(returns):
        scores = spec.normalized_score(returns)
        click.echo(
            f"length       mean {lengths.mean():.1f}  min {lengths.min()}  max {lengths.max()}"
        )
        click.echo(
            f"return       mean {returns.mean():.2f}  std {returns.std():.2f}  "
            f"min {returns.min():.2f}  max {returns.max():.2f}"
        )
        click.echo(
            f"norm. score  mean {scores.mean():.2f}  std {scores.std():.2f}  "
            f"min {scores.min():.2f}  max {scores.max():.2f}"
        )
    for key in (
        "env_id",
        "env_kwargs",
        "policy",
        "noise",
        "seed",
        "steps",
        "num_envs",
        "gymnasium_version",
        "mujoco_version",
        "eor_version",
        "created_utc",
        # eor make-dataset's recipe (docs/datasets.md)
        "recipe",
        "env_version",
        "policy_checkpoint",
        "policy_env_step",
        "policy_return",
        "expert_return",
        "medium_band",
        "replay_before_step",
        "sac_run",
        "sac_steps",
    ):
        if key in attrs:
            click.echo(f"{key:<12} {attrs[key]}")


@datasets.command("export")
@click.argument("name_or_path")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["minari"]),  # eor.data.export.FORMATS
    default="minari",
    show_default=True,
    help="output format",
)
@click.option(
    "--out",
    required=True,
    help="the Minari dataset id to write, e.g. eor/halfcheetah/random-v0 (in Minari's local "
    "store: $MINARI_DATASETS_PATH, else ~/.minari/datasets)",
)
@click.option(
    "--env_name",
    "--env-name",
    "env_name",
    default=None,
    help="env of a file whose name does not say it",
)
@click.option("--author", default="eor", show_default=True, help="author recorded by Minari")
@click.option("--overwrite", is_flag=True, help="replace an existing Minari dataset")
def export(
    name_or_path: str,
    fmt: str,
    out: str,
    env_name: str | None,
    author: str,
    overwrite: bool,
) -> None:
    """Write NAME_OR_PATH (a D4RL name or a D4RL-format file) as a Minari dataset.

    Episodes end at terminals (Minari terminations) and timeouts (truncations); the file's
    unfinished last episode ends truncated. The file needs next_observations. Reading the
    export back keeps every row; see docs/algorithm.md §1.2.
    """
    from eor.data.dataset import DatasetError
    from eor.data.export import export_dataset
    from eor.data.minari_io import is_minari_id, minari_dataset_path

    if not is_minari_id(out):
        raise click.BadParameter(
            f"{out!r} is not a Minari id (namespace/env/name-vN, e.g. eor/hopper/random-v0)",
            param_hint="--out",
        )
    try:
        mds = export_dataset(
            name_or_path, out, fmt=fmt, env=env_name, overwrite=overwrite, author=author
        )
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    except (FileExistsError, FileNotFoundError, DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"wrote Minari dataset {out} ({mds.total_episodes} episodes, {mds.total_steps} steps, "
        f"env {mds.env_spec.id}) to {minari_dataset_path(out)}"
    )


def _sac_option(text: str) -> tuple[str, Any]:
    """ "hidden_dim=64" -> ("hidden_dim", 64), typed by the TrainOnlineConfig field."""
    import dataclasses

    from eor.agent.cli import _click_type
    from eor.online import TrainOnlineConfig

    key, sep, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(TrainOnlineConfig)}
    if not sep or key not in fields:
        raise click.BadParameter(
            f"{text!r}: expected KEY=VALUE with KEY a train-online setting "
            "(e.g. hidden_dim=64, eval_every=10000)",
            param_hint="--sac",
        )
    try:
        return key, _click_type(fields[key].type).convert(value, None, None)
    except click.BadParameter as exc:
        raise click.BadParameter(f"{key}: {exc.message}", param_hint="--sac") from None


@click.command("make-dataset")
@click.argument("name")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="rows of each collected policy (random, medium, expert; medium-expert gets 2x) "
    "[default: D4RL's 1,000,000]",
)
@click.option(
    "--sac_steps",
    "--sac-steps",
    "sac_steps",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="env steps of the SAC run (its final policy is the expert)",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="seed of the SAC run and the data"
)
@click.option(
    "--medium_fraction",
    "--medium-fraction",
    "medium_fraction",
    type=float,
    default=1 / 3,
    show_default="1/3",
    help="medium target: this fraction of the expert's evaluated return",
)
@click.option(
    "--medium_tolerance",
    "--medium-tolerance",
    "medium_tolerance",
    type=float,
    default=0.1,
    show_default=True,
    help="medium band: target +- this fraction of the expert's evaluated return",
)
@click.option(
    "--sac",
    "sac",
    multiple=True,
    metavar="KEY=VALUE",
    help="a train-online setting of the SAC run, e.g. --sac hidden_dim=64 (repeatable)",
)
@click.option("--device", default="auto", show_default=True, help="device of SAC and the policies")
@click.option(
    "--num_envs",
    "--num-envs",
    "num_envs",
    type=click.IntRange(min=1),
    default=None,
    help="envs stepped together while collecting [default: eor collect's]",
)
@click.option(
    "--overwrite", is_flag=True, help="remake NAME's file (not its parts, nor the SAC run)"
)
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
def make_dataset(
    name: str,
    steps: int | None,
    sac_steps: int,
    seed: int,
    medium_fraction: float,
    medium_tolerance: float,
    sac: tuple[str, ...],
    device: str,
    num_envs: int | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Make NAME (ENV-KIND-v2) by D4RL's recipe in eor's store (docs/datasets.md).

    \b
    random         the uniform random policy, --steps rows
    medium         the SAC snapshot closest to 1/3 of the expert's return, --steps rows
    medium-replay  the SAC replay buffer up to the medium snapshot
    expert         the final SAC policy, --steps rows
    medium-expert  medium then expert (made first when missing)
    full-replay    the whole SAC replay buffer

    The SAC run (eor train-online, --sac_steps env steps) is kept in
    <store>/recipes/ENV-sSEED/sac and reused by every kind of that env and seed. Rerun the
    same command after an interruption: it continues where it stopped.
    """
    from eor.data.recipes import RecipeError, RecipeInterrupted, check_arguments, sac_config
    from eor.data.recipes import make_dataset as run_recipe

    env, kind = _check_name(name)
    options = dict(_sac_option(s) for s in sac)
    try:  # bad input (exit 2), found before anything runs
        check_arguments(kind, steps, sac_steps, medium_fraction, medium_tolerance)
        sac_config(env, seed, sac_steps, options)
    except RecipeError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        path = run_recipe(
            name,
            steps=steps,
            sac_steps=sac_steps,
            seed=seed,
            overwrite=overwrite,
            medium_fraction=medium_fraction,
            medium_tolerance=medium_tolerance,
            sac_options=options,
            device=device,
            num_envs=num_envs,
            quiet=quiet,
        )
    except RecipeInterrupted as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(130)
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {name} to {path}")
