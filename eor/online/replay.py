"""The replay buffer of an online run: `eor.ReplayBuffer` plus, per stored transition, the env
step that produced it, its episode and whether the episode was truncated there.

The C++ buffer keeps obs, act, rew, next_obs and done (done = terminated only: the critic
target bootstraps through a time-limit truncation). Three numpy arrays beside it, indexed by
the same slots, keep what a dataset recipe needs:

    env_step   int64  the 0-based env step of the transition (step t acts on the t-th obs)
    episode    int64  the 0-based training episode it belongs to
    truncated  bool   the episode ended at this transition by its time limit (D4RL's timeouts)

`read_replay` returns the transitions in the order they were collected, optionally only those
collected before a given env step (e.g. a policy snapshot's: "the replay buffer up to
checkpoint X"). Once the buffer has wrapped (buffer_size < total steps), the oldest transitions
are gone; `read_replay` says so when asked for them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import eor
from eor.agent.checkpoint import buffer_from_bytes, buffer_to_bytes, load_checkpoint


class OnlineReplay:
    """A FIFO `eor.ReplayBuffer` of `capacity` transitions with the per-slot step records."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int) -> None:
        self.buffer = eor.ReplayBuffer(capacity, obs_dim, act_dim, seed=seed)
        self.env_step = np.zeros(capacity, dtype=np.int64)
        self.episode = np.zeros(capacity, dtype=np.int64)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.added = 0
        """Transitions added in all (more than len once the buffer has wrapped)."""

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def capacity(self) -> int:
        return self.buffer.capacity

    def add(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        rew: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
        *,
        env_step: int,
        episode: int,
    ) -> None:
        """Store one transition; done = terminated (never truncated)."""
        slot = self.buffer.position
        self.buffer.add(
            obs[None], act[None], np.array([rew]), next_obs[None], np.array([float(terminated)])
        )
        self.env_step[slot] = env_step
        self.episode[slot] = episode
        self.truncated[slot] = truncated
        self.added += 1

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        return self.buffer.sample(batch_size)

    def state(self) -> dict[str, Any]:
        """Everything, for a checkpoint: the buffer's save file (generator state included) as
        bytes and the step records of the stored slots."""
        n = len(self.buffer)
        return {
            "buffer": buffer_to_bytes(self.buffer),
            "env_step": self.env_step[:n].copy(),
            "episode": self.episode[:n].copy(),
            "truncated": self.truncated[:n].copy(),
            "added": self.added,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OnlineReplay:
        """Inverse of `state`."""
        buffer = buffer_from_bytes(state["buffer"])
        replay = cls.__new__(cls)
        replay.buffer = buffer
        n, cap = len(buffer), buffer.capacity
        replay.env_step = np.zeros(cap, dtype=np.int64)
        replay.episode = np.zeros(cap, dtype=np.int64)
        replay.truncated = np.zeros(cap, dtype=bool)
        replay.env_step[:n] = state["env_step"]
        replay.episode[:n] = state["episode"]
        replay.truncated[:n] = state["truncated"]
        replay.added = int(state["added"])
        return replay

    def arrays(self, before_step: int | None = None) -> dict[str, np.ndarray]:
        """The stored transitions in collection order (D4RL's key names), copies:
        observations, actions, rewards, next_observations, terminals, timeouts, env_step,
        episode; `before_step`: only those with env_step < before_step."""
        n = len(self.buffer)
        fields = self.buffer.fields()
        order = np.argsort(self.env_step[:n], kind="stable")
        if before_step is not None:
            order = order[self.env_step[order] < before_step]
        return {
            "observations": fields["obs"][order].copy(),
            "actions": fields["act"][order].copy(),
            "rewards": fields["rew"][order].copy(),
            "next_observations": fields["next_obs"][order].copy(),
            "terminals": fields["done"][order] > 0.5,
            "timeouts": self.truncated[order].copy(),
            "env_step": self.env_step[order].copy(),
            "episode": self.episode[order].copy(),
        }


def read_replay(path: str | os.PathLike[str], before_step: int | None = None) -> dict[str, Any]:
    """The replay buffer of an `eor train-online` run, in collection order.

    path: the run directory (its checkpoints/latest.pt) or a latest.pt file.
    before_step: keep only the transitions collected before this env step (a policy
        snapshot's `env_steps` in policies.json gives the buffer as it was at that snapshot).
    Returns `OnlineReplay.arrays`' dict. Raises ValueError when the file is not an online
    run's checkpoint, or with `before_step` once the buffer has wrapped (transitions from the
    start are gone). Without `before_step` a wrapped buffer gives the last buffer_size.
    """
    ckpt = load_checkpoint(path)
    if "replay" not in ckpt:
        raise ValueError(f"{path} is not an `eor train-online` checkpoint (no replay buffer)")
    replay = OnlineReplay.from_state(ckpt["replay"])
    lost = replay.added - len(replay)
    if before_step is not None and lost > 0:
        oldest = int(replay.env_step[: len(replay)].min())
        raise ValueError(
            f"before_step={before_step}: the buffer wrapped ({lost} oldest transitions "
            f"overwritten; the oldest kept is from env step {oldest}); rerun with "
            "buffer_size >= total_steps to keep them all"
        )
    return replay.arrays(before_step)
