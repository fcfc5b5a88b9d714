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

The loop's helpers live beside it, one job each: `eor.agent.setup` (loading and cross-checking
the env, model and data), `eor.agent.runlog` (metrics.jsonl, wandb, summary.json),
`eor.agent.checkpoint` (the checkpoint files), `eor.mixed_batch` (the batches).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

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
from eor.agent.cuda_graph import GraphedUpdate
from eor.agent.diagnostics import ReachProbe, evaluation_values
from eor.agent.evaluate import decide_zero_contact_forces, eval_seed, evaluate, make_eval_envs
from eor.agent.ravl import LOGGED_KEYS, NonFiniteLossError
from eor.agent.rollout import rollout_phase
from eor.agent.runlog import ProgressBar, RunLog, import_wandb, jsonable, versions
from eor.agent.setup import (
    Components,
    TrainingSetupError,
    build_components,
    build_learner,
    check_checkpoint_dims,
    check_model_dims,
    check_new_run_dir,
    check_sizes,
    checkpoint_to_resume,
    default_run_dir,
    model_identity,
    recorded_zero_contact_forces,
    resolve_device,
    resume_config,
    run_threads,
    seed_everything,
)
from eor.fileio import atomic_write_json
from eor.mixed_batch import MixedBatchSampler
from eor.runloop import RunLoop

__all__ = [
    "Components",
    "NonFiniteLossError",
    "TRAIN_KEYS",
    "Trainer",
    "TrainingSetupError",
    "build_components",
    "evaluates_after",
    "model_identity",
    "train_agent",
]

TRAIN_KEYS: tuple[str, ...] = LOGGED_KEYS
"""docs/algorithm.md §3's logged learner values, in the "train" records (the learner's LOGGED_KEYS)."""


# ----------------------------------------------------------------------------- the trainer
class Trainer(RunLoop):
    """One RAVL run. `Trainer(config).train()` or `Trainer.resume(run_dir).train()`.

    components: inject the env/data/model (tests); default: `build_components(config, device)`.
    """

    STOP_AT = "the current update"

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
        if config.cuda_graph and self.device.type != "cuda":
            raise TrainingSetupError(
                f"cuda_graph: needs CUDA (each RAVL update is replayed as a captured CUDA "
                f"graph), but this run's device is {self.device} (--device {config.device}); "
                "drop --cuda_graph or run on a GPU"
            )
        resuming = _checkpoint is not None
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
        check_new_run_dir(run_dir, resuming=resuming)
        self.run_dir = run_dir
        self.config.run_dir = str(run_dir)
        if config.wandb:
            import_wandb()  # fail early, with the install hint

        # Everything is loaded and checked before the run directory is touched.
        self.components = components or build_components(
            config, self.device, recorded=(_checkpoint or {}).get("dataset")
        )
        spec = self.components.env_spec
        self.env_spec = spec
        # Ant: zero the envs' contact forces when the data has none; a resumed run keeps the
        # decision it recorded (config.json, and every checkpoint).
        self.zero_contact_forces = decide_zero_contact_forces(
            spec,
            detected=self.components.contact_forces_missing,
            recorded=recorded_zero_contact_forces(_checkpoint, run_dir) if resuming else None,
            dataset=self.components.dataset_name,
        )
        self.obs_dim, self.act_dim = int(spec.obs_dim), int(spec.act_dim)
        check_model_dims(self.components.model, spec)
        self.real_buffer = self.components.real_buffer
        check_sizes(config, len(self.real_buffer))

        seed_everything(config.seed)
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
        # --cuda_graph: every non-log update replays one captured CUDA graph over static batch
        # tensors (eor.agent.cuda_graph), made after a resume's load_state_dict.
        self.graphed = GraphedUpdate(self.learner, config.batch_size) if config.cuda_graph else None
        # Edge-of-reach diagnostics (eor.agent.diagnostics): a fixed probe of dataset states,
        # rolled out at every log step with its own generators (training streams untouched).
        self.reach_probe: ReachProbe | None = ReachProbe(
            self.real_buffer, steps_k=config.steps_k, device=self.device
        )

        if config.save:  # the reference's --save directory, config.yaml now, weights.pt at the end
            try:
                prepare_agent_save_dir(config, self.name_expanded, resuming=resuming)
            except OSError as exc:
                raise TrainingSetupError(f"save_path: {exc}") from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        atomic_write_json(
            self.run_dir / "config.json", jsonable(self._config_record()), sort_keys=True
        )
        self.log = RunLog(self.run_dir, truncate_to=metrics_offset)
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

        overrides: run settings to change (e.g. a larger `epochs`); only `RESUME_OVERRIDABLE`
        fields (`eor.agent.setup`) may differ from the saved config.
        """
        run_dir = Path(run_dir)
        ckpt_path = checkpoint_to_resume(run_dir, "at the end of each epoch and on Ctrl-C")
        ckpt = load_checkpoint(ckpt_path)
        epochs_done = int(ckpt["counters"]["epochs_done"])
        config = resume_config(ckpt["config"], overrides or {}, run_dir, epochs_done)
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

    # ------------------------------------------------------------------ checkpoints
    def _counters(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "epoch_updates": self.epoch_updates,
            "rollout_done": self.rollout_done,
            "total_updates": self.total_updates,
            "elapsed_s": self.elapsed(),
            "metrics_offset": self.log.offset,
            "last_eval": self.last_eval,
            "best_eval": self.best_eval,
            "wandb_id": self.log.wandb_id(self.wandb_id),
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
            "dataset": {
                "name": self.components.dataset_name,
                "path": self.components.dataset_path,
                "checksum": self.components.dataset_checksum,
            },
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
        check_checkpoint_dims(ckpt["dims"], self.obs_dim, self.act_dim)
        saved = (ckpt.get("model_info") or {}).get("weights_sha256")
        now = (self.components.model_info or {}).get("weights_sha256")
        if saved and now and saved != now:
            raise TrainingSetupError(
                f"load_model_dir: the dynamics model in {self.config.load_model_dir} changed "
                f"since this run started (weights sha256 {now[:12]}..., the run used "
                f"{saved[:12]}...); resuming would mix two models"
            )
        record = ckpt.get("dataset") or {}  # absent in checkpoints written before this check
        saved, now = record.get("checksum"), self.components.dataset_checksum
        if saved and now and saved != now:
            raise TrainingSetupError(
                f"dataset: {self.config.dataset or self.config.env_name!r} now reads "
                f"{self.components.dataset_source} (sha256 {now[:12]}...), but this run was "
                f"trained on {record.get('path')} (sha256 {saved[:12]}...); resuming would mix "
                "two datasets. Put the original file back where the name finds it (or set "
                "EOR_DATA_DIR to the store that holds it), or start a new run"
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
    def _position(self) -> dict[str, Any]:
        # the epoch in progress (eval runs before it ends)
        return {"epoch": self.epochs_done + 1, "updates": self.total_updates}

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
        with run_threads(self.config.threads, self.config.deterministic):
            summary = self._train()
        if self._status == "interrupted":
            print(
                f"Stopped after {self.total_updates} updates; checkpoint saved. "
                f"Continue with: eor train-agent --resume {self.run_dir}",
                file=sys.stderr,
            )
        return summary

    def _train(self) -> dict[str, Any]:
        """The loop, with its stops: Ctrl-C (checkpoint), NaN (no save), any other error."""
        cfg = self.config
        self._start = time.perf_counter()
        self._saved_epochs = self.epochs_done
        previous_handler = self._install_sigint()
        if cfg.wandb:
            record = {**self._config_record(), "name_expanded": self.name_expanded}
            self.log.start_wandb(record, self.wandb_id)
        pbar = ProgressBar(cfg.epochs, self.epochs_done, f"RAVL {cfg.env_name}", disable=cfg.quiet)
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
            except NonFiniteLossError as exc:
                self._status = "failed_nonfinite"
                self.log.write_summary(self.summary())
                raise self._nonfinite_error(exc) from exc
            self.save_checkpoint()
        except NonFiniteLossError as exc:
            self._status = "failed_nonfinite"
            self.log.write_summary(self.summary())
            raise self._nonfinite_error(exc) from exc
        except Exception:
            self._status = "failed"  # summary.json says so; the last checkpoint is untouched
            raise
        finally:
            self._restore_sigint(previous_handler)
            pbar.close()
            for env in self._eval_envs or []:
                env.close()
            self._eval_envs = None
            if self._status != "failed_nonfinite":
                summary = self.summary()
                self.log.write_summary(summary)
            self.log.close(summary)
        return summary

    def _loop(self, pbar: ProgressBar) -> None:
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
                update = self.learner.update if self.graphed is None else self.graphed.update
                out = update(batch, log=do_log, check_finite=self.check_every_update)
                self.total_updates += 1
                self.epoch_updates += 1
                updates_since_log += 1
                update_time += time.perf_counter() - t0
                if do_log:
                    values = {k: out[k] for k in TRAIN_KEYS if k in out}
                    values = {k: float(v) for k, v in values.items()}
                    values["updates_per_s"] = updates_since_log / max(update_time, 1e-9)
                    if self.reach_probe is not None:  # Q by rollout step, one host read
                        model = self.components.model
                        values.update(self.reach_probe.values(actor, self.learner.critic, model))
                    self._record("train", values)
                    pbar.show(self.epochs_done, values, self.last_eval)
                    update_time, updates_since_log = 0.0, 0
            self.learner.raise_if_nonfinite()
            if evaluates_after(self.epochs_done + 1, cfg.eval_every, cfg.epochs):
                self._evaluate()
            self.epochs_done += 1
            self.epoch_updates = 0
            self.rollout_done = False
            self.save_checkpoint(force=self._stop_requested)
            pbar.epoch_done(self.epochs_done, self.last_eval)
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
            gamma=cfg.gamma,
        )
        # Q at the episodes' start states beside their discounted return (docs/algorithm.md §3.8)
        result.update(
            evaluation_values(
                self.learner.actor,
                self.learner.critic,
                result["start_obs"],
                result["discounted_returns"],
                self.reach_probe,
            )
        )
        per_episode = ("returns", "discounted_returns", "start_obs")
        rec = self._record("eval", {k: v for k, v in result.items() if k not in per_episode})
        entry = {k: rec[k] for k in ("epoch", "updates", "return_mean", "score_mean")}
        self.last_eval = entry
        if self.best_eval is None or entry["score_mean"] > self.best_eval["score_mean"]:
            self.best_eval = entry

    # ------------------------------------------------------------------ output
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


def evaluates_after(epoch: int, eval_every: int, epochs: int) -> bool:
    """Whether the run evaluates after (1-based) `epoch`: as the reference (`epoch % eval_every
    == 0` on its 0-based epoch), after the 1st, (eval_every + 1)-th, (2·eval_every + 1)-th, ...
    epoch, and always after the last; eval_every 0 evaluates only after the last."""
    return bool(eval_every and (epoch - 1) % eval_every == 0) or epoch == epochs


def train_agent(
    config: TrainAgentConfig, *, components: Components | None = None
) -> dict[str, Any]:
    """Train a RAVL agent with `config`; returns the summary. See `Trainer`."""
    return Trainer(config, components=components).train()
