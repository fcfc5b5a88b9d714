"""The model directory: its format, atomic checkpoints, and loading with checks.

The run driver that trains into a model directory is `eor.dynamics.run.train_to_dir`.

A model directory holds (FORMAT_VERSION 1):

    meta.json              written last, atomically: format, dims, env, dataset identity
                           (sha256), elites, holdout MSE, versions, and the names and sha256 of
                           the two tensor files below
    config.json            every DynamicsConfig field, readable
    metrics.jsonl          one line per epoch (0 = before training): train_loss,
                           holdout_mse [E], lr, improved, epoch_time
    weights-EEEEEE.pt      the model (best weights so far, normaliser, elites): torch tensors only
    train_state-EEEEEE.pt  optimiser, early-stopping state, best weights, RNG (only while
                           training is unfinished; removed at the end to keep the directory small)

Crash safety: a checkpoint writes *new* tensor files (named by epoch), then metrics and config,
each by temp file + os.replace, then swaps in meta.json, and only then deletes the files of
the previous checkpoint. Whatever moment a crash or Ctrl-C hits, meta.json names a complete,
consistent checkpoint. The first checkpoint is assembled in a temporary directory and renamed
into place, so a directory either holds a checkpoint or does not exist.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eor import __version__
from eor.dynamics.config import DynamicsConfig
from eor.dynamics.model import DynamicsEnsemble
from eor.dynamics.train import DynamicsTrainer
from eor.fileio import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    sha256_file,
    umask_mode,
)

FORMAT = "eor-dynamics"
FORMAT_VERSION = 1
META = "meta.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


class DynamicsLoadError(ValueError):
    """A model directory that is missing, incomplete, corrupt, incompatible or for another env."""


# ----------------------------------------------------------------------------- small file helpers


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows), binary=False)


def versions() -> dict[str, str]:
    return {
        "eor": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "format_version": str(FORMAT_VERSION),
    }


# ----------------------------------------------------------------------------- save


def model_state(
    model: DynamicsEnsemble, best_params: list[torch.Tensor] | None = None
) -> dict[str, Any]:
    """The tensors of the weights file. `best_params` (weights then biases) replaces the live
    member weights, so that an unfinished checkpoint's model is its best-so-far model."""
    n = len(model.weights)
    weights = [w.detach() for w in model.weights]
    biases = [b.detach() for b in model.biases]
    if best_params is not None:
        weights, biases = list(best_params[:n]), list(best_params[n:])
    return {
        "weights": [w.cpu().clone() for w in weights],
        "biases": [b.cpu().clone() for b in biases],
        "max_logvar": model.max_logvar.detach().cpu().clone(),
        "min_logvar": model.min_logvar.detach().cpu().clone(),
        "normalizer_mean": model.normalizer.mean.cpu().clone(),
        "normalizer_std": model.normalizer.std.cpu().clone(),
        "elites": model.elites.cpu().clone(),
    }


def save_checkpoint(
    path: Path,
    trainer: DynamicsTrainer,
    *,
    env: dict[str, Any],
    dataset: dict[str, Any],
    metrics: list[dict[str, Any]],
    final: bool,
) -> None:
    """Write one checkpoint of `trainer` into model directory `path` (see the module doc)."""
    path = Path(path)
    model = trainer.model
    if final:
        mse = list(trainer.holdout_losses)
        elites = model.elites.tolist()
        state = model_state(model)
    else:  # best-so-far weights and the elites they imply
        mse = list(trainer.stopper.best)
        elites = sorted(np.argsort(mse, kind="stable")[: model.num_elites].tolist())
        state = model_state(model, trainer.best_params)
        state["elites"] = torch.tensor(elites, dtype=torch.int64)
    tag = f"{trainer.epoch:06d}"
    weights_name = f"weights-{tag}.pt"
    state_name = None if final else f"train_state-{tag}.pt"
    files = {"weights": weights_name, "train_state": state_name}
    sha: dict[str, str] = {}
    times = trainer.epoch_times
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": bool(final),
        "epoch": trainer.epoch,
        "stop_reason": trainer.stop_reason,
        "dims": {
            "obs_dim": model.obs_dim,
            "act_dim": model.act_dim,
            "hidden_dim": model.hidden_dim,
            "num_hidden": model.num_hidden,
            "num_members": model.num_members,
            "num_elites": model.num_elites,
        },
        "env": env,
        "dataset": {**dataset, "n_train": trainer.n_train, "n_holdout": trainer.n_holdout},
        "elites": elites,
        "holdout_mse": mse,
        "time_per_epoch_s": float(np.mean(times)) if times else None,
        "versions": versions(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "sha256": sha,
    }

    fresh = not (path / META).is_file()
    target = path
    if fresh:  # assemble the first checkpoint next to `path`, then rename it into place
        path.parent.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        target.chmod(umask_mode(0o777))  # mkdtemp's 0700 would become the model folder's
    try:
        atomic_torch_save(state, target / weights_name)
        sha["weights"] = sha256_file(target / weights_name)
        if state_name is not None:
            atomic_torch_save(trainer.state_dict(), target / state_name)
            sha["train_state"] = sha256_file(target / state_name)
        _write_jsonl(target / METRICS, metrics)
        atomic_write_json(target / CONFIG, trainer.config.to_dict())
        atomic_write_json(target / META, meta)
        if fresh:
            if path.exists():  # an empty folder made by the user: replace it
                path.rmdir()
            os.replace(target, path)
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    # Only now is the old checkpoint unreferenced: delete its tensor files and stray temps.
    keep = {v for v in files.values() if v}
    for f in path.iterdir():
        stale = (
            f.suffix == ".pt"
            and f.name.startswith(("weights-", "train_state-"))
            and f.name not in keep
        )
        if stale or (f.name.startswith(".") and f.name.endswith(".tmp")):
            f.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- load


def read_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of a model directory, checked for format and version (DynamicsLoadError)."""
    path = Path(path)
    if not path.exists():
        raise DynamicsLoadError(f"model directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise DynamicsLoadError(
            f"{str(path)!r} is not a directory (expected an eor train-model --save_path)"
        )
    meta_path = path / META
    if not meta_path.is_file():
        raise DynamicsLoadError(
            f"{str(path)!r} is incomplete: it has no {META} (no finished checkpoint was written there)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DynamicsLoadError(f"{str(meta_path)!r} is corrupt: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DynamicsLoadError(
            f"{str(path)!r} is not an eor dynamics model directory ({META} has no format {FORMAT!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise DynamicsLoadError(
            f"{str(path)!r} has format version {meta.get('format_version')!r}, but this eor "
            f"({__version__}) reads version {FORMAT_VERSION}; retrain with `eor train-model`"
        )
    for key in ("files", "sha256", "dims", "env", "elites"):
        if key not in meta:
            raise DynamicsLoadError(f"{str(meta_path)!r} is corrupt: missing key {key!r}")
    dim_keys = ("obs_dim", "act_dim", "hidden_dim", "num_hidden", "num_members", "num_elites")
    if not isinstance(meta["dims"], dict) or any(k not in meta["dims"] for k in dim_keys):
        raise DynamicsLoadError(f"{str(meta_path)!r} is corrupt: dims must hold {dim_keys}")
    return meta


def _load_tensor_file(path: Path, meta: dict[str, Any], key: str) -> Any:
    name = meta["files"].get(key)
    if not name:
        raise DynamicsLoadError(f"{str(path)!r} has no {key} file")
    file = path / name
    if not file.is_file():
        raise DynamicsLoadError(f"{str(path)!r} is incomplete: {name} is missing")
    expected = meta["sha256"].get(key)
    if expected is None or sha256_file(file) != expected:
        raise DynamicsLoadError(f"{str(file)!r} is corrupt: its sha256 does not match {META}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DynamicsLoadError(f"{str(file)!r} is corrupt: {type(exc).__name__}: {exc}") from None


def load_model_dir(
    path: str | Path,
    *,
    env: Any = None,
    device: str | torch.device = "cpu",
    allow_unfinished: bool = False,
) -> DynamicsEnsemble:
    """Rebuild the trained ensemble saved by `eor train-model` in directory `path`.

    env: an env or dataset name (or EnvSpec) the caller will use; a model made for another env,
    or with other dims, is refused. allow_unfinished: accept a directory whose training has not
    finished (its best-so-far weights). Raises DynamicsLoadError (a ValueError) with the reason.
    `eor.dynamics.load` also takes the reference code's directories (eor.dynamics.loader).
    """
    path = Path(path)
    meta = read_meta(path)
    if not meta.get("complete") and not allow_unfinished:
        raise DynamicsLoadError(
            f"{str(path)!r} holds an unfinished training run (checkpoint at epoch {meta.get('epoch')}); "
            "finish it with `eor train-model --resume --save_path ...`, or pass allow_unfinished=True"
        )
    dims = meta["dims"]
    env_name = meta["env"].get("name")
    if env is not None:
        from eor.envs import get_env

        spec = get_env(env)
        if spec.name != env_name:
            raise DynamicsLoadError(
                f"{str(path)!r} is a dynamics model for env {env_name!r}, but env {spec.name!r} was asked for"
            )
        if (spec.obs_dim, spec.act_dim) != (dims["obs_dim"], dims["act_dim"]):
            raise DynamicsLoadError(
                f"{str(path)!r} has obs_dim={dims['obs_dim']}, act_dim={dims['act_dim']}, but env "
                f"{spec.name!r} has obs_dim={spec.obs_dim}, act_dim={spec.act_dim}"
            )
    state = _load_tensor_file(path, meta, "weights")
    try:
        model = DynamicsEnsemble(
            int(dims["obs_dim"]),
            int(dims["act_dim"]),
            num_members=int(dims["num_members"]),
            num_elites=int(dims["num_elites"]),
            hidden_dim=int(dims["hidden_dim"]),
            num_hidden=int(dims["num_hidden"]),
            env_name=env_name,
        )
        with torch.no_grad():
            _copy_list(model.weights, state["weights"], "weights")
            _copy_list(model.biases, state["biases"], "biases")
            _copy(model.max_logvar, state["max_logvar"], "max_logvar")
            _copy(model.min_logvar, state["min_logvar"], "min_logvar")
            _copy(model.normalizer.mean, state["normalizer_mean"], "normalizer_mean")
            _copy(model.normalizer.std, state["normalizer_std"], "normalizer_std")
        model.set_elites(state["elites"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DynamicsLoadError(f"{str(path)!r} does not match its {META}: {exc}") from None
    if model.elites.tolist() != list(meta["elites"]):
        raise DynamicsLoadError(
            f"{str(path)!r} is corrupt: elites differ between {META} and the weights"
        )
    model.meta = meta
    model.requires_grad_(False)
    return model.to(device).eval()


def _copy(dst: torch.Tensor, src: Any, name: str) -> None:
    if not isinstance(src, torch.Tensor) or src.shape != dst.shape:
        got = tuple(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
        raise ValueError(f"{name} has shape {got}, expected {tuple(dst.shape)}")
    dst.copy_(src)


def _copy_list(dst: Any, src: Any, name: str) -> None:
    if not isinstance(src, list | tuple) or len(src) != len(dst):
        raise ValueError(f"{name} must be a list of {len(dst)} tensors")
    for i, (d, s) in enumerate(zip(dst, src, strict=True)):
        _copy(d, s, f"{name}[{i}]")


# ----------------------------------------------------------------------------- identity
# What meta.json records of the env and the dataset (a resumed run must match both).


def env_identity(env_name: str) -> dict[str, Any]:
    from eor.envs import get_env

    spec = get_env(env_name)
    return {
        "name": spec.name,
        "gym_id": spec.gym_id,
        "obs_dim": spec.obs_dim,
        "act_dim": spec.act_dim,
    }


def dataset_identity(ds: Any) -> dict[str, Any]:
    return {
        "name": ds.name,
        "source": str(ds.source),
        "path": str(ds.path) if getattr(ds, "path", None) is not None else None,
        "checksum": ds.checksum,
        "n_transitions": len(ds),
    }


# ----------------------------------------------------------------------------- resume
# What `eor.dynamics.run.train_to_dir(resume=True)` reads of an unfinished directory.


def load_train_state(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The unfinished run's trainer state (`DynamicsTrainer.state_dict`) named by `meta`."""
    return _load_tensor_file(path, meta, "train_state")


def read_config(path: Path) -> DynamicsConfig:
    """The DynamicsConfig a model directory was trained with (its config.json)."""
    return DynamicsConfig.from_saved(json.loads((path / CONFIG).read_text()))


def read_metrics(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """metrics.jsonl up to the checkpoint `meta` names (lines past it were never committed)."""
    with open(path / METRICS) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["epoch"] <= meta["epoch"]]


# ----------------------------------------------------------------------------- summary


def describe(path: str | Path) -> str:
    """A short human-readable summary of a model directory (used at the end of train-model)."""
    meta = read_meta(path)
    lines = [
        f"saved {path} ({sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6:.1f} MB)",
        f"epochs run: {meta['epoch']} ({meta.get('stop_reason') or 'unfinished'}), "
        f"time per epoch: {meta['time_per_epoch_s'] or 0:.3f} s",
        "holdout MSE per member: "
        + ", ".join(
            f"{i}:{v:.5g}{'*' if i in meta['elites'] else ''}"
            for i, v in enumerate(meta["holdout_mse"])
        ),
        f"elites (*): {meta['elites']}",
    ]
    return "\n".join(lines)
