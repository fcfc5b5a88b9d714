"""Observation wrappers that make a gymnasium env report what a dataset's recorder reported.

Imported on first use by `make_env` (gymnasium is not imported by the registry itself).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ZeroContactForces(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Sets observation columns [start, stop) (the contact forces) to exactly 0.0.

    D4RL's ant data was recorded with mujoco-py 2, which reported no contact forces: those 84
    columns are zero in every row, so a policy trained on it has never seen them move. Its
    evaluation env must show it the same zeros. The observation keeps its length (111 for ant)
    and every other column is the wrapped env's own value; rewards, terminations and the
    simulator state are untouched.
    """

    def __init__(self, env: gym.Env[Any, Any], columns: tuple[int, int]) -> None:
        start, stop = (int(c) for c in columns)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 1 or not 0 <= start < stop <= shape[0]:
            raise ValueError(
                f"columns must be (start, stop) with 0 <= start < stop <= obs_dim; got {columns!r} "
                f"for an observation space of shape {shape}"
            )
        gym.utils.RecordConstructorArgs.__init__(self, columns=(start, stop))
        gym.ObservationWrapper.__init__(self, env)
        self.columns = (start, stop)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        out = np.array(observation, copy=True)
        out[self.columns[0] : self.columns[1]] = 0.0
        return out
