"""A 2-D point mass with exact edge-of-reach labels and an oracle value function.

The environment (`PointMass`):

    state   s ∈ box = [low, high]²                      (default [−1, 1]²)
    action  a ∈ [−1, 1]²                                 (the actor's tanh output, max_action 1)
    step    s′ = clip(s + h · clip(a, −1, 1), low, high)  (h = `step_size`, default 0.1)
    reward  r = −‖s′ − g‖₂                               (g = `goal`, default (0.1, 0.1))
    done    never

The dataset covers only the square `data_low`..`data_high` (default [−0.8, −0.2]²): states
uniform there, actions uniform in [−1, 1]², next states and rewards from the true step
(`make_dataset`). The goal lies outside the data, three steps from its nearest corner, so the
reward draws the policy out of the data's support, but to a place that k-step rollouts reach
(k = 5 by default): a correct critic stops the policy at the goal, an overestimating one may carry
it past the goal to the edge of reach.

Reachability is closed form. Each coordinate moves by at most h per step, the clip is a
projection onto the box, and a = 0 stays put, so the states reachable from a data point p in
exactly t steps, and those reachable in at most t steps, are the same set:
box ∩ {x : ‖x − p‖∞ ≤ t·h}. From a dataset P (a point set, the rollouts' start states):

    R_t = {x ∈ box : d(x) ≤ t·h},  d(x) = min_{p ∈ P} ‖x − p‖∞
    steps(x) = ⌈d(x) / h⌉  (the fewest steps that reach x; ∞ outside the box)
    edge-of-reach for k-step rollouts: R_k \\ R_{k−1} = {x : steps(x) = k}

(`ReachLabels`, `edge_of_reach`). States outside the box are unreachable: the walls are where
the clip holds the point mass, and nothing lies beyond them.

Oracle values (`value_iteration`): V*(s) = max_a [r(s′) + γ V*(s′)] on a grid of spacing
δ = h / `cells_per_step` over the box, with the actions that move by whole cells,
{−m, ..., m}·δ per coordinate (m = cells_per_step). Since r depends on s′ only, one sweep is a
max filter of W = r + γV over a (2m+1)×(2m+1) window with the edges replicated (the clip), done
separably. Off the grid `ValueGrid` interpolates bilinearly. For the default reward the grid is
exact at grid points: the optimal policy moves each coordinate min(h, |gap|) toward the goal
(that makes every coordinate's gap, hence the distance, as small as possible at every step at
once), so from a grid point it only takes whole-cell actions; `PointMass.optimal_value` is that
closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

STEP_TOLERANCE = 1e-5
"""Slack, in steps, of `ReachLabels.min_steps`: a distance within 1e-5 · h above a multiple of h
counts as that multiple. Rollouts run in float32, whose rounding puts a state reached by
saturated actions up to about 1e-7 beyond t·h."""


def _pair(value: tuple[float, float] | list[float], name: str) -> tuple[float, float]:
    if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
        raise ValueError(f"{name} must be two numbers (x, y), got {value!r}")
    out = (float(value[0]), float(value[1]))
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


class PointMass:
    """The point mass (module docstring). Satisfies `eor.agent.rollout.DynamicsModel`.

    Args:
        low, high: the box [low, high]² of states.
        step_size: h, the largest move per step along each coordinate (∞-norm).
        goal: g, where the reward −‖s′ − g‖₂ peaks; inside the box.
        data_low, data_high: corners of the square the dataset covers; inside the box.
    """

    obs_dim: int
    act_dim: int

    def __init__(
        self,
        *,
        low: float = -1.0,
        high: float = 1.0,
        step_size: float = 0.1,
        goal: tuple[float, float] = (0.1, 0.1),
        data_low: tuple[float, float] = (-0.8, -0.8),
        data_high: tuple[float, float] = (-0.2, -0.2),
    ) -> None:
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"low and high must be finite with low < high, got {low}, {high}")
        if not (math.isfinite(step_size) and 0.0 < step_size <= high - low):
            raise ValueError(
                f"step_size must be in (0, high - low] = (0, {high - low}], got {step_size!r}"
            )
        self.obs_dim = 2
        self.act_dim = 2
        self.low, self.high, self.step_size = float(low), float(high), float(step_size)
        self.goal = _pair(goal, "goal")
        self.data_low = _pair(data_low, "data_low")
        self.data_high = _pair(data_high, "data_high")
        for name, point in (("goal", self.goal), ("data_low", self.data_low)):
            if not all(low <= v <= high for v in point):
                raise ValueError(f"{name} must lie in the box [{low}, {high}]², got {point}")
        if not all(lo < hi <= high for lo, hi in zip(self.data_low, self.data_high, strict=True)):
            raise ValueError(
                f"data_high must exceed data_low and lie in the box, got data_low "
                f"{self.data_low}, data_high {self.data_high}"
            )

    def describe(self) -> dict[str, object]:
        """The environment's parameters, for summaries."""
        return {
            "box": [self.low, self.high],
            "step_size": self.step_size,
            "goal": list(self.goal),
            "data_low": list(self.data_low),
            "data_high": list(self.data_high),
            "reward": "-||s' - goal||_2",
        }

    # ------------------------------------------------------------------ dynamics and reward
    def next_state(self, obs: Tensor, act: Tensor) -> Tensor:
        """s′ = clip(s + h · clip(a, −1, 1), low, high). obs, act `[B, 2]` -> `[B, 2]`."""
        return (obs + self.step_size * act.clamp(-1.0, 1.0)).clamp(self.low, self.high)

    def reward(self, next_obs: Tensor) -> Tensor:
        """r = −‖s′ − g‖₂. next_obs `[..., 2]` -> `[...]`."""
        goal = torch.tensor(self.goal, dtype=next_obs.dtype, device=next_obs.device)
        return -(next_obs - goal).norm(dim=-1)

    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The true dynamics as a rollout model: (next_obs `[B, 2]`, reward `[B]`, done `[B]`).
        Deterministic: `generator` is not used."""
        if obs.dim() != 2 or obs.shape[1] != 2 or act.shape != obs.shape:
            raise ValueError(
                f"obs and act must both have shape [B, 2], got {tuple(obs.shape)} and "
                f"{tuple(act.shape)}"
            )
        next_obs = self.next_state(obs, act)
        reward = self.reward(next_obs)
        return next_obs, reward, torch.zeros_like(reward)

    # ------------------------------------------------------------------ the optimum (closed form)
    def optimal_action(self, obs: Tensor) -> Tensor:
        """The optimal action for the goal reward: each coordinate moves min(h, |gap|) toward
        the goal. obs `[B, 2]` -> `[B, 2]` in [−1, 1]."""
        goal = torch.tensor(self.goal, dtype=obs.dtype, device=obs.device)
        return ((goal - obs) / self.step_size).clamp(-1.0, 1.0)

    def optimal_value(self, obs: Tensor, gamma: float) -> Tensor:
        """V*(s) = Σ_{t≥1} γ^{t−1} r(s_t) along `optimal_action`, in closed form (the reward is
        0 once the goal is reached). obs `[B, 2]` inside the box -> `[B]`."""
        goal = torch.tensor(self.goal, dtype=obs.dtype, device=obs.device)
        gap = (obs - goal).abs()  # [B, 2]
        steps = int(math.ceil(float(gap.max()) / self.step_size)) if gap.numel() else 0
        value = torch.zeros(obs.shape[0], dtype=obs.dtype, device=obs.device)
        for t in range(1, steps + 1):
            value -= gamma ** (t - 1) * (gap - t * self.step_size).clamp_min(0.0).norm(dim=-1)
        return value

    def rollout(
        self, policy: Callable[[Tensor], Tensor], starts: Tensor, horizon: int
    ) -> tuple[Tensor, Tensor]:
        """Run `policy` (obs `[B, 2]` -> act `[B, 2]`) in the true env from `starts` `[B, 2]`.

        Returns (states `[horizon + 1, B, 2]`, rewards `[horizon, B]`).
        """
        if horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        states, rewards = [starts], []
        obs = starts
        for _ in range(horizon):
            obs, rew, _ = self.step(obs, policy(obs).to(obs.dtype))
            states.append(obs)
            rewards.append(rew)
        return torch.stack(states), torch.stack(rewards)


def make_dataset(env: PointMass, size: int, seed: int) -> dict[str, np.ndarray]:
    """The offline dataset: `size` transitions, states uniform in the data square, actions
    uniform in [−1, 1]², next state and reward from the true step, done 0.

    Returns float32 arrays obs `[size, 2]`, act `[size, 2]`, rew `[size]`, next_obs `[size, 2]`,
    done `[size]` (the fields of `eor.ReplayBuffer.add`).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    rng = np.random.default_rng(seed)
    lo, hi = np.array(env.data_low), np.array(env.data_high)
    obs = torch.from_numpy(lo + (hi - lo) * rng.random((size, 2)))  # float64 [N, 2]
    act = torch.from_numpy(rng.uniform(-1.0, 1.0, (size, 2)))  # [N, 2]
    next_obs, rew, done = env.step(obs, act)
    return {
        "obs": obs.numpy().astype(np.float32),
        "act": act.numpy().astype(np.float32),
        "rew": rew.numpy().astype(np.float32),
        "next_obs": next_obs.numpy().astype(np.float32),
        "done": done.numpy().astype(np.float32),
    }


# --------------------------------------------------------------------------- reachability
class ReachLabels:
    """Exact reach labels from a point set of start states (module docstring).

    Args:
        data_obs: the rollouts' start states P, `[N, 2]` (the dataset's observations).
        env: the point mass (its box and step size).
        chunk: queries per distance block (memory: chunk · N floats).
    """

    def __init__(self, data_obs: Tensor | np.ndarray, env: PointMass, chunk: int = 4096) -> None:
        points = torch.as_tensor(np.asarray(data_obs), dtype=torch.float64)
        if points.dim() != 2 or points.shape[1] != 2 or points.shape[0] < 1:
            raise ValueError(
                f"data_obs must have shape [N, 2] with N >= 1, got {tuple(points.shape)}"
            )
        if not torch.isfinite(points).all():
            raise ValueError("data_obs must be finite")
        outside = (points < env.low) | (points > env.high)
        if outside.any():
            raise ValueError(f"data_obs must lie in the box [{env.low}, {env.high}]²")
        self.points = points
        self.env = env
        self.chunk = chunk

    def distance(self, states: Tensor) -> Tensor:
        """d(x) = min_p ‖x − p‖∞, float64. states `[B, 2]` -> `[B]`."""
        x = _states(states).to(torch.float64)
        out = [
            torch.cdist(x[i : i + self.chunk], self.points, p=float("inf")).amin(dim=1)
            for i in range(0, x.shape[0], self.chunk)
        ]
        return torch.cat(out) if out else x.new_zeros(0)

    def min_steps(self, states: Tensor) -> Tensor:
        """The fewest steps that reach each state from the data: ⌈d(x)/h⌉ (with
        `STEP_TOLERANCE`), 0 at the data points, inf outside the box. `[B, 2]` -> `[B]` float64."""
        x = _states(states).to(torch.float64)
        steps = torch.ceil(self.distance(x) / self.env.step_size - STEP_TOLERANCE).clamp_min(0.0)
        inside = ((x >= self.env.low) & (x <= self.env.high)).all(dim=1)
        return torch.where(inside, steps, torch.full_like(steps, math.inf))

    def within_reach(self, states: Tensor, t: int) -> Tensor:
        """Whether each state is in R_t (reachable in at most t steps). `[B, 2]` -> `[B]` bool."""
        _check_steps(t, "t", low=0)
        return (self.min_steps(states) <= t).to(_device(states))

    def edge_of_reach(self, states: Tensor, k: int) -> Tensor:
        """Whether each state is edge-of-reach for k-step rollouts: reachable in k steps, not in
        fewer (R_k \\ R_{k−1}). `[B, 2]` -> `[B]` bool, on the states' device."""
        _check_steps(k, "k", low=1)
        return (self.min_steps(states) == k).to(_device(states))


def edge_of_reach(states: Tensor, data_obs: Tensor | np.ndarray, k: int, env: PointMass) -> Tensor:
    """Edge-of-reach labels of `states` `[B, 2]` for k-step rollouts started from `data_obs`
    `[N, 2]` in `env`: reachable in k steps but in no fewer. `[B]` bool."""
    return ReachLabels(data_obs, env).edge_of_reach(states, k)


def _states(states: Tensor) -> Tensor:
    if not isinstance(states, Tensor) or states.dim() != 2 or states.shape[1] != 2:
        shape = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"states must be a tensor of shape [B, 2], got {shape}")
    return states.detach().cpu()


def _device(states: Tensor) -> torch.device:
    return states.device


def _check_steps(value: int, name: str, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


# --------------------------------------------------------------------------- oracle values
@dataclass
class ValueGrid:
    """A value function on the grid low + δ·(i, j), i, j = 0..G−1; bilinear in between.

    values `[G, G]` float64, values[i, j] = V(low + δi, low + δj).
    """

    low: float
    spacing: float
    values: Tensor
    sweeps: int = 0

    def __call__(self, states: Tensor) -> Tensor:
        """V at `states` `[B, 2]` (clamped to the box) -> `[B]`, in the states' dtype."""
        x = _states(states).to(torch.float64)
        g = self.values.shape[0]
        pos = ((x - self.low) / self.spacing).clamp(0.0, g - 1.0)  # [B, 2] grid coordinates
        base = pos.floor().clamp(max=g - 2).long()  # [B, 2] lower-left cell corner
        frac = pos - base  # [B, 2] in [0, 1]
        i, j = base[:, 0], base[:, 1]
        fx, fy = frac[:, 0], frac[:, 1]
        v = self.values
        out = (
            v[i, j] * (1 - fx) * (1 - fy)
            + v[i + 1, j] * fx * (1 - fy)
            + v[i, j + 1] * (1 - fx) * fy
            + v[i + 1, j + 1] * fx * fy
        )
        return out.to(device=states.device, dtype=states.dtype)


def value_iteration(
    env: PointMass,
    gamma: float,
    *,
    cells_per_step: int = 10,
    reward: Callable[[Tensor], Tensor] | None = None,
    tol: float = 1e-10,
    max_sweeps: int = 100_000,
) -> ValueGrid:
    """V* of the point mass by value iteration on a grid (module docstring), from V = 0.

    cells_per_step: m; the grid spacing is δ = step_size / m, and (high − low) / δ must be a
        whole number.
    reward: r(s′) on positions `[..., 2]` -> `[...]`; default `env.reward`.
    tol: stop when a sweep changes no value by more than tol.
    """
    if (
        isinstance(cells_per_step, bool)
        or not isinstance(cells_per_step, int)
        or cells_per_step < 1
    ):
        raise ValueError(f"cells_per_step must be a positive integer, got {cells_per_step!r}")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for value iteration, got {gamma!r}")
    m = cells_per_step
    spacing = env.step_size / m
    cells = (env.high - env.low) / spacing
    if abs(cells - round(cells)) > 1e-6:
        raise ValueError(
            f"the box width {env.high - env.low} must be a whole number of grid cells of "
            f"step_size / cells_per_step = {spacing}; choose another cells_per_step"
        )
    g = int(round(cells)) + 1
    axis = env.low + spacing * torch.arange(g, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)  # [G, G, 2]
    rew = (reward or env.reward)(grid).to(torch.float64)  # [G, G]
    values = torch.zeros(g, g, dtype=torch.float64)
    for sweep in range(1, max_sweeps + 1):
        w = (rew + gamma * values)[None, None]  # [1, 1, G, G]
        # max over the (2m+1)² whole-cell moves, the clip being the replicated edges; separable.
        w = F.max_pool2d(F.pad(w, (0, 0, m, m), mode="replicate"), (2 * m + 1, 1), stride=1)
        w = F.max_pool2d(F.pad(w, (m, m, 0, 0), mode="replicate"), (1, 2 * m + 1), stride=1)
        new = w[0, 0]
        change = float((new - values).abs().max())
        values = new
        if change <= tol:
            return ValueGrid(env.low, spacing, values, sweep)
    raise RuntimeError(
        f"value iteration did not converge to tol={tol} in max_sweeps={max_sweeps} sweeps "
        f"(last change {change:.3g}); raise max_sweeps or lower gamma"
    )
