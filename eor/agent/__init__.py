"""RAVL agent (docs/algorithm.md §3): networks, the learner and loading a trained actor.

learner = RAVL(RAVLConfig(obs_dim=17, act_dim=6), device="cuda", seed=0)
metrics = learner.update(batch, log=True)
actor = load_actor("runs/my-run")          # or a checkpoint file
action = actor.act(obs, deterministic=True)
"""

from __future__ import annotations

from pathlib import Path

import torch

from eor.agent.checkpoint import CHECKPOINT_NAMES, read_checkpoint
from eor.agent.networks import Actor, VectorizedCritic
from eor.agent.ravl import (
    LOGGED_KEYS,
    RAVL,
    NonFiniteLossError,
    RAVLConfig,
    actor_from_state,
)


def load_actor(checkpoint_path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> Actor:
    """The actor of a checkpoint, in eval mode on `device`.

    checkpoint_path_or_run_dir: a checkpoint file (a dict with the learner state under "learner",
    or a bare `RAVL.state_dict()`), or a run directory, whose checkpoints/latest.pt is used
    (`eor.agent.checkpoint.read_checkpoint`).
    Checkpoints are full pickles (they hold RNG and optimiser states): load only trusted files.
    """
    _, state = read_checkpoint(checkpoint_path_or_run_dir)
    return actor_from_state(state).to(device)


__all__ = [
    "Actor",
    "VectorizedCritic",
    "RAVL",
    "RAVLConfig",
    "NonFiniteLossError",
    "LOGGED_KEYS",
    "actor_from_state",
    "load_actor",
    "CHECKPOINT_NAMES",
]
