"""The RAVL training loop: rollouts, mixed batches, updates, evaluation, run directory.

One epoch (docs/algorithm.md §3):

    rollout phase  ->  updates_per_epoch x (mixed batch -> learner.update)  ->  evaluation (after
    epochs 1, eval_every + 1, ... and the last)  ->  checkpoints/latest.pt

Run directory (read by `eor plot` / `eor report`, `eor.results.runs`; the README describes it):

    RUN/config.json      every TrainAgentConfig field, eor_version, dims, env id, dataset
    RUN/metrics.jsonl    one JSON object per line: kind train / rollout / eval, epoch, updates, time
    RUN/checkpoints/     latest.pt (whole state, see eor.agent.checkpoint), epoch_XXXX.pt
    RUN/summary.json     last/best normalised score and return, total updates, wall time, versions

Stopping: the first Ctrl-C asks the loop to stop at the next update boundary, where it writes
a checkpoint of the exact state (mid-epoch if need be) and returns; `--resume` then continues as
if nothing happened. A second Ctrl-C (or a KeyboardInterrupt raised inside an update) stops at
once and still saves the current state. A non-finite loss stops the run with
`NonFiniteLossError`, leaving the last good checkpoint (end of the previous epoch) in place.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor

import eor
from eor.agent.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    buffer_from_bytes,
    buffer_to_bytes,
    capture_rng,
    load_checkpoint,
    prepare_agent_save_dir,
    restore_rng,
    save_reference_agent,
)
from eor.agent.config import TrainAgentConfig
from eor.agent.evaluate import decide_zero_contact_forces, eval_seed, evaluate, make_eval_envs
from eor.agent.ravl import LOGGED_KEYS
from eor.agent.ravl import NonFiniteLossError as LearnerNonFiniteLossError
from eor.agent.rollout import rollout_phase
from eor.fileio import atomic_write_json

TRAIN_KEYS: tuple[str, ...] = LOGGED_KEYS
"""docs/algorithm.md §3's logged learner values, in the "train" records (the learner's LOGGED_KEYS)."""

# Run-group fields that `--resume` may change; the others define the run and must match.
RESUME_OVERRIDABLE: frozenset[str] = frozenset(
    {
        "epochs",
        "device",
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
    }
)


class NonFiniteLossError(LearnerNonFiniteLossError):
    """A loss became NaN or inf; the run stopped and its last good checkpoint was kept."""


class TrainingSetupError(ValueError):
    """The run cannot start: bad model dir, mismatching model or dataset, bad run dir, ..."""


# ----------------------------------------------------------------------------- helpers
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
) -> Any:
    """The RAVL learner for `config` (its learner group of fields) on `device`."""
    from eor.agent.ravl import RAVL, RAVLConfig

    rc = RAVLConfig(obs_dim=obs_dim, act_dim=act_dim, **config.learner_kwargs())
    return RAVL(rc, device=device, seed=config.seed)


def versions() -> dict[str, str]:
    import gymnasium
    import mujoco

    return {
        "eor": eor.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
    }


def _jsonable(value: Any) -> Any:
    """Floats for JSON: tensors and numpy scalars to Python, NaN/inf to None (strict JSON)."""
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON atomically (temp file, fsync, os.replace)."""
    atomic_write_json(path, _jsonable(obj), sort_keys=True)


class MetricsLog:
    """Append-only metrics.jsonl; one flushed line per record.

    `offset` (bytes written so far) goes into each checkpoint; a resumed run truncates the file
    back to it, so records written after the last checkpoint are not duplicated.
    """

    def __init__(self, path: Path, truncate_to: int | None = None) -> None:
        self.path = path
        if truncate_to is not None and path.exists():
            with open(path, "r+b") as f:
                f.truncate(truncate_to)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    @property
    def offset(self) -> int:
        return self._file.tell()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class WandbMirror:
    """Mirrors every metrics record to Weights & Biases as `<kind>/<key>` at step = updates.

    wandb is imported lazily; `WANDB_MODE=offline` works as with any wandb run.
    """

    def __init__(self, config: dict[str, Any], run_dir: Path, run_id: str | None) -> None:
        self._wandb = import_wandb()
        self.run = self._wandb.init(
            project=config.get("wandb_project", "RAVL"),
            group=config.get("wandb_group"),
            name=config.get("name_expanded") or run_dir.name,  # the reference's run name
            dir=str(run_dir),
            config=config,
            id=run_id,
            resume="allow",
        )
        self.run_id: str | None = getattr(self.run, "id", run_id)

    def log(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        data = {
            f"{kind}/{k}": v
            for k, v in _jsonable(record).items()
            if k not in ("kind",) and isinstance(v, (int, float))
        }
        self._wandb.log(data, step=int(record["updates"]))

    def summary(self, summary: dict[str, Any]) -> None:
        for k, v in _jsonable(summary).items():
            if isinstance(v, (int, float, str)):
                self.run.summary[k] = v

    def finish(self) -> None:
        self._wandb.finish()


def import_wandb() -> Any:
    """`import wandb`, or a clear error saying how to install it."""
    try:
        import wandb
    except ImportError as exc:
        raise TrainingSetupError(
            "--wandb needs the wandb package, which is not installed: "
            "pip install 'eor[wandb]' (or pip install wandb); set WANDB_MODE=offline to log "
            f"without an account ({exc})"
        ) from None
    return wandb


class MixedBatchSampler:
    """Mixed batches as torch tensors: `sample_mixed([real, model], [n_real, n_model])`.

    The C++ sampler writes straight into preallocated arrays. On CPU the returned tensors are
    `torch.from_numpy` views of them (no copy; valid until the next `sample`). On CUDA the
    arrays are pinned and copied with `non_blocking=True`; two slots alternate, and a slot is
    rewritten only after the CUDA event of its last copy has completed.
    """

    KEYS = ("obs", "act", "rew", "next_obs", "done")

    def __init__(self, real: Any, model: Any, n_real: int, n_model: int, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        pairs = [(b, n) for b, n in ((real, n_real), (model, n_model)) if n > 0]
        self.buffers = [b for b, _ in pairs]
        self.counts = [n for _, n in pairs]
        batch = n_real + n_model
        shapes = {
            "obs": (batch, real.obs_dim),
            "act": (batch, real.act_dim),
            "rew": (batch,),
            "next_obs": (batch, real.obs_dim),
            "done": (batch,),
        }
        self._slots: list[dict[str, Tensor]] = []
        for _ in range(2 if self.cuda else 1):
            self._slots.append(
                {
                    k: torch.empty(s, dtype=torch.float32, pin_memory=self.cuda)
                    for k, s in shapes.items()
                }
            )
        self._arrays = [{k: t.numpy() for k, t in slot.items()} for slot in self._slots]
        self._events = [torch.cuda.Event() if self.cuda else None for _ in self._slots]
        self._next = 0

    def sample(self) -> dict[str, Tensor]:
        i = self._next
        self._next = (i + 1) % len(self._slots)
        event = self._events[i]
        if event is not None:
            event.synchronize()  # the copy from this slot two batches ago is done
        eor.sample_mixed(self.buffers, self.counts, out=self._arrays[i])
        if not self.cuda:
            return dict(self._slots[i])
        batch = {k: t.to(self.device, non_blocking=True) for k, t in self._slots[i].items()}
        assert event is not None
        event.record()
        return batch


# ----------------------------------------------------------------------------- components
@dataclass
class Components:
    """What a run trains on: the env, the real data and the dynamics model."""

    env_spec: Any
    real_buffer: Any
    model: Any
    dataset_name: str
    dataset_source: str
    dataset_checksum: str | None = None
    model_info: dict[str, Any] | None = None
    """Identity of the dynamics model (from its meta.json): weights sha256, its dataset, elites."""
    contact_forces_missing: bool = False
    """The dataset's contact-force columns are all zero (ant; `eor.data.contact_forces_missing`):
    the run's envs then zero them too (`Trainer.zero_contact_forces`)."""


def build_components(config: TrainAgentConfig, device: torch.device) -> Components:
    """Load and cross-check the env, the dynamics model and the dataset (before any training)."""
    import eor.data
    import eor.dynamics
    from eor.envs import get_env

    try:
        spec = get_env(config.env_name)
    except (ValueError, TypeError) as exc:
        raise TrainingSetupError(f"env_name: {exc}") from None
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
    source = config.dataset or config.env_name
    try:
        ds = eor.data.load_dataset(source, env=spec)
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
        model_info=model_identity(model_dir, model),
        contact_forces_missing=ds.contact_forces_missing,
    )


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


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """One RAVL run. `Trainer(config).train()` or `Trainer.resume(run_dir).train()`.

    components: inject the env/data/model (tests); default: `build_components(config, device)`.
    """

    def __init__(
        self,
        config: TrainAgentConfig,
        *,
        components: Components | None = None,
        _checkpoint: dict[str, Any] | None = None,
    ) -> None:
        config = config.replace()  # a private copy: run_dir and resume overrides are set on it
        config.validate(require_model_dir=components is None)
        # Absolute paths in config.json, so that --resume works from any directory.
        if config.load_model_dir and Path(config.load_model_dir).is_dir():
            config.load_model_dir = str(Path(config.load_model_dir).resolve())
        if config.dataset and Path(config.dataset).is_file():
            config.dataset = str(Path(config.dataset).resolve())
        self.config = config
        self.device = resolve_device(config.device)
        resuming = _checkpoint is not None
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
        if not resuming and (run_dir / "config.json").exists():
            raise TrainingSetupError(
                f"run_dir: {run_dir} already holds a run; continue it with --resume {run_dir} "
                "or choose another --run_dir"
            )
        self.run_dir = run_dir
        self.config.run_dir = str(run_dir)
        self._prev_determinism: tuple[bool, int] | None = None
        if config.wandb:
            import_wandb()  # fail early, with the install hint

        # Everything is loaded and checked before the run directory is touched.
        self.components = components or build_components(config, self.device)
        spec = self.components.env_spec
        self.env_spec = spec
        # Ant: zero the envs' contact forces when the data has none; a resumed run keeps the
        # decision it recorded (config.json, and every checkpoint).
        self.zero_contact_forces = decide_zero_contact_forces(
            spec,
            detected=self.components.contact_forces_missing,
            recorded=_recorded_zero_contact_forces(_checkpoint, run_dir) if resuming else None,
            dataset=self.components.dataset_name,
        )
        self.obs_dim, self.act_dim = int(spec.obs_dim), int(spec.act_dim)
        check_model_dims(self.components.model, spec)
        self.real_buffer = self.components.real_buffer
        check_sizes(config, len(self.real_buffer))

        _seed_everything(config.seed)
        self.learner = build_learner(config, self.obs_dim, self.act_dim, self.device)
        self.model_buffer = eor.ReplayBuffer(
            config.model_buffer_capacity, self.obs_dim, self.act_dim, seed=config.seed + 1
        )
        # The model's sampling stream, on the model's device (docs/algorithm.md §2 step), seeded per run.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 2)

        # Counters (the run's position), restored on resume.
        self.epochs_done = 0
        self.epoch_updates = 0
        self.rollout_done = False
        self.total_updates = 0
        self.elapsed_before = 0.0
        self.last_eval: dict[str, Any] | None = None
        self.best_eval: dict[str, Any] | None = None
        self.wandb_id: str | None = None
        # The reference's run name (wandb run, --save directory); a resumed run keeps its own.
        self.name_expanded: str = config.make_name_expanded()
        metrics_offset: int | None = None
        if _checkpoint is not None:
            metrics_offset = self._restore(_checkpoint)
        self.sampler = MixedBatchSampler(
            self.real_buffer, self.model_buffer, config.num_real, config.num_model, self.device
        )

        if config.save:  # the reference's --save directory, config.yaml now, weights.pt at the end
            try:
                prepare_agent_save_dir(config, self.name_expanded, resuming=resuming)
            except OSError as exc:
                raise TrainingSetupError(f"save_path: {exc}") from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        write_json(self.run_dir / "config.json", self._config_record())
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", truncate_to=metrics_offset)
        self.wandb: WandbMirror | None = None
        self._eval_envs: list[Any] | None = None
        # On CUDA, losses stay on the device between log steps (no sync per update).
        self.check_every_update = self.device.type != "cuda"
        self._stop_requested = False
        self._status = "created"

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        overrides: dict[str, Any] | None = None,
        components: Components | None = None,
    ) -> Trainer:
        """Continue the run in `run_dir` from checkpoints/latest.pt.

        overrides: run settings to change (e.g. a larger `epochs`); only RESUME_OVERRIDABLE
        fields may differ from the saved config.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise TrainingSetupError(f"resume: {run_dir} is not a directory")
        ckpt_path = run_dir / "checkpoints" / "latest.pt"
        if not ckpt_path.is_file():
            raise TrainingSetupError(
                f"resume: {run_dir} has no checkpoint ({ckpt_path} is missing); "
                "a run writes one at the end of each epoch and on Ctrl-C"
            )
        ckpt = load_checkpoint(ckpt_path)
        config = TrainAgentConfig.from_dict(ckpt["config"])
        for key, value in (overrides or {}).items():
            if not hasattr(config, key):
                raise TrainingSetupError(f"resume: unknown setting {key!r}")
            if key not in RESUME_OVERRIDABLE and getattr(config, key) != value:
                raise TrainingSetupError(
                    f"resume: {key} cannot change when resuming (saved {getattr(config, key)!r}, "
                    f"given {value!r}); allowed: {', '.join(sorted(RESUME_OVERRIDABLE))}"
                )
            setattr(config, key, value)
        config.run_dir = str(run_dir)
        if config.epochs < ckpt["counters"]["epochs_done"]:
            raise TrainingSetupError(
                f"epochs: the run already finished {ckpt['counters']['epochs_done']} epochs; "
                f"cannot resume with --epochs {config.epochs}"
            )
        return cls(config, components=components, _checkpoint=ckpt)

    def _config_record(self) -> dict[str, Any]:
        spec = self.env_spec
        return {
            **self.config.to_dict(),
            "eor_version": eor.__version__,
            "resolved_device": str(self.device),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "env_id": spec.gym_id,
            "dataset_name": self.components.dataset_name,
            "dataset_source": self.components.dataset_source,
            "dataset_checksum": self.components.dataset_checksum,
            "num_real": self.config.num_real,
            "num_model": self.config.num_model,
            "model_buffer_capacity": self.config.model_buffer_capacity,
            "model": self.components.model_info,
            "zero_contact_forces": self.zero_contact_forces,
        }

    def _apply_determinism(self) -> None:
        if not self.config.deterministic:
            return
        self._prev_determinism = (
            torch.are_deterministic_algorithms_enabled(),
            torch.get_num_threads(),
        )
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        # A fixed thread count fixes the reduction order of CPU kernels.
        torch.set_num_threads(1)

    def _restore_determinism(self) -> None:
        if self._prev_determinism is not None:
            enabled, threads = self._prev_determinism
            torch.use_deterministic_algorithms(enabled)
            torch.set_num_threads(threads)
            self._prev_determinism = None

    # ------------------------------------------------------------------ checkpoints
    def _counters(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "epoch_updates": self.epoch_updates,
            "rollout_done": self.rollout_done,
            "total_updates": self.total_updates,
            "elapsed_s": self.elapsed(),
            "metrics_offset": self.metrics.offset,
            "last_eval": self.last_eval,
            "best_eval": self.best_eval,
            "wandb_id": self.wandb.run_id if self.wandb else self.wandb_id,
            "name_expanded": self.name_expanded,
        }

    def state(self, *, full: bool = True) -> dict[str, Any]:
        """The checkpoint dict (see eor.agent.checkpoint); full=False: learner and counters."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "eor_version": eor.__version__,
            "config": self.config.to_dict(),
            "dims": {"obs_dim": self.obs_dim, "act_dim": self.act_dim},
            "env_id": self.env_spec.gym_id,
            "counters": self._counters(),
            "model_info": self.components.model_info,
            "zero_contact_forces": self.zero_contact_forces,
            "learner": self.learner.state_dict(),
        }
        if full:
            state["rng"] = capture_rng(self.generator)
            state["real_buffer_rng"] = self.real_buffer.get_state()
            state["model_buffer"] = buffer_to_bytes(self.model_buffer)
            state["model_buffer_rng"] = self.model_buffer.get_state()
        return state

    def save_checkpoint(self, *, force: bool = True) -> Path | None:
        """Write checkpoints/latest.pt atomically (and epoch_XXXX.pt when due).

        force=False (the end of an epoch): latest.pt only every `checkpoint_every` epochs, on
        `save_every` epochs and after the last epoch.
        """
        cfg = self.config
        path = self.run_dir / "checkpoints" / "latest.pt"
        at_epoch_end = self.epoch_updates == 0 and not self.rollout_done
        snapshot_due = (
            cfg.save_every > 0
            and at_epoch_end
            and self.epochs_done > 0
            and self.epochs_done % cfg.save_every == 0
        )
        written: Path | None = None
        if (
            force
            or snapshot_due
            or self.epochs_done % cfg.checkpoint_every == 0
            or self.epochs_done >= cfg.epochs
        ):
            atomic_torch_save(self.state(full=True), path)
            self._saved_epochs = self.epochs_done
            written = path
        if snapshot_due:
            snap = self.run_dir / "checkpoints" / f"epoch_{self.epochs_done:04d}.pt"
            atomic_torch_save(self.state(full=False), snap)
        return written

    def _restore(self, ckpt: dict[str, Any]) -> int:
        dims = ckpt["dims"]
        if (dims["obs_dim"], dims["act_dim"]) != (self.obs_dim, self.act_dim):
            raise TrainingSetupError(
                f"resume: the checkpoint has obs/act dims {dims}, the env has "
                f"{self.obs_dim}/{self.act_dim}"
            )
        saved = (ckpt.get("model_info") or {}).get("weights_sha256")
        now = (self.components.model_info or {}).get("weights_sha256")
        if saved and now and saved != now:
            raise TrainingSetupError(
                f"load_model_dir: the dynamics model in {self.config.load_model_dir} changed "
                f"since this run started (weights sha256 {now[:12]}..., the run used "
                f"{saved[:12]}...); resuming would mix two models"
            )
        self.learner.load_state_dict(ckpt["learner"])
        self.model_buffer = buffer_from_bytes(ckpt["model_buffer"])
        self.model_buffer.set_state(ckpt["model_buffer_rng"])
        self.real_buffer.set_state(ckpt["real_buffer_rng"])
        restore_rng(ckpt["rng"], self.generator)
        c = ckpt["counters"]
        self.epochs_done = int(c["epochs_done"])
        self.epoch_updates = int(c["epoch_updates"])
        self.rollout_done = bool(c["rollout_done"])
        self.total_updates = int(c["total_updates"])
        self.elapsed_before = float(c["elapsed_s"])
        self.last_eval = c["last_eval"]
        self.best_eval = c["best_eval"]
        self.wandb_id = c.get("wandb_id")
        self.name_expanded = c.get("name_expanded") or self.name_expanded
        return int(c["metrics_offset"])

    # ------------------------------------------------------------------ the loop
    def elapsed(self) -> float:
        start = getattr(self, "_start", None)
        return self.elapsed_before + (time.perf_counter() - start if start is not None else 0.0)

    def _record(self, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        record = {
            "kind": kind,
            "epoch": self.epochs_done + 1,  # the epoch in progress (eval runs before it ends)
            "updates": self.total_updates,
            "time": self.elapsed(),
            **values,
        }
        self.metrics.write(record)
        if self.wandb is not None:
            self.wandb.log(record)
        return record

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        print(
            "\nInterrupted: saving a checkpoint after the current update "
            "(press Ctrl-C again to stop at once).",
            file=sys.stderr,
        )

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and return at the next update boundary (like Ctrl-C)."""
        self._stop_requested = True

    def _nonfinite_error(self, exc: Exception) -> NonFiniteLossError:
        """The learner's NonFiniteLossError, with where the run stands and what is kept."""
        ckpt = self.run_dir / "checkpoints" / "latest.pt"
        kept = (
            f"the last good checkpoint {ckpt} (after epoch {self._saved_epochs}) is kept"
            if ckpt.exists()
            else "no checkpoint had been written yet"
        )
        return NonFiniteLossError(
            f"training stopped in epoch {self.epochs_done + 1}: {exc}. Nothing was saved after "
            f"the error; {kept}. Try a lower learning rate or another seed, and look at the "
            "rollout records' 'nonfinite' counts in metrics.jsonl."
        )

    def train(self) -> dict[str, Any]:
        """Run (or continue) the training loop; returns the summary (also in summary.json).

        Raises NonFiniteLossError on a NaN/inf loss. Returns normally after Ctrl-C, with
        summary["status"] == "interrupted" and a checkpoint to resume from.
        """
        cfg = self.config
        self._start = time.perf_counter()
        self._saved_epochs = self.epochs_done
        self._apply_determinism()
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        if cfg.wandb:
            record = {**self._config_record(), "name_expanded": self.name_expanded}
            self.wandb = WandbMirror(record, self.run_dir, self.wandb_id)
        pbar = self._progress_bar()
        self._status = "running"
        summary: dict[str, Any] = {}
        try:
            self._loop(pbar)
            self._status = "completed" if not self._stop_requested else "interrupted"
            if self._status == "completed" and cfg.save:
                save_reference_agent(self.learner, cfg, self.name_expanded)
        except KeyboardInterrupt:
            self._status = "interrupted"
            try:
                self.learner.raise_if_nonfinite()  # never save a state with a NaN loss behind it
            except LearnerNonFiniteLossError as exc:
                self._status = "failed_nonfinite"
                self._write_summary()
                raise self._nonfinite_error(exc) from exc
            self.save_checkpoint()
        except LearnerNonFiniteLossError as exc:
            self._status = "failed_nonfinite"
            self._write_summary()
            raise self._nonfinite_error(exc) from exc
        except Exception:
            self._status = "failed"  # summary.json says so; the last checkpoint is untouched
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            pbar.close()
            self._restore_determinism()
            for env in self._eval_envs or []:
                env.close()
            self._eval_envs = None
            if self._status != "failed_nonfinite":
                summary = self._write_summary()
            self.metrics.close()
            if self.wandb is not None:
                self.wandb.summary(summary)
                self.wandb.finish()
        if self._status == "interrupted":
            print(
                f"Stopped after {self.total_updates} updates; checkpoint saved. "
                f"Continue with: eor train-agent --resume {self.run_dir}",
                file=sys.stderr,
            )
        return summary

    def _loop(self, pbar: Any) -> None:
        cfg = self.config
        actor = self.learner.actor
        update_time = 0.0
        updates_since_log = 0
        while self.epochs_done < cfg.epochs:
            if not self.rollout_done:
                stats = rollout_phase(
                    actor,
                    self.components.model,
                    self.real_buffer,
                    self.model_buffer,
                    num_rollouts=cfg.rollouts_per_epoch,
                    steps_k=cfg.steps_k,
                    generator=self.generator,
                    device=self.device,
                )
                self.rollout_done = True
                rec = stats.to_dict()
                rec["model_buffer_size"] = len(self.model_buffer)
                self._record("rollout", rec)
                if len(self.model_buffer) < cfg.num_model:
                    raise TrainingSetupError(
                        f"the model buffer holds {len(self.model_buffer)} transitions, fewer than "
                        f"the {cfg.num_model} model samples per batch (rollouts terminate or "
                        "diverge too early); raise rollouts_per_epoch or dataset_ratio"
                    )
            while self.epoch_updates < cfg.updates_per_epoch:
                if self._stop_requested:
                    self.learner.raise_if_nonfinite()
                    self.save_checkpoint()
                    return
                t0 = time.perf_counter()
                batch = self.sampler.sample()
                do_log = (self.total_updates + 1) % cfg.log_every == 0
                # On CUDA the losses stay on the device between log steps (no sync per update);
                # a NaN is still caught: at the next log step or epoch end, before any save.
                out = self.learner.update(batch, log=do_log, check_finite=self.check_every_update)
                self.total_updates += 1
                self.epoch_updates += 1
                updates_since_log += 1
                update_time += time.perf_counter() - t0
                if do_log:
                    values = {k: out[k] for k in TRAIN_KEYS if k in out}
                    values = {k: float(v) for k, v in values.items()}
                    values["updates_per_s"] = updates_since_log / max(update_time, 1e-9)
                    self._record("train", values)
                    self._postfix(pbar, values)
                    update_time, updates_since_log = 0.0, 0
            self.learner.raise_if_nonfinite()
            if evaluates_after(self.epochs_done + 1, cfg.eval_every, cfg.epochs):
                self._evaluate()
            self.epochs_done += 1
            self.epoch_updates = 0
            self.rollout_done = False
            self.save_checkpoint(force=self._stop_requested)
            pbar.update(1)
            self._postfix(pbar, {})
            if self._stop_requested:
                return

    def _evaluate(self) -> None:
        cfg = self.config
        if self._eval_envs is None:
            self._eval_envs = make_eval_envs(
                self.env_spec, cfg.eval_episodes, zero_contact_forces=self.zero_contact_forces
            )
        result = evaluate(
            self.learner.actor,
            self.env_spec,
            episodes=cfg.eval_episodes,
            seed=eval_seed(cfg.seed),
            device=self.device,
            max_steps=cfg.eval_max_steps,
            envs=self._eval_envs,
        )
        rec = self._record("eval", {k: v for k, v in result.items() if k != "returns"})
        entry = {k: rec[k] for k in ("epoch", "updates", "return_mean", "score_mean")}
        self.last_eval = entry
        if self.best_eval is None or entry["score_mean"] > self.best_eval["score_mean"]:
            self.best_eval = entry

    # ------------------------------------------------------------------ output
    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        disable = self.config.quiet or not sys.stderr.isatty()
        return tqdm(
            total=self.config.epochs,
            initial=self.epochs_done,
            desc=f"RAVL {self.config.env_name}",
            unit="epoch",
            disable=disable,
            dynamic_ncols=True,
        )

    def _postfix(self, pbar: Any, values: dict[str, Any]) -> None:
        if pbar.disable:
            return
        post = dict(getattr(self, "_last_postfix", {}))
        post["epoch"] = f"{self.epochs_done + 1}/{self.config.epochs}"
        if "updates_per_s" in values:
            post["upd/s"] = f"{values['updates_per_s']:.1f}"
        if "critic_loss" in values:
            post["critic"] = f"{values['critic_loss']:.3g}"
        if self.last_eval is not None:
            post["score"] = f"{self.last_eval['score_mean']:.1f}"
        self._last_postfix = post
        pbar.set_postfix(post, refresh=True)

    def summary(self) -> dict[str, Any]:
        spec = self.env_spec
        last, best = self.last_eval or {}, self.best_eval or {}
        return {
            "status": self._status,
            "env_name": self.config.env_name,
            "dataset": self.components.dataset_name,
            "seed": self.config.seed,
            "num_critics": self.config.num_critics,
            "eta": self.config.eta,
            "steps_k": self.config.steps_k,
            "dataset_ratio": self.config.dataset_ratio,
            "last_score": last.get("score_mean"),
            "best_score": best.get("score_mean"),
            "last_return": last.get("return_mean"),
            "best_return": best.get("return_mean"),
            "last_eval_epoch": last.get("epoch"),
            "best_eval_epoch": best.get("epoch"),
            "epochs_completed": self.epochs_done,
            "total_updates": self.total_updates,
            "wall_time_s": self.elapsed(),
            "device": str(self.device),
            "versions": versions(),
            "env_id": spec.gym_id,
            "env_version": spec.gym_id.rsplit("-", 1)[-1],
            "zero_contact_forces": self.zero_contact_forces,
        }

    def _write_summary(self) -> dict[str, Any]:
        summary = self.summary()
        write_json(self.run_dir / "summary.json", summary)
        return summary


def _recorded_zero_contact_forces(ckpt: dict[str, Any] | None, run_dir: Path) -> bool | None:
    """The zero_contact_forces decision a run recorded: in its checkpoint, else in its
    config.json; None for a run from before it was recorded."""
    value = (ckpt or {}).get("zero_contact_forces")
    if value is None:
        try:
            value = json.loads((run_dir / "config.json").read_text()).get("zero_contact_forces")
        except (OSError, ValueError, AttributeError):
            value = None
    return None if value is None else bool(value)


def evaluates_after(epoch: int, eval_every: int, epochs: int) -> bool:
    """Whether the run evaluates after (1-based) `epoch`: as the reference (`epoch % eval_every
    == 0` on its 0-based epoch), after the 1st, (eval_every + 1)-th, (2·eval_every + 1)-th, ...
    epoch, and always after the last; eval_every 0 evaluates only after the last."""
    return bool(eval_every and (epoch - 1) % eval_every == 0) or epoch == epochs


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party users of the global stream
    torch.manual_seed(seed)


def train_agent(
    config: TrainAgentConfig, *, components: Components | None = None
) -> dict[str, Any]:
    """Train a RAVL agent with `config`; returns the summary. See `Trainer`."""
    return Trainer(config, components=components).train()
