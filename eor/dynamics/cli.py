"""`eor train-model`: train the dynamics ensemble on a dataset and save it (SPEC 2, SPEC 4)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from eor.dynamics.train import DynamicsConfig

_DEFAULTS = DynamicsConfig()


def _opt(name: str, *extra: str, **kw):  # noqa: ANN202 - a click decorator
    """An option spelled `--a_b` (the reference's name) and `--a-b`."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    return click.option(*names, *extra, name, show_default=True, **kw)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(
            "cuda was asked for but no CUDA device is visible", param_hint="--device"
        )
    return device


@click.command("train-model")
@_opt("env_name", required=True, help="env or D4RL dataset name, e.g. halfcheetah-medium-v2")
@_opt(
    "dataset",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a D4RL-format .hdf5/.npz file (default: find the dataset named by --env_name)",
)
@_opt("seed", type=int, default=_DEFAULTS.seed)
@_opt("num_models", type=int, default=_DEFAULTS.num_models, help="ensemble size")
@_opt("num_elites", type=int, default=_DEFAULTS.num_elites)
@_opt("hidden_dim", type=int, default=_DEFAULTS.hidden_dim)
@_opt(
    "epochs",
    "--max_epochs",
    "--max-epochs",
    type=int,
    default=_DEFAULTS.epochs,
    help="hard cap on epochs (--max_epochs is an alias, for short runs)",
)
@_opt("min_epochs", type=int, default=_DEFAULTS.min_epochs, help="no early stop before this epoch")
@_opt("model_lr", type=float, default=_DEFAULTS.model_lr)
@_opt("l2_reg_multiplier", type=float, default=_DEFAULTS.l2_reg_multiplier)
@_opt("train_val_ratio", type=float, default=_DEFAULTS.train_val_ratio, help="holdout fraction")
@_opt("batch_size", type=int, default=_DEFAULTS.batch_size)
@_opt(
    "save_path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="model directory to create [default: models/<env_name>_seed<seed>]",
)
@_opt("device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto")
@_opt("resume", is_flag=True, help="continue the unfinished training saved in --save_path")
@_opt(
    "checkpoint_interval",
    type=float,
    default=60.0,
    help="seconds between checkpoints (0: every epoch)",
)
@_opt("quiet", "-q", is_flag=True, help="no progress bar and no summary")
def train_model(
    env_name: str,
    dataset: Path | None,
    seed: int,
    num_models: int,
    num_elites: int,
    hidden_dim: int,
    epochs: int,
    min_epochs: int,
    model_lr: float,
    l2_reg_multiplier: float,
    train_val_ratio: float,
    batch_size: int,
    save_path: Path | None,
    device: str,
    resume: bool,
    checkpoint_interval: float,
    quiet: bool,
) -> None:
    """Train the probabilistic dynamics ensemble (7 members, 5 elites) and save it to a directory.

    \b
    Example:
      eor train-model --env_name halfcheetah-random-v2 --seed 0 --save_path models/hc
    Load it with eor.dynamics.load(DIR, env=...). Ctrl-C leaves the last checkpoint;
    continue with --resume.
    """
    from tqdm.auto import tqdm

    from eor.data import DatasetError, load_dataset
    from eor.dynamics.io import DynamicsLoadError, describe, train_to_dir
    from eor.envs import get_env
    from eor.runtime import tune_malloc

    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)
    try:
        spec = get_env(env_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env_name") from None
    config = DynamicsConfig(
        env_name=env_name,
        dataset=str(dataset) if dataset is not None else None,
        seed=seed,
        num_models=num_models,
        num_elites=num_elites,
        hidden_dim=hidden_dim,
        epochs=epochs,
        min_epochs=min_epochs,
        model_lr=model_lr,
        l2_reg_multiplier=l2_reg_multiplier,
        train_val_ratio=train_val_ratio,
        batch_size=batch_size,
    )
    try:
        config.validate()
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        raise click.BadParameter(str(exc), param_hint=f"--{field}") from None
    if checkpoint_interval < 0:
        raise click.BadParameter(
            f"must be >= 0, got {checkpoint_interval}", param_hint="--checkpoint_interval"
        )
    if save_path is None:
        save_path = Path("models") / f"{env_name}_seed{seed}"
    dev = _resolve_device(device)

    try:
        ds = load_dataset(dataset if dataset is not None else env_name, env=spec)
    except FileNotFoundError as exc:
        raise click.BadParameter(
            str(exc), param_hint="--dataset" if dataset else "--env_name"
        ) from None
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint="--dataset") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env_name") from None

    if not quiet:
        click.echo(
            f"dataset {ds.name} ({len(ds)} transitions, {ds.source}); env {spec.name} "
            f"(obs {spec.obs_dim}, act {spec.act_dim}); device {dev}; save to {save_path}",
            err=True,
        )
    bar = tqdm(
        total=config.epochs,
        desc="train-model",
        unit="epoch",
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        train_to_dir(
            config,
            ds,
            save_path,
            device=dev,
            resume=resume,
            checkpoint_interval=checkpoint_interval,
            progress=bar,
        )
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"\ninterrupted: {save_path} keeps its last checkpoint; continue with --resume",
            err=True,
        )
        sys.exit(130)
    except (DynamicsLoadError, FileExistsError) as exc:
        bar.close()
        raise click.BadParameter(str(exc), param_hint="--save_path") from None
    bar.close()
    if not quiet:
        click.echo(describe(save_path))
        click.echo(f"wall time {time.perf_counter() - t0:.1f} s")
