"""RAVL agent (docs/algorithm.md §3): networks, the learner and loading a trained actor.

learner = RAVL(RAVLConfig(obs_dim=17, act_dim=6), device="cuda", seed=0)
metrics = learner.update(batch, log=True)
actor = load_actor("runs/my-run")          # or a checkpoint file
action = actor.act(obs, deterministic=True)
"""

from __future__ import annotations

from pathlib import Path

import torch

from eor.agent.checkpoint import CHECKPOINT_NAMES, resolve_checkpoint
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
    (`eor.agent.checkpoint.resolve_checkpoint`).
    Checkpoints are full pickles (they hold RNG and optimiser states): load only trusted files.
    """
    path = resolve_checkpoint(checkpoint_path_or_run_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file: say which
        raise ValueError(f"could not read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
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
