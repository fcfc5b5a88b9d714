"""Online SAC (docs/online.md): RAVL's learner with eta = 0 and two critics, trained on the
transitions it collects in the gymnasium MuJoCo env.

Each env step t = 0, 1, ..., total_steps - 1:

    a_t = uniform over the action box          if t < start_steps
          a sample of pi(.|s_t)                 otherwise
    (s_t+1, r_t, terminated, truncated) = env.step(a_t)
    store (s_t, a_t, r_t, s_t+1, done = terminated) with env step t, its episode and truncated
    the episode ended (either flag): record it, reset the env
    after update_after steps: one learner update on a uniform batch of the buffer
    every eval_every steps: deterministic evaluation (eor.agent.evaluate), policy snapshot
    every checkpoint_every steps: checkpoints/latest.pt

Run directory (the same files as `eor train-agent`, so `eor plot` / `eor report` read it):

    RUN/config.json      every TrainOnlineConfig field, eor_version, dims, env id
    RUN/metrics.jsonl    kind train / eval / episode, each with env_steps, updates and time
    RUN/policies.json    the policy snapshots: env_steps, updates, file, evaluated returns
    RUN/checkpoints/     latest.pt (the whole state, replay buffer included),
                         policy_<env step>.pt (the actor; `eor.agent.ravl.actor_from_state`)
    RUN/summary.json     status, last/best return and score, steps, updates, wall time

Stopping: the first Ctrl-C asks the loop to stop after the current env step, where it writes a
checkpoint of the exact state and returns; `--resume` continues from there. A KeyboardInterrupt
raised anywhere else (a second Ctrl-C) stops at once without saving (the state may be half
updated): the last periodic checkpoint is kept. Any other error also keeps the last checkpoint.

Resume: the checkpoint holds the learner (networks, optimisers, its generator), the replay
buffer (contents, sampler state, step records), the env (MuJoCo's full integration state,
its numpy generator, the time-limit counter, the current observation and episode), the
generators of the random and the policy's actions, and the counters. On the CPU with the same
thread count a resumed run is bit-identical to an uninterrupted one (tests/test_online.py);
see docs/online.md for what is not.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import eor
from eor.agent.checkpoint import CHECKPOINT_FORMAT, capture_rng, load_checkpoint, restore_rng
from eor.agent.evaluate import eval_seed, evaluate, make_eval_envs
from eor.agent.ravl import LOGGED_KEYS, RAVL, NonFiniteLossError
from eor.agent.runlog import RunLog, jsonable, versions
from eor.agent.setup import (
    TrainingSetupError,
    apply_resume_overrides,
    check_checkpoint_dims,
    check_new_run_dir,
    checkpoint_to_resume,
    resolve_device,
    run_threads,
    seed_everything,
)
from eor.fileio import atomic_torch_save, atomic_write_json
from eor.online.config import RESUME_OVERRIDABLE, TrainOnlineConfig
from eor.online.replay import OnlineReplay
from eor.runloop import RunLoop

__all__ = ["NonFiniteLossError", "OnlineTrainer", "TrainingSetupError", "train_online"]

RUN_KIND = "online"
"""The `kind` of an online run's checkpoints (train-agent's have none)."""


def default_run_dir(config: TrainOnlineConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"online-{config.env_name}-s{config.seed}-{stamp}"


def _mujoco_state_spec() -> Any:
    import mujoco

    return mujoco.mjtState.mjSTATE_INTEGRATION


class OnlineTrainer(RunLoop):
    """One online SAC run: `OnlineTrainer(config).train()` or `OnlineTrainer.resume(dir).train()`."""

    STOP_AT = "the current env step"
    STOP_AGAIN = "press Ctrl-C again to stop at once, without saving"

    def __init__(self, config: TrainOnlineConfig, *, _checkpoint: dict[str, Any] | None = None):
        from eor.envs import get_env, make_env

        config = config.replace()
        config.validate()
        try:
            spec = get_env(config.env_name)
        except (ValueError, TypeError) as exc:
            raise TrainingSetupError(f"env_name: {exc}") from None
        self.config = config
        self.env_spec = spec
        self.device = resolve_device(config.device)
        resuming = _checkpoint is not None
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
        check_new_run_dir(run_dir, resuming=resuming)
        self.run_dir = run_dir
        config.run_dir = str(run_dir)
        self.obs_dim, self.act_dim = int(spec.obs_dim), int(spec.act_dim)

        seed = config.seed
        seed_everything(seed)
        self.learner = RAVL(
            config.learner_config(self.obs_dim, self.act_dim), device=self.device, seed=seed
        )
        self.replay = OnlineReplay(config.buffer_size, self.obs_dim, self.act_dim, seed=seed + 1)
        # The policy's action samples (on the learner's device) and the uniform random actions.
        self.act_generator = torch.Generator(device=self.device)
        self.act_generator.manual_seed(seed + 2)
        self.action_rng = np.random.default_rng(seed + 3)
        self.env = make_env(spec, max_episode_steps=config.max_episode_steps)
        self.env.action_space.seed(seed + 4)  # never drawn from; seeded for third-party use
        self.act_low = np.asarray(self.env.action_space.low, dtype=np.float32)
        self.act_high = np.asarray(self.env.action_space.high, dtype=np.float32)
        obs, _ = self.env.reset(seed=seed)
        self.obs = np.asarray(obs, dtype=np.float32)

        # Counters (the run's position), restored on resume.
        self.env_steps = 0
        self.episodes = 0
        self.ep_return = 0.0
        self.ep_length = 0
        self.elapsed_before = 0.0
        self.last_eval: dict[str, Any] | None = None
        self.best_eval: dict[str, Any] | None = None
        self.policies: list[dict[str, Any]] = []
        metrics_offset: int | None = None
        if _checkpoint is not None:
            metrics_offset = self._restore(_checkpoint)

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        atomic_write_json(
            self.run_dir / "config.json", jsonable(self._config_record()), sort_keys=True
        )
        self.log = RunLog(self.run_dir, truncate_to=metrics_offset)
        self._eval_envs: list[Any] | None = None
        self._stop_requested = False
        self._status = "created"
        self._start: float | None = None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def resume(
        cls, run_dir: str | os.PathLike[str], *, overrides: dict[str, Any] | None = None
    ) -> OnlineTrainer:
        """Continue the run in `run_dir` from checkpoints/latest.pt; `overrides` may change the
        `RESUME_OVERRIDABLE` settings (e.g. a larger total_steps) only."""
        run_dir = Path(run_dir)
        path = checkpoint_to_resume(
            run_dir, "every checkpoint_every env steps, at the end and on Ctrl-C"
        )
        try:
            ckpt = load_checkpoint(path)
        except ValueError as exc:
            raise TrainingSetupError(f"resume: {exc}") from None
        if ckpt.get("kind") != RUN_KIND:
            raise TrainingSetupError(
                f"resume: {path} is not an `eor train-online` checkpoint (an `eor train-agent` "
                "run? continue it with `eor train-agent --resume`)"
            )
        config = TrainOnlineConfig.from_dict(ckpt["config"])
        apply_resume_overrides(config, overrides or {}, RESUME_OVERRIDABLE)
        config.run_dir = str(run_dir)
        done = int(ckpt["counters"]["env_steps"])
        if config.total_steps < done:
            raise TrainingSetupError(
                f"total_steps: the run already made {done} env steps; cannot resume with "
                f"--total_steps {config.total_steps}"
            )
        return cls(config, _checkpoint=ckpt)

    def _config_record(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "eor_version": eor.__version__,
            "algorithm": "sac-online",
            "resolved_device": str(self.device),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "env_id": self.env_spec.gym_id,
        }

    # ------------------------------------------------------------------ env state
    def _env_state(self) -> dict[str, Any]:
        import mujoco

        u = self.env.unwrapped
        spec = _mujoco_state_spec()
        state = np.empty(mujoco.mj_stateSize(u.model, spec), dtype=np.float64)
        mujoco.mj_getState(u.model, u.data, state, spec)
        return {
            "mujoco": state,
            "np_random": u.np_random.bit_generator.state,
            "elapsed_steps": int(self.env.get_wrapper_attr("_elapsed_steps")),
            "obs": self.obs.copy(),
        }

    def _set_env_state(self, state: dict[str, Any]) -> None:
        import mujoco

        u = self.env.unwrapped
        mujoco.mj_setState(u.model, u.data, np.asarray(state["mujoco"]), _mujoco_state_spec())
        u.np_random.bit_generator.state = state["np_random"]
        self.env.set_wrapper_attr("_elapsed_steps", int(state["elapsed_steps"]))
        self.obs = np.asarray(state["obs"], dtype=np.float32).copy()

    # ------------------------------------------------------------------ checkpoints
    def _counters(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "ep_return": self.ep_return,
            "ep_length": self.ep_length,
            "updates": self.learner.num_updates,
            "elapsed_s": self.elapsed(),
            "metrics_offset": self.log.offset,
            "last_eval": self.last_eval,
            "best_eval": self.best_eval,
            "policies": self.policies,
        }

    def state(self) -> dict[str, Any]:
        """The checkpoint dict (module docstring)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": RUN_KIND,
            "eor_version": eor.__version__,
            "config": self.config.to_dict(),
            "dims": {"obs_dim": self.obs_dim, "act_dim": self.act_dim},
            "env_id": self.env_spec.gym_id,
            "counters": self._counters(),
            "learner": self.learner.state_dict(),
            "rng": capture_rng(self.act_generator),
            "action_rng": self.action_rng.bit_generator.state,
            "env": self._env_state(),
            "replay": self.replay.state(),
        }

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "checkpoints" / "latest.pt"
        atomic_torch_save(self.state(), path)
        self._saved_steps = self.env_steps
        return path

    def _restore(self, ckpt: dict[str, Any]) -> int:
        check_checkpoint_dims(ckpt["dims"], self.obs_dim, self.act_dim)
        self.learner.load_state_dict(ckpt["learner"])
        self.replay = OnlineReplay.from_state(ckpt["replay"])
        restore_rng(ckpt["rng"], self.act_generator)
        self.action_rng.bit_generator.state = ckpt["action_rng"]
        self._set_env_state(ckpt["env"])
        c = ckpt["counters"]
        self.env_steps = int(c["env_steps"])
        self.episodes = int(c["episodes"])
        self.ep_return = float(c["ep_return"])
        self.ep_length = int(c["ep_length"])
        self.elapsed_before = float(c["elapsed_s"])
        self.last_eval = c["last_eval"]
        self.best_eval = c["best_eval"]
        self.policies = list(c["policies"])
        return int(c["metrics_offset"])

    # ------------------------------------------------------------------ the loop
    def _position(self) -> dict[str, Any]:
        return {"env_steps": self.env_steps, "updates": self.learner.num_updates}

    def train(self) -> dict[str, Any]:
        """Run (or continue) the loop; returns the summary (also in summary.json). Returns
        normally after Ctrl-C or a KeyboardInterrupt (status "interrupted")."""
        with run_threads(self.config.threads, self.config.deterministic):
            summary = self._train()
        if self._status == "interrupted":
            print(
                f"Stopped at env step {self.env_steps}; continue with: "
                f"eor train-online --resume {self.run_dir} (from env step {self._saved_steps})",
                file=sys.stderr,
            )
        return summary

    def _train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        self._start = time.perf_counter()
        self._saved_steps = self.env_steps
        previous_handler = self._install_sigint()
        pbar = tqdm(
            total=cfg.total_steps,
            initial=self.env_steps,
            desc=f"SAC {self.env_spec.gym_id}",
            unit="step",
            disable=cfg.quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        self._status = "running"
        summary: dict[str, Any] = {}
        try:
            self._loop(pbar)
            self._status = "interrupted" if self._stop_requested else "completed"
        except KeyboardInterrupt:
            self._status = "interrupted"  # not saved: the state may be half updated
        except NonFiniteLossError as exc:
            self._status = "failed_nonfinite"
            raise NonFiniteLossError(
                f"training stopped at env step {self.env_steps}: {exc}. The last checkpoint "
                f"(env step {self._saved_steps}) is kept."
            ) from exc
        except Exception:
            self._status = "failed"
            raise
        finally:
            self._restore_sigint(previous_handler)
            pbar.close()
            for env in self._eval_envs or []:
                env.close()
            self._eval_envs = None
            summary = self.summary()
            self.log.write_summary(summary)
            self.log.close(summary)
        return summary

    def _loop(self, pbar: Any) -> None:
        cfg = self.config
        learner, replay, env = self.learner, self.replay, self.env
        window_start, window_steps = time.perf_counter(), 0
        while self.env_steps < cfg.total_steps:
            if self._stop_requested:
                self.save_checkpoint()
                return
            t = self.env_steps
            if t < cfg.start_steps:
                action = self.action_rng.uniform(self.act_low, self.act_high).astype(np.float32)
            else:
                obs_t = torch.from_numpy(self.obs).to(self.device)
                action = (
                    learner.actor.act(obs_t, deterministic=False, generator=self.act_generator)
                    .cpu()
                    .numpy()
                )
            next_obs, reward, terminated, truncated, _ = env.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32)
            replay.add(
                self.obs,
                action,
                float(reward),
                next_obs,
                bool(terminated),
                bool(truncated),
                env_step=t,
                episode=self.episodes,
            )
            self.env_steps += 1
            self.ep_return += float(reward)
            self.ep_length += 1
            window_steps += 1
            if terminated or truncated:
                self._record(
                    "episode",
                    {
                        "episode": self.episodes,
                        "return": self.ep_return,
                        "length": self.ep_length,
                        "terminated": bool(terminated),
                    },
                )
                self.episodes += 1
                self.ep_return, self.ep_length = 0.0, 0
                obs, _ = env.reset()
                self.obs = np.asarray(obs, dtype=np.float32)
            else:
                self.obs = next_obs
            if self.env_steps >= cfg.update_after:
                do_log = (learner.num_updates + 1) % cfg.log_every == 0
                out = learner.update(replay.sample(cfg.batch_size), log=do_log)
                if do_log:
                    now = time.perf_counter()
                    values = {k: float(out[k]) for k in LOGGED_KEYS if k in out}
                    values["steps_per_s"] = window_steps / max(now - window_start, 1e-9)
                    values["buffer_size"] = len(replay)
                    self._record("train", values)
                    pbar.set_postfix(
                        {
                            "steps/s": f"{values['steps_per_s']:.0f}",
                            "return": "n/a"
                            if self.last_eval is None
                            else f"{self.last_eval['return_mean']:.0f}",
                        },
                        refresh=False,
                    )
                    window_start, window_steps = now, 0
            if self.env_steps % cfg.eval_every == 0 or self.env_steps == cfg.total_steps:
                t_eval = time.perf_counter()
                self._evaluate()
                window_start += time.perf_counter() - t_eval  # steps/s leaves evaluation out
            if self.env_steps % cfg.checkpoint_every == 0 or self.env_steps == cfg.total_steps:
                t_ckpt = time.perf_counter()
                self.save_checkpoint()
                window_start += time.perf_counter() - t_ckpt
            pbar.update(1)

    def _evaluate(self) -> None:
        cfg = self.config
        if self._eval_envs is None:
            self._eval_envs = make_eval_envs(self.env_spec, cfg.eval_episodes)
        result = evaluate(
            self.learner.actor,
            self.env_spec,
            episodes=cfg.eval_episodes,
            seed=eval_seed(cfg.seed),
            device=self.device,
            max_steps=cfg.eval_max_steps,
            envs=self._eval_envs,
        )
        values = {k: v for k, v in result.items() if k != "returns"}
        if cfg.save_policies:
            name = f"policy_{self.env_steps:08d}.pt"
            values["policy"] = f"checkpoints/{name}"
        rec = self._record("eval", values)
        entry = {
            k: rec[k]
            for k in (
                "env_steps",
                "updates",
                "return_mean",
                "return_std",
                "score_mean",
                "score_std",
            )
        }
        self.last_eval = entry
        if self.best_eval is None or entry["return_mean"] > self.best_eval["return_mean"]:
            self.best_eval = entry
        if cfg.save_policies:
            snapshot = {
                "format": CHECKPOINT_FORMAT,
                "kind": "online-policy",
                "config": self.learner.config.to_dict(),
                "actor": {
                    k: v.detach().cpu().clone() for k, v in self.learner.actor.state_dict().items()
                },
                "env_id": self.env_spec.gym_id,
                "eval": {**entry, "returns": result["returns"]},
            }
            atomic_torch_save(snapshot, self.run_dir / "checkpoints" / name)
            self.policies = [p for p in self.policies if p["env_steps"] < self.env_steps]
            self.policies.append({**entry, "path": values["policy"]})
            atomic_write_json(self.run_dir / "policies.json", jsonable(self.policies), indent=1)

    # ------------------------------------------------------------------ output
    def summary(self) -> dict[str, Any]:
        last, best = self.last_eval or {}, self.best_eval or {}
        spec = self.env_spec
        return {
            "status": self._status,
            "algorithm": "sac-online",
            "env_name": self.config.env_name,
            "env_id": spec.gym_id,
            "env_version": spec.gym_version,
            "seed": self.config.seed,
            "num_critics": self.config.num_critics,
            "eta": self.config.eta,
            "last_score": last.get("score_mean"),
            "best_score": best.get("score_mean"),
            "last_return": last.get("return_mean"),
            "best_return": best.get("return_mean"),
            "last_eval_env_steps": last.get("env_steps"),
            "best_eval_env_steps": best.get("env_steps"),
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "total_updates": self.learner.num_updates,
            "checkpoint_env_steps": getattr(self, "_saved_steps", None),
            "wall_time_s": self.elapsed(),
            "device": str(self.device),
            "versions": versions(),
        }


def read_policies(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """policies.json of an online run: one entry per policy snapshot (env_steps, updates,
    return_mean/std, score_mean/std, path relative to the run directory), in step order."""
    path = Path(run_dir) / "policies.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: not an `eor train-online` run, or one run with "
            "--save_policies False or stopped before its first evaluation"
        )
    return list(json.loads(path.read_text()))


def train_online(config: TrainOnlineConfig) -> dict[str, Any]:
    """Train online SAC with `config`; returns the summary. See `OnlineTrainer`."""
    return OnlineTrainer(config).train()
