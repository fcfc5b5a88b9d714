"""The true dynamics as a model: `SimulatorDynamics` steps the MuJoCo simulator in place of the
learned ensemble (docs/algorithm.md §3.5, "Rollouts in the true dynamics").

    model = SimulatorDynamics("hopper")
    next_obs, reward, done = model.step(obs, act, generator)   # [R, S], [R, A] -> [R, S], [R], [R]

It satisfies `eor.agent.rollout.DynamicsModel`, so `rollout_phase` and `eor train-agent
--true_dynamics` use it unchanged. Each row's MuJoCo state is set from its observation, the
action is applied for `frame_skip` substeps (as the gymnasium env's `do_simulation`), and the
next observation, reward and termination are the env's own formulas on the post-state:

* state from obs: qpos = [x, obs[:nq-1]], qvel = obs[nq-1:]. The x position is not in the
  observation; it is set to 0 (no task depends on it: the floor is an infinite plane and the
  reward uses only x_after - x_before). time = 0, qacc_warmstart = 0 (the env keeps the last
  step's accelerations there; they only seed the constraint solver, see the tests for the size
  of the difference). Hopper and Walker2d observations clip qvel to [-10, 10], so a state with
  a faster joint is not recoverable from its observation: it is simulated from the clipped one.
* reward = forward_reward_weight * x_after / dt - ctrl_cost_weight * sum(a^2)
  (+ healthy_reward for hopper and walker2d: the v4 envs pay it on every step when
  terminate_when_unhealthy, their default); done = not is_healthy (hopper, walker2d; the env's
  float64 test on the post-state), never for halfcheetah. The weights and ranges are read from
  a gymnasium env instance, so they are the env's (tested equal to `env.step`).
* a row whose step did not complete (non-finite input, or MuJoCo's divergence check reset the
  state: a warning stops `mujoco.rollout` early) gets NaN next_obs and reward, which
  `rollout_phase` counts as non-finite and drops.

Speed: all rows go to `mujoco.rollout` in one call (C, GIL released, `nthread` threads each
with its own MjData); the Python side is a few vectorised numpy operations per step.

Ant is not simulated: its observation's 84 contact-force columns and its reward's contact cost
need `mj_rnePostConstraint` after every step, which `mujoco.rollout` does not compute (it
returns states only), and D4RL's ant data has zeros there anyway (docs/algorithm.md §1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eor.envs.registry import EnvSpec, get_env, make_env

SIMULATED_ENVS: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d")
"""Envs `SimulatorDynamics` supports (`--true_dynamics`)."""


@dataclass(frozen=True)
class _Rules:
    """One env's observation, reward and health rules, with the env instance's parameters."""

    forward_reward_weight: float
    ctrl_cost_weight: float
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    healthy_z_range: tuple[float, float] | None = None
    healthy_angle_range: tuple[float, float] | None = None
    healthy_state_range: tuple[float, float] | None = None  # hopper: qpos[2:], qvel
    qvel_clip: float | None = None  # the obs clips qvel to [-c, c] (hopper, walker2d v4)


# The observation's qvel clip is hard-coded in the v4 envs' _get_obs (not a parameter).
_QVEL_CLIP: dict[str, float | None] = {"halfcheetah": None, "hopper": 10.0, "walker2d": 10.0}


def _pair(value: Any) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


def _rules(name: str, env: Any) -> _Rules:
    """The rules of env `name`, with the parameters of the gymnasium env instance `env`."""
    forward, ctrl = float(env._forward_reward_weight), float(env._ctrl_cost_weight)
    if name == "halfcheetah":
        return _Rules(forward, ctrl, qvel_clip=_QVEL_CLIP[name])
    return _Rules(
        forward,
        ctrl,
        healthy_reward=float(env._healthy_reward),
        terminate_when_unhealthy=bool(env._terminate_when_unhealthy),
        healthy_z_range=_pair(env._healthy_z_range),
        healthy_angle_range=_pair(env._healthy_angle_range),
        healthy_state_range=_pair(env._healthy_state_range) if name == "hopper" else None,
        qvel_clip=_QVEL_CLIP[name],
    )


def check_simulated(name: str | EnvSpec) -> EnvSpec:
    """The EnvSpec of `name` (env or dataset name) if `SimulatorDynamics` supports it, else
    ValueError naming the env and the supported ones."""
    spec = get_env(name)
    if spec.name not in SIMULATED_ENVS:
        why = (
            " (its observation's contact forces and its reward's contact cost need "
            "mj_rnePostConstraint after every step, which mujoco.rollout does not compute)"
            if spec.name == "ant"
            else ""
        )
        raise ValueError(
            f"env {spec.name} ({spec.gym_id}) is not simulated as a dynamics model{why}; "
            f"supported: {', '.join(SIMULATED_ENVS)}"
        )
    return spec


def default_threads() -> int:
    """Threads for `mujoco.rollout`: the CPUs this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


class SimulatorDynamics:
    """The real simulator behind the `DynamicsModel` interface (see the module docstring).

    env: env or dataset name (halfcheetah, hopper, walker2d). nthread: `mujoco.rollout` threads
    (default `default_threads()`; 0 or 1: the calling thread only). Deterministic: `generator`
    is accepted and unused, and a row's result does not depend on the batch it is in.
    """

    def __init__(self, env: str | EnvSpec, *, nthread: int | None = None) -> None:
        import mujoco
        import mujoco.rollout

        spec = check_simulated(env)
        if nthread is None:
            nthread = default_threads()
        if isinstance(nthread, bool) or not isinstance(nthread, int) or nthread < 0:
            raise ValueError(f"nthread must be a non-negative int, got {nthread!r}")
        self.spec = spec
        self.obs_dim = int(spec.obs_dim)
        self.act_dim = int(spec.act_dim)
        gym_env = make_env(spec)
        try:
            env_u = gym_env.unwrapped
            self.mj_model = env_u.model
            self.frame_skip = int(env_u.frame_skip)
            self.dt = float(env_u.dt)
            self.rules = _rules(spec.name, env_u)
        finally:
            gym_env.close()
        m = self.mj_model
        self.nq, self.nv, self.nu = int(m.nq), int(m.nv), int(m.nu)
        if (self.nq - 1 + self.nv, self.nu) != (self.obs_dim, self.act_dim):
            raise RuntimeError(  # pragma: no cover - the registry and the XML disagree
                f"{spec.gym_id}: nq-1+nv={self.nq - 1 + self.nv}, nu={self.nu}, but the "
                f"registry has obs_dim={self.obs_dim}, act_dim={self.act_dim}"
            )
        self._full = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
        self.nstate = int(mujoco.mj_stateSize(m, self._full))
        self._layout = self._state_layout()
        self.nthread = nthread
        self._datas = [mujoco.MjData(m) for _ in range(max(1, nthread))]
        self._pool: Any = mujoco.rollout.Rollout(nthread=nthread if nthread > 1 else 0)

    # ------------------------------------------------------------------ the state vector
    def _state_layout(self) -> tuple[int, int, int]:
        """(time, qpos, qvel) offsets in the FULLPHYSICS state vector, found by writing known
        values, so a MuJoCo with another layout fails here rather than simulating garbage."""
        import mujoco

        d = mujoco.MjData(self.mj_model)
        d.time = -1.0
        d.qpos[:] = np.arange(1, self.nq + 1) * 10.0
        d.qvel[:] = -np.arange(1, self.nv + 1) * 10.0
        state = np.empty(self.nstate)
        mujoco.mj_getState(self.mj_model, d, state, self._full)
        t = int(np.flatnonzero(state == -1.0)[0])
        q = int(np.flatnonzero(state == 10.0)[0])
        v = int(np.flatnonzero(state == -10.0)[0])
        if not (
            np.array_equal(state[q : q + self.nq], d.qpos)
            and np.array_equal(state[v : v + self.nv], d.qvel)
        ):
            raise RuntimeError(  # pragma: no cover - a MuJoCo with another state layout
                "unexpected mjSTATE_FULLPHYSICS layout in this MuJoCo version"
            )
        return t, q, v

    def states_from_obs(self, obs: np.ndarray) -> np.ndarray:
        """FULLPHYSICS states [R, nstate] (float64) for observations [R, S]: x = 0, time = 0."""
        t, q, v = self._layout
        state = np.zeros((obs.shape[0], self.nstate))
        state[:, q + 1 : q + self.nq] = obs[:, : self.nq - 1]
        state[:, v : v + self.nv] = obs[:, self.nq - 1 :]
        return state

    # ------------------------------------------------------------------ the step
    def _check(self, obs: Any, act: Any) -> None:
        name = self.spec.name
        if not isinstance(obs, Tensor) or not isinstance(act, Tensor):
            raise TypeError(
                f"SimulatorDynamics({name}).step: obs and act must be torch tensors, got "
                f"{type(obs).__name__} and {type(act).__name__}"
            )
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"SimulatorDynamics({name}).step: obs must have shape [R, {self.obs_dim}], "
                f"got {tuple(obs.shape)}"
            )
        if act.dim() != 2 or act.shape != (obs.shape[0], self.act_dim):
            raise ValueError(
                f"SimulatorDynamics({name}).step: act must have shape [{obs.shape[0]}, "
                f"{self.act_dim}], got {tuple(act.shape)}"
            )
        if not obs.is_floating_point() or not act.is_floating_point():
            raise TypeError(
                f"SimulatorDynamics({name}).step: obs and act must be floating point, got "
                f"{obs.dtype} and {act.dtype}"
            )

    def step_numpy(
        self, obs: np.ndarray, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One env step per row on numpy arrays: obs [R, S], act [R, A] ->
        (next_obs [R, S] float64, reward [R] float64, done [R] bool)."""
        r = obs.shape[0]
        obs64 = np.asarray(obs, dtype=np.float64)
        ok = np.isfinite(obs64).all(axis=1) & np.isfinite(act).all(axis=1)  # [R]
        state0 = self.states_from_obs(np.where(ok[:, None], obs64, 0.0))
        control = np.where(ok[:, None], act, 0.0).astype(np.float64)[:, None, :]  # [R, 1, nu]
        control = np.ascontiguousarray(np.broadcast_to(control, (r, self.frame_skip, self.nu)))
        warmstart = np.zeros((r, self.nv))
        out = np.empty((r, self.frame_skip, self.nstate))
        if r:
            self._pool.rollout(
                [self.mj_model] * r,
                self._datas,
                state0,
                control,
                initial_warmstart=warmstart,
                state=out,
                skip_checks=True,
                nstep=self.frame_skip,
            )
        t, q, v = self._layout
        final = out[:, -1]  # [R, nstate] after frame_skip substeps
        qpos = final[:, q : q + self.nq]
        qvel = final[:, v : v + self.nv]
        # A warning (e.g. MuJoCo's divergence check, which resets the state) stops the rollout
        # early: the time then falls short of frame_skip substeps.
        completed = final[:, t] > (self.frame_skip - 0.5) * float(self.mj_model.opt.timestep)
        rules = self.rules
        vel_obs = (
            qvel if rules.qvel_clip is None else np.clip(qvel, -rules.qvel_clip, rules.qvel_clip)
        )
        next_obs = np.concatenate([qpos[:, 1:], vel_obs], axis=1)  # [R, S]
        x_velocity = (qpos[:, 0] - 0.0) / self.dt  # x_before = 0
        # The env's control_cost: np.sum(np.square(action)) in the action's own dtype.
        ctrl_cost = rules.ctrl_cost_weight * np.sum(np.square(act), axis=1)
        forward_reward = rules.forward_reward_weight * x_velocity
        done = np.zeros(r, dtype=bool)
        if rules.healthy_z_range is None:  # halfcheetah: forward_reward - ctrl_cost
            reward = forward_reward - ctrl_cost
        else:  # hopper, walker2d: (forward_reward + healthy_reward) - ctrl_cost, as the env
            assert rules.healthy_angle_range is not None
            z, angle = qpos[:, 1], qpos[:, 2]
            (z_lo, z_hi), (a_lo, a_hi) = rules.healthy_z_range, rules.healthy_angle_range
            healthy = (z_lo < z) & (z < z_hi) & (a_lo < angle) & (angle < a_hi)
            if rules.healthy_state_range is not None:
                s_lo, s_hi = rules.healthy_state_range
                rest = np.concatenate([qpos[:, 2:], qvel], axis=1)
                healthy &= ((s_lo < rest) & (rest < s_hi)).all(axis=1)
            paid = healthy | rules.terminate_when_unhealthy
            reward = (forward_reward + np.where(paid, rules.healthy_reward, 0.0)) - ctrl_cost
            if rules.terminate_when_unhealthy:
                done = ~healthy
        bad = ~(ok & completed)
        next_obs[bad] = np.nan
        reward = np.where(bad, np.nan, reward)
        return next_obs, reward, done

    @torch.no_grad()
    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`(next_obs [R, S], reward [R], done [R] bool)` on obs's device, in obs's dtype.
        `generator` is unused (the simulator is deterministic)."""
        del generator
        self._check(obs, act)
        o = obs.detach().to("cpu", torch.float64).numpy()
        a = act.detach().to("cpu").numpy()
        next_obs, reward, done = self.step_numpy(o, a)
        dev = obs.device
        return (
            torch.from_numpy(next_obs).to(dev, obs.dtype),
            torch.from_numpy(reward).to(dev, obs.dtype),
            torch.from_numpy(done).to(dev),
        )

    def close(self) -> None:
        """Stop the rollout thread pool (also done when the object is collected)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __repr__(self) -> str:
        return (
            f"SimulatorDynamics({self.spec.name!r}, {self.spec.gym_id}, frame_skip="
            f"{self.frame_skip}, nthread={self.nthread})"
        )


__all__ = ["SIMULATED_ENVS", "SimulatorDynamics", "check_simulated", "default_threads"]
