"""`eor train-model`: train the dynamics ensemble on a dataset and save it (docs/algorithm.md
§2, §4).

Every field of the reference's `EnsembleTrainConfig` is an option, spelled `--a_b` (the
reference's pyrallis name) and `--a-b`, with the reference's default and meaning; booleans take
a value as pyrallis does (`--save_model False`, `--save_model true`) or stand alone as a flag
(`--save_model`). eor adds --dataset, --batch_size, --bootstrap, --resume,
--checkpoint_interval and --quiet.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from eor.dynamics.config import BOOTSTRAP_MODES, DynamicsConfig

_FIELDS = {f.name: f for f in dataclasses.fields(DynamicsConfig)}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _opt(name: str, *extra: str, **kw: Any):  # noqa: ANN202 - a click decorator
    """An option spelled `--a_b` (the reference's name) and `--a-b`."""
    names = [f"--{name}"]
    if "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    kw.setdefault("show_default", True)
    return click.option(*names, *extra, name, **kw)


def _bool_opt(name: str, default: bool, help: str, *extra: str):  # noqa: ANN202, A002
    """A boolean: `--name False` / `--name true` (pyrallis) or a bare `--name` (True)."""
    return _opt(
        name,
        *extra,
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=default,
        metavar="[True|False]",
        help=help,
    )


def _field(name: str, *extra: str, **kw: Any):  # noqa: ANN202 - a click decorator
    """The option of DynamicsConfig field `name`: its default and its `metadata["help"]`."""
    f = _FIELDS[name]
    if f.type in ("bool", bool):
        return _bool_opt(name, bool(f.default), f.metadata["help"], *extra)
    return _opt(name, *extra, default=f.default, help=f.metadata["help"], **kw)


def _resolve_device(device: str) -> str:
    """auto, cpu, cuda or cuda:N -> a torch device string; a clear error for anything else."""
    import torch

    if not _DEVICE.fullmatch(device):
        raise click.BadParameter(
            f"{device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'", param_hint="--device"
        )
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise click.BadParameter(
                f"{device} was asked for but no CUDA device is visible (use --device cpu)",
                param_hint="--device",
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise click.BadParameter(
                f"{device} was asked for but only {torch.cuda.device_count()} CUDA device(s) "
                "are visible",
                param_hint="--device",
            )
    return device


@click.command("train-model")
@_field("env_name")
@_field("dataset", type=click.Path(dir_okay=False, path_type=Path), show_default=False)
@_field("seed", type=int)
@_field("num_models", type=int)
@_field("num_elites", type=int)
@_field("filename")
@_field("log_interval", type=int)
@_field("train_memory", type=int)
@_field("val_memory", type=int)
@_field("train_val_ratio", type=float)
@_field("epochs", "--max_epochs", "--max-epochs", type=int)
@_field("min_epochs", type=int)
@_field("l2_reg_multiplier", type=float)
@_field("model_lr", type=float)
@_field("hidden_dim", type=int)
@_field("fix_std")
@_field("model_free")
@_field("var_max")
@_field("logvar_head")
@_bool_opt("save_model", True, "False: train and report, write no model directory")
@_opt(
    "save_path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default=False,
    help="model directory to create [default: trained_dynamics/<env_name>_seed<seed>]",
)
@_opt("device", default="auto", help="auto (CUDA if visible), cpu, cuda, cuda:N")
@_opt(
    "threads",
    type=int,
    default=None,
    show_default=False,
    help="torch intra-op CPU threads [default: torch's, one per core]; `eor sweep` sets "
    "each trial's CPUs",
)
@_field("batch_size", type=int)
@_field("bootstrap", type=click.Choice(BOOTSTRAP_MODES))
@_bool_opt("resume", False, "continue the unfinished training saved in --save_path")
@_opt(
    "checkpoint_interval",
    type=float,
    default=60.0,
    help="seconds between checkpoints (0: every epoch)",
)
@_bool_opt("quiet", False, "no progress bar, log lines or summary", "-q")
def train_model(
    env_name: str,
    dataset: Path | None,
    save_model: bool,
    save_path: Path | None,
    device: str,
    threads: int | None,
    resume: bool,
    checkpoint_interval: float,
    quiet: bool,
    **fields: Any,
) -> None:
    """Train the probabilistic dynamics ensemble (7 members, 5 elites) and save it to a directory.

    \b
    Example (the reference's README command):
      eor train-model --env_name halfcheetah-medium-v2 --seed 0 --save_path models/hc
    Load it with eor.dynamics.load(DIR, env=...). Ctrl-C leaves the last checkpoint;
    continue with --resume.
    """
    from tqdm.auto import tqdm

    from eor.data import DatasetError, load_dataset_resuming
    from eor.dynamics.io import DynamicsLoadError, describe
    from eor.dynamics.run import train_to_dir
    from eor.envs import get_env
    from eor.runtime import torch_threads, tune_malloc

    try:
        spec = get_env(env_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env_name") from None
    config = DynamicsConfig(
        env_name=env_name, dataset=str(dataset) if dataset is not None else None, **fields
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
    if threads is not None and threads < 1:
        raise click.BadParameter(
            f"must be a positive integer, got {threads}", param_hint="--threads"
        )
    if resume and not save_model:
        raise click.BadParameter(
            "--resume continues a saved run; it needs --save_model True", param_hint="--resume"
        )
    if save_path is None:
        save_path = Path("trained_dynamics") / f"{env_name}_seed{config.seed}"
    dev = _resolve_device(device)
    tune_malloc()  # keep freed tensor memory in the process (see eor.runtime)

    try:  # a resume by name may fall back to the recorded file; run.py checks its sha256
        recorded = _recorded_dataset(save_path) if resume and dataset is None else None
        ds = load_dataset_resuming(
            dataset if dataset is not None else env_name, env=spec, recorded_path=recorded
        )
    except FileNotFoundError as exc:
        raise click.BadParameter(
            str(exc), param_hint="--dataset" if dataset else "--env_name"
        ) from None
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint="--dataset") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--env_name") from None
    if not resume:  # a resumed run keeps its saved config
        try:
            config.check_memory(len(ds))
        except ValueError as exc:
            field = str(exc).split(" ", 1)[0]
            raise click.BadParameter(str(exc), param_hint=f"--{field}") from None

    where = str(save_path) if save_model else "nowhere (--save_model False)"
    if not quiet:
        click.echo(
            f"{config.filename}: dataset {ds.name} ({len(ds)} transitions, {ds.source}); env "
            f"{spec.name} (obs {spec.obs_dim}, act {spec.act_dim}); device {dev}; "
            f"bootstrap {config.bootstrap}; save to {where}",
            err=True,
        )
    bar = tqdm(
        total=config.epochs,
        desc="train-model",
        unit="epoch",
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    log_every = 0 if quiet else config.log_interval

    def log(trainer: Any, row: dict[str, Any]) -> None:
        if log_every and (trainer.epoch % log_every == 0 or trainer.done):
            best = sorted(row["holdout_mse"])[: trainer.config.num_elites]
            bar.write(
                f"epoch {trainer.epoch}: train loss {row['train_loss']:.5g}, holdout MSE "
                f"({len(best)} best) {sum(best) / len(best):.5g}, last improvement at epoch "
                f"{trainer.stopper.last_improvement()}, lr {trainer.lr:.1e}, "
                f"{row['epoch_time']:.2f} s/epoch",
                file=sys.stderr,
            )

    t0 = time.perf_counter()
    scratch = None if save_model else tempfile.TemporaryDirectory(prefix="eor-train-model-")
    target = save_path if scratch is None else Path(scratch.name) / "model"
    try:
        with torch_threads(threads):
            train_to_dir(
                config,
                ds,
                target,
                device=dev,
                resume=resume,
                checkpoint_interval=checkpoint_interval if save_model else float("inf"),
                on_epoch=log,
                progress=bar,
            )
        bar.close()
        if not quiet:
            summary = describe(target)
            if scratch is not None:
                summary = "not saved (--save_model False)\n" + summary.split("\n", 1)[1]
            click.echo(summary)
            click.echo(f"wall time {time.perf_counter() - t0:.1f} s")
    except KeyboardInterrupt:
        bar.close()
        hint = f"{save_path} keeps its last checkpoint; continue with --resume"
        click.echo(f"\ninterrupted: {hint if save_model else 'nothing was saved'}", err=True)
        sys.exit(130)
    except (DynamicsLoadError, FileExistsError) as exc:
        bar.close()
        raise click.BadParameter(str(exc), param_hint="--save_path") from None
    finally:
        if scratch is not None:
            scratch.cleanup()


def _recorded_dataset(save_path: Path) -> str | None:
    """The dataset file an unfinished model directory recorded it was trained on (meta.json)."""
    from eor.dynamics.io import DynamicsLoadError, read_meta

    try:
        return (read_meta(save_path).get("dataset") or {}).get("path")
    except DynamicsLoadError:
        return None
