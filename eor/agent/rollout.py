"""The rollout phase of RAVL (docs/algorithm.md §3): k-step rollouts of the learned dynamics model.

Each epoch, before its updates:

1. draw R = `rollouts_per_epoch` distinct start states from the real dataset buffer;
2. for t = 1..k: a_t ~ pi(.|s_t) (stochastic actor), (s_{t+1}, r_t, d_t) = model.step(s_t, a_t);
3. every transition of a live rollout goes to the model buffer, terminal ones included;
   a rollout that terminated (d_t) is dropped from the later steps.

A transition whose predicted next state or reward is not finite is counted (`nonfinite`),
never stored, and its rollout is dropped from the later steps as well.

Speed: the k-step loop never leaves the device. Instead of compacting the batch of live
rollouts at each step (a data-dependent shape, i.e. a host sync on CUDA), it keeps all R rows
and a boolean `alive` mask; dead rows are computed and discarded. The k steps are stacked on
the device and copied to the host once, where the stored rows are picked out for the buffer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor


class DynamicsModel(Protocol):
    obs_dim: int
    act_dim: int

    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor]: ...


class Policy(Protocol):
    def act(
        self, obs: Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor: ...


@dataclass
class RolloutStats:
    """Metrics of one rollout phase (the "rollout" record of metrics.jsonl)."""

    rollout_time: float
    """Wall time of the phase, seconds."""
    transitions_added: int
    """Transitions stored in the model buffer (finite ones of live rollouts)."""
    mean_length: float
    """Mean number of stored transitions per rollout (k when nothing terminates)."""
    mean_reward: float
    """Mean model reward over the stored transitions."""
    nonfinite: int
    """Transitions of live rollouts with a non-finite next state or reward (not stored)."""
    terminals: int
    """Stored transitions with done = 1."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def rollout_phase(
    actor: Policy,
    model: DynamicsModel,
    real_buffer: Any,
    model_buffer: Any,
    *,
    num_rollouts: int,
    steps_k: int,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> RolloutStats:
    """Run one rollout phase and add its transitions to `model_buffer` (see module docstring).

    real_buffer: an `eor.ReplayBuffer` of the dataset (start states via `sample_obs`, which
    draws distinct rows). model_buffer: the FIFO `eor.ReplayBuffer` that receives the rollouts.
    generator: the torch generator on the model's device that drives all the phase's sampling
    (the actor's action noise and `model.step`), so a restored generator replays the phase.
    """
    if num_rollouts < 1 or steps_k < 1:
        raise ValueError(
            f"num_rollouts and steps_k must be positive, got {num_rollouts} and {steps_k}"
        )
    if num_rollouts > len(real_buffer):
        raise ValueError(
            f"rollouts_per_epoch ({num_rollouts}) exceeds the dataset size ({len(real_buffer)}); "
            "start states are drawn without replacement"
        )
    device = torch.device(device)
    start = time.perf_counter()
    starts = real_buffer.sample_obs(num_rollouts)  # [R, S] numpy float32
    obs = torch.from_numpy(np.ascontiguousarray(starts)).to(device)  # [R, S]
    alive = torch.ones(num_rollouts, dtype=torch.bool, device=device)  # [R]

    obs_steps, act_steps, rew_steps, next_steps, done_steps, keep_steps = [], [], [], [], [], []
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    for _ in range(steps_k):
        act = actor.act(obs, deterministic=False, generator=generator)  # [R, A]
        next_obs, reward, done = model.step(obs, act, generator)  # [R, S], [R] or [R, 1], [R]
        reward = reward.reshape(num_rollouts)  # [R]
        done = done.reshape(num_rollouts).to(torch.bool)  # [R]
        finite = torch.isfinite(next_obs).all(dim=1) & torch.isfinite(reward)  # [R]
        keep = alive & finite  # [R] rows stored from this step
        nonfinite += (alive & ~finite).sum()
        obs_steps.append(obs)
        act_steps.append(act)
        rew_steps.append(reward)
        next_steps.append(next_obs)
        done_steps.append(done)
        keep_steps.append(keep)
        alive = keep & ~done
        # Dead rows keep their last finite state, so no inf/NaN flows into the next forward.
        obs = torch.where(alive[:, None], next_obs, obs)

    # One device -> host transfer for the whole phase; step-major order, like stepping in turn.
    keep_all = torch.cat(keep_steps)  # [k*R]
    packed = torch.cat(
        [
            torch.cat(obs_steps),  # [k*R, S]
            torch.cat(act_steps).to(obs.dtype),  # [k*R, A]
            torch.cat(rew_steps)[:, None].to(obs.dtype),  # [k*R, 1]
            torch.cat(next_steps),  # [k*R, S]
            torch.cat(done_steps)[:, None].to(obs.dtype),  # [k*R, 1]
            keep_all[:, None].to(obs.dtype),  # [k*R, 1]
        ],
        dim=1,
    )
    host = packed.to("cpu", torch.float32).numpy()  # [k*R, 2S+A+3]
    n_nonfinite = int(nonfinite)  # already computed: the transfer above synchronised
    s, a = obs.shape[1], act_steps[0].shape[1]
    rows = host[host[:, 2 * s + a + 2] > 0.5]  # [n, 2S+A+3] the stored transitions
    o = np.ascontiguousarray(rows[:, :s])
    ac = np.ascontiguousarray(rows[:, s : s + a])
    r = np.ascontiguousarray(rows[:, s + a])
    no = np.ascontiguousarray(rows[:, s + a + 1 : 2 * s + a + 1])
    d = np.ascontiguousarray(rows[:, 2 * s + a + 1])
    n = len(rows)
    if n:
        model_buffer.add(o, ac, r, no, d)
    return RolloutStats(
        rollout_time=time.perf_counter() - start,
        transitions_added=n,
        mean_length=n / num_rollouts,
        mean_reward=float(r.mean()) if n else float("nan"),
        nonfinite=n_nonfinite,
        terminals=int(d.sum()),
    )
