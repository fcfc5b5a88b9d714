"""Batched termination functions of docs/algorithm.md §3, on torch tensors.

Each takes the model's predicted next states `next_obs` [..., S] (any leading shape, any device)
and returns a bool tensor [...] that is True where the episode ends. NaN or inf in a state counts
as done wherever docs/algorithm.md §3 asks for finiteness; elsewhere a NaN comparison is False, so a NaN height
or angle also ends the episode (walker2d), which is what we want for a diverging model.

obs[..., 0] is the torso height and obs[..., 1] the torso angle in the D4RL observations of
hopper and walker2d; for ant obs[..., 0] is the torso height (D4RL drops x and y).
"""

from __future__ import annotations

import torch
from torch import Tensor


def hopper_termination(next_obs: Tensor) -> Tensor:
    """done = not (all finite, all |s'[1:]| < 100, height > 0.7, |angle| < 0.2).

    Departs from MOPO's `np.abs(next_obs[:, 1:] < 100)`, which took the absolute value of a
    boolean (so large negative states never ended an episode): §3 asks for |s'[1:]| < 100.
    """
    height = next_obs[..., 0]
    angle = next_obs[..., 1]
    not_done = (
        torch.isfinite(next_obs).all(dim=-1)
        & (next_obs[..., 1:].abs() < 100).all(dim=-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~not_done


def walker2d_termination(next_obs: Tensor) -> Tensor:
    """done = not (0.8 < height < 2.0 and -1 < angle < 1); NaN height or angle is done."""
    height = next_obs[..., 0]
    angle = next_obs[..., 1]
    not_done = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~not_done


def halfcheetah_termination(next_obs: Tensor) -> Tensor:
    """HalfCheetah never terminates (not even on NaN: §3 says never done)."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def ant_termination(next_obs: Tensor) -> Tensor:
    """done = not (all finite and 0.2 <= height <= 1.0)."""
    height = next_obs[..., 0]
    not_done = torch.isfinite(next_obs).all(dim=-1) & (height >= 0.2) & (height <= 1.0)
    return ~not_done
