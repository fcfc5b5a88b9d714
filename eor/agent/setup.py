"""Setting a RAVL run up: the device, the env, the dynamics model and the dataset, loaded and
cross-checked before any training (and before the run directory is touched).

`TrainingSetupError` (a ValueError) says what is wrong and which setting to change; the CLI
turns it into a usage error naming the option.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eor.agent.config import TrainAgentConfig
from eor.agent.ravl import RAVL
from eor.runtime import torch_threads

# Run-group fields that `--resume` may change; the others define the run and must match.
RESUME_OVERRIDABLE: frozenset[str] = frozenset(
    {
        "epochs",
        "device",
        "threads",
        "eval_every",
        "eval_episodes",
        "eval_max_steps",
        "save_every",
        "checkpoint_every",
        "log_every",
        "wandb",
        "wandb_project",
        "wandb_group",
        "save",
        "save_path",
        "quiet",
        "deterministic",
        "cuda_graph",
    }
)


class TrainingSetupError(ValueError):
    """The run cannot start: bad model dir, mismatching model or dataset, bad run dir, ..."""


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda if visible, else cpu; anything else is checked to exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise TrainingSetupError(f"device: not a torch device: {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingSetupError(
            f"device {device!r} requested but CUDA is not available here; use --device cpu "
            "(or auto: CUDA when visible, else the CPU)"
        )
    return dev


def build_learner(
    config: TrainAgentConfig, obs_dim: int, act_dim: int, device: torch.device
) -> RAVL:
    """The RAVL learner for `config` (its learner group of fields) on `device`."""
    return RAVL(config.learner_config(obs_dim, act_dim), device=device, seed=config.seed)


@dataclass
class Components:
    """What a run trains on: the env, the real data and the dynamics model."""

    env_spec: Any
    real_buffer: Any
    model: Any
    dataset_name: str
    dataset_source: str
    dataset_checksum: str | None = None
    dataset_path: str | None = None
    """The file the data was read from (None for a Minari dataset or in-memory data)."""
    model_info: dict[str, Any] | None = None
    """Identity of the dynamics model (from its meta.json): weights sha256, its dataset, elites."""
    contact_forces_missing: bool = False
    """The dataset's contact-force columns are all zero (ant; `eor.data.contact_forces_missing`):
    the run's envs then zero them too (`Trainer.zero_contact_forces`)."""


def build_components(
    config: TrainAgentConfig, device: torch.device, *, recorded: dict[str, Any] | None = None
) -> Components:
    """Load and cross-check the env, the dynamics model and the dataset (before any training).

    recorded: a resumed run's dataset record (its checkpoint's "dataset": name, path, checksum):
    its file is read when the name no longer finds the data (`eor.data.load_dataset_resuming`).
    """
    import eor.data
    import eor.dynamics
    from eor.envs import get_env

    try:
        spec = get_env(config.env_name)
    except (ValueError, TypeError) as exc:
        raise TrainingSetupError(f"env_name: {exc}") from None
    model: Any
    model_info: dict[str, Any] | None
    if config.true_dynamics:
        model, model_info = build_simulator(spec)
    else:
        model_dir = Path(str(config.load_model_dir))
        if not model_dir.is_dir():
            raise TrainingSetupError(
                f"load_model_dir: {model_dir} is not a directory; train a model first with "
                f"`eor train-model --env_name {config.env_name} --save_path {model_dir}`"
            )
        try:
            model = eor.dynamics.load(model_dir, env=config.env_name, device=str(device))
        except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as exc:
            raise TrainingSetupError(
                f"load_model_dir: cannot use the model in {model_dir}: {exc}"
            ) from None
        check_model_dims(model, spec, model_dir)
        model_info = model_identity(model_dir, model)
    source = config.dataset or config.env_name
    record = recorded or {}
    try:
        ds = eor.data.load_dataset_resuming(
            source, env=spec, recorded_path=record.get("path"), recorded_name=record.get("name")
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise TrainingSetupError(f"dataset: cannot load {source!r}: {exc}") from None
    if ds.observations.shape[1] != spec.obs_dim or ds.actions.shape[1] != spec.act_dim:
        raise TrainingSetupError(
            f"dataset {source!r} has obs/act dims {ds.observations.shape[1]}/{ds.actions.shape[1]}"
            f", but {spec.name} needs {spec.obs_dim}/{spec.act_dim}"
        )
    return Components(
        env_spec=spec,
        real_buffer=ds.to_buffer(seed=config.seed),
        model=model,
        dataset_name=str(ds.name),
        dataset_source=str(ds.source),
        dataset_checksum=ds.checksum,
        dataset_path=str(ds.path) if ds.path is not None else None,
        model_info=model_info,
        contact_forces_missing=ds.contact_forces_missing,
    )


def build_simulator(spec: Any) -> tuple[Any, dict[str, Any]]:
    """`--true_dynamics`: the simulator as the dynamics model (`eor.envs.true_dynamics`) and
    its identity record (config.json's "model", the checkpoints' model_info)."""
    import gymnasium
    import mujoco

    from eor.envs.true_dynamics import SimulatorDynamics, check_simulated

    try:
        check_simulated(spec)
    except ValueError as exc:
        raise TrainingSetupError(f"true_dynamics: {exc}") from None
    model = SimulatorDynamics(spec)
    info = {
        "format": "simulator",
        "env_id": spec.gym_id,
        "frame_skip": model.frame_skip,
        "gymnasium_version": gymnasium.__version__,
        "mujoco_version": mujoco.__version__,
    }
    return model, info


def model_identity(model_dir: Path, model: Any = None) -> dict[str, Any] | None:
    """What identifies a saved dynamics model, from its meta.json (None if unreadable).

    A model converted on the fly from the reference's format (eor.dynamics.reference_format)
    has no meta.json: its record is the conversion's model_info ("format": "reference").
    A directory written by `eor convert-model` adds "converted_from".
    """
    converted = (getattr(model, "meta", None) or {}).get("model_info")
    if converted is not None:
        return dict(converted)
    try:
        meta = json.loads((model_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    identity = {
        "weights_sha256": (meta.get("sha256") or {}).get("weights"),
        "dataset": (meta.get("dataset") or {}).get("name"),
        "dataset_checksum": (meta.get("dataset") or {}).get("checksum"),
        "elites": meta.get("elites"),
        "epoch": meta.get("epoch"),
    }
    reference = (meta.get("dataset") or {}).get("reference")
    if reference is not None:
        identity["converted_from"] = {
            k: reference.get(k)
            for k in ("format", "source_dir", "pickle", "weights_sha256", "pickle_sha256")
        }
    return identity


def check_model_dims(model: Any, spec: Any, where: Any = "the dynamics model") -> None:
    """Refuse a dynamics model whose obs/act dims are not the env's."""
    if (model.obs_dim, model.act_dim) != (spec.obs_dim, spec.act_dim):
        raise TrainingSetupError(
            f"load_model_dir: the dynamics model in {where} has obs_dim={model.obs_dim}, "
            f"act_dim={model.act_dim}, but env {spec.name} has obs_dim={spec.obs_dim}, "
            f"act_dim={spec.act_dim}; it was trained for another environment"
        )


def check_sizes(config: TrainAgentConfig, real_len: int) -> None:
    """Dataset and buffer sizes against the config (clear errors before any training)."""
    if config.rollouts_per_epoch > real_len:
        raise TrainingSetupError(
            f"rollouts_per_epoch ({config.rollouts_per_epoch}) exceeds the dataset size "
            f"({real_len} transitions); start states are drawn without replacement"
        )
    if config.num_real > real_len:
        raise TrainingSetupError(
            f"batch_size * dataset_ratio = {config.num_real} real samples per batch exceed the "
            f"dataset size ({real_len})"
        )
    if config.num_model > config.model_buffer_capacity:
        raise TrainingSetupError(
            f"the model buffer (rollouts_per_epoch * steps_k * buffer_retain_epochs = "
            f"{config.model_buffer_capacity}) is smaller than the {config.num_model} model "
            "samples each batch needs"
        )


def default_run_dir(config: TrainAgentConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env_name}-s{config.seed}-{stamp}"


def recorded_zero_contact_forces(ckpt: dict[str, Any] | None, run_dir: Path) -> bool | None:
    """The zero_contact_forces decision a run recorded: in its checkpoint, else in its
    config.json; None for a run from before it was recorded."""
    value = (ckpt or {}).get("zero_contact_forces")
    if value is None:
        try:
            value = json.loads((run_dir / "config.json").read_text()).get("zero_contact_forces")
        except (OSError, ValueError, AttributeError):
            value = None
    return None if value is None else bool(value)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global streams (third-party users of them)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party users of the global stream
    torch.manual_seed(seed)


@contextmanager
def deterministic_torch(enabled: bool) -> Iterator[None]:
    """`torch.use_deterministic_algorithms` and one intra-op thread (a fixed reduction order
    for CPU kernels) while the block runs, when `enabled`; the previous settings after it."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


@contextmanager
def run_threads(threads: int | None, deterministic: bool) -> Iterator[None]:
    """A run's --threads and --deterministic while it trains: `deterministic_torch` (one thread)
    when `deterministic`, which overrides `threads`; else `threads` (None: torch's choice)."""
    with torch_threads(None if deterministic else threads), deterministic_torch(deterministic):
        yield


def check_new_run_dir(run_dir: Path, *, resuming: bool) -> None:
    """A new run refuses a `run_dir` that already holds one (its config.json)."""
    if not resuming and (run_dir / "config.json").exists():
        raise TrainingSetupError(
            f"run_dir: {run_dir} already holds a run; continue it with --resume {run_dir} "
            "or choose another --run_dir"
        )


def checkpoint_to_resume(run_dir: Path, written: str) -> Path:
    """`run_dir`'s checkpoints/latest.pt; TrainingSetupError when `run_dir` is not a directory
    or has none (`written`: when the run writes one, for the message)."""
    if not run_dir.is_dir():
        raise TrainingSetupError(f"resume: {run_dir} is not a directory")
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise TrainingSetupError(
            f"resume: {run_dir} has no checkpoint ({path} is missing); a run writes one {written}"
        )
    return path


def check_checkpoint_dims(dims: dict[str, int], obs_dim: int, act_dim: int) -> None:
    """A checkpoint's obs/act dims (its "dims") must be the env's."""
    if (dims["obs_dim"], dims["act_dim"]) != (obs_dim, act_dim):
        raise TrainingSetupError(
            f"resume: the checkpoint has obs/act dims {dims}, the env has {obs_dim}/{act_dim}"
        )


def apply_resume_overrides(config: Any, overrides: dict[str, Any], allowed: frozenset[str]) -> None:
    """Set `overrides` on a resumed run's saved `config`; a field outside `allowed` may only be
    given with its saved value (TrainingSetupError otherwise, or for an unknown name)."""
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TrainingSetupError(f"resume: unknown setting {key!r}")
        if key not in allowed and getattr(config, key) != value:
            raise TrainingSetupError(
                f"resume: {key} cannot change when resuming (saved {getattr(config, key)!r}, "
                f"given {value!r}); allowed: {', '.join(sorted(allowed))}"
            )
        setattr(config, key, value)


def resume_config(
    saved: dict[str, Any], overrides: dict[str, Any], run_dir: Path, epochs_done: int
) -> TrainAgentConfig:
    """The config of a resumed run: the `saved` one (its checkpoint's), with `overrides`;
    only RESUME_OVERRIDABLE fields may differ from the saved values."""
    config = TrainAgentConfig.from_dict(saved)
    apply_resume_overrides(config, overrides, RESUME_OVERRIDABLE)
    config.run_dir = str(run_dir)
    if config.epochs < epochs_done:
        raise TrainingSetupError(
            f"epochs: the run already finished {epochs_done} epochs; "
            f"cannot resume with --epochs {config.epochs}"
        )
    return config
