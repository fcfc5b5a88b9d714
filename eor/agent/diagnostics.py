"""Edge-of-reach diagnostics of a RAVL run (docs/algorithm.md §3.8): Q by rollout step.

The edge-of-reach problem: states reached only at the last rollout step k are never a
critic's input, only a Bellman target's, so nothing corrects their Q values, which can blow up;
RAVL's ensemble std is high exactly there and its penalty keeps them bounded. `ReachProbe`
shows this in every run, at every train log step:

1. once per run, P = `PROBE_SIZE` start states are drawn from the real dataset with their own
   numpy generator (`PROBE_SEED`, the same for every run seed, so seeds probe the same
   states), read through `ReplayBuffer.fields()`: no training stream is touched;
2. at each log step, the current policy rolls them out k = steps_k steps through the run's
   dynamics model (the object the rollout phase uses) as the rollout phase does
   (a_t ~ π(·|s_t), s_{t+1} = model.step(s_t, a_t)), with the probe's own torch generator,
   reseeded to `PROBE_SEED` every time: the same action and model noise at every log step;
3. all N critics are evaluated at (s_t, a_t) for t = 0..k (a_k ~ π(·|s_k), the action the
   Bellman target would use at a last next-state); per t, the mean over live rows of the
   ensemble mean and of the ensemble std (unbiased, 0 with one critic), as `q_policy_std`.

A row stops contributing after its rollout terminated (done) or produced a non-finite state,
as the rollout phase drops it. Everything stays on the device until the train record's one
host read (`ReachProbe.values`); the measurement costs a few small forwards (benchmarks/
bench_diagnostics.py, docs/algorithm.md §3.8).

Evaluation records get `evaluation_values`: the Q of the deterministic policy at the
evaluation episodes' start states beside their discounted Monte-Carlo return, and the
difference (overestimation), with the Q at the probe's dataset states beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eor.agent.rollout import DynamicsModel, Policy

PROBE_SIZE = 256
"""Probe start states P (fewer when the dataset is smaller)."""
PROBE_SEED = 0x5EED_0EDE
"""Seed of the probe's start-state draw and of its action and model noise."""


def reach_keys(steps_k: int) -> tuple[str, ...]:
    """The train-record keys `ReachProbe.values` returns, in order, for rollouts of k steps."""
    if steps_k < 1:
        raise ValueError(f"steps_k must be a positive integer, got {steps_k!r}")
    t_all = range(steps_k + 1)
    return (
        *(f"reach/q_mean_t{t}" for t in t_all),
        *(f"reach/q_std_t{t}" for t in t_all),
        *(f"reach/alive_t{t}" for t in range(1, steps_k + 1)),
        "reach/q_abs_max",
    )


class ReachProbe:
    """The fixed probe of one run (see the module docstring).

    real_buffer: the run's dataset buffer (an `eor.ReplayBuffer`; read, never sampled).
    steps_k: rollout steps k. device: where the actor, critics and model live.
    size, seed: P and the probe's seed (defaults `PROBE_SIZE`, `PROBE_SEED`).
    """

    def __init__(
        self,
        real_buffer: Any,
        *,
        steps_k: int,
        device: torch.device | str,
        size: int = PROBE_SIZE,
        seed: int = PROBE_SEED,
    ) -> None:
        self.keys = reach_keys(steps_k)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        obs = real_buffer.fields()["obs"]  # [n, S] read-only view
        n = len(obs)
        if n == 0:
            raise ValueError("real_buffer: the dataset buffer is empty; the probe needs states")
        rows = np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False))
        self.device = torch.device(device)
        self.start_obs = torch.from_numpy(np.array(obs[rows], dtype=np.float32)).to(self.device)
        self.rows = rows
        self.steps_k = steps_k
        self.seed = seed
        self.generator = torch.Generator(device=self.device)

    @property
    def size(self) -> int:
        return int(self.start_obs.shape[0])

    @torch.no_grad()
    def rollout(self, actor: Policy, critic: Any, model: DynamicsModel) -> tuple[Tensor, Tensor]:
        """Q of all critics along the probe's rollouts: (q `[k+1, N, P]`, live `[k+1, P]` bool).

        q[t, i, j] = Q_i(s_t, a_t) of row j; live[t, j]: row j's rollout reached s_t (no
        termination and only finite states before it). Dead rows keep their last state. The
        critics run once, on all k+1 steps' rows together (one larger GEMM per layer).
        """
        gen = self.generator.manual_seed(self.seed)
        obs = self.start_obs
        live = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)  # [P]
        obs_steps, act_steps, lives = [], [], []
        for t in range(self.steps_k + 1):
            act = actor.act(obs, deterministic=False, generator=gen)  # [P, A]
            obs_steps.append(obs)
            act_steps.append(act)
            lives.append(live)
            if t == self.steps_k:
                break
            next_obs, reward, done = model.step(obs, act, gen)
            finite = torch.isfinite(next_obs).all(dim=1) & torch.isfinite(reward.reshape(-1))
            live = live & finite & ~done.reshape(-1).to(torch.bool)
            obs = torch.where(live[:, None], next_obs, obs)
        q = critic.q_values(torch.cat(obs_steps), torch.cat(act_steps))  # [N, (k+1)·P]
        q = q.reshape(q.shape[0], self.steps_k + 1, -1).transpose(0, 1)  # [k+1, N, P]
        return q, torch.stack(lives)

    @torch.no_grad()
    def measure(self, actor: Policy, critic: Any, model: DynamicsModel) -> Tensor:
        """The values of `self.keys` as one device tensor (no host sync)."""
        q, live = self.rollout(actor, critic, model)
        return reach_stats(q, live)

    def values(self, actor: Policy, critic: Any, model: DynamicsModel) -> dict[str, float]:
        """`{key: value}` for a train record: `measure` and its one host read."""
        return dict(zip(self.keys, self.measure(actor, critic, model).tolist(), strict=True))


def reach_stats(q: Tensor, live: Tensor) -> Tensor:
    """Per-step statistics of q `[k+1, N, P]` over the live rows `[k+1, P]`, as one `[3k+3]`.

    Layout (`reach_keys`): mean over live rows of the ensemble mean (k+1), of the ensemble std
    (unbiased, k+1; 0 with N = 1), the live fraction of rows at t = 1..k (k), and the largest
    |Q_i| over critics, live rows and steps (1). A step without live rows gives NaN.
    """
    n = q.shape[1]
    mask = live.to(q.dtype)  # [k+1, P]
    count = mask.sum(dim=1)  # [k+1]
    nan = torch.full_like(count, float("nan"))
    q_mean = q.mean(dim=1)  # [k+1, P]
    q_std = q.std(dim=1) if n > 1 else torch.zeros_like(q_mean)  # [k+1, P]

    def row_mean(x: Tensor) -> Tensor:  # [k+1, P] -> [k+1], over live rows
        total = torch.where(live, x, torch.zeros_like(x)).sum(dim=1)
        return torch.where(count > 0, total / count.clamp(min=1), nan)

    abs_max = torch.where(live, q.abs().amax(dim=1), torch.zeros_like(q_mean)).amax()
    return torch.cat([row_mean(q_mean), row_mean(q_std), mask[1:].mean(dim=1), abs_max.reshape(1)])


@torch.no_grad()
def policy_q(actor: Any, critic: Any, obs: Tensor) -> Tensor:
    """Ensemble-mean Q of the deterministic policy, Q(s, μ(s)) averaged over critics: `[B]`."""
    return critic.q_values(obs, actor.act(obs, deterministic=True)).mean(dim=0)


def discounted_returns(rewards: Sequence[Sequence[float]], gamma: float) -> np.ndarray:
    """Σ_t γ^t r_t of each reward sequence (an episode's rewards from its start): `[E]`."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    out = np.zeros(len(rewards), dtype=np.float64)
    for i, seq in enumerate(rewards):
        g = 0.0
        for r in reversed(seq):
            g = float(r) + gamma * g
        out[i] = g
    return out


def evaluation_values(
    actor: Any,
    critic: Any,
    start_obs: Any,
    discounted: Sequence[float],
    probe: ReachProbe | None,
) -> dict[str, float]:
    """An eval record's Q-versus-return values (docs/algorithm.md §3.8).

    start_obs: the evaluation episodes' first observations `[E, S]`; discounted: their
    discounted returns. q_start_mean: mean over episodes of the ensemble-mean Q(s_0, μ(s_0));
    overestimation: q_start_mean − the mean discounted return (the same states and policy);
    q_data_mean: the ensemble-mean Q(s, μ(s)) averaged over the probe's dataset states.
    """
    param = next(critic.parameters())
    obs = torch.as_tensor(np.asarray(start_obs), dtype=param.dtype, device=param.device)
    q_start = float(policy_q(actor, critic, obs).mean())
    out = {"q_start_mean": q_start, "overestimation": q_start - float(np.mean(discounted))}
    if probe is not None:
        out["q_data_mean"] = float(policy_q(actor, critic, probe.start_obs).mean())
    return out


__all__ = [
    "PROBE_SEED",
    "PROBE_SIZE",
    "ReachProbe",
    "discounted_returns",
    "evaluation_values",
    "policy_q",
    "reach_keys",
    "reach_stats",
]
