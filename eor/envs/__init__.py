"""Environment registry: D4RL names, gymnasium ids, reference returns, termination functions.

spec = eor.envs.get_env("halfcheetah-medium-v2")
spec.obs_dim, spec.act_dim, spec.gym_id, spec.normalized_score(returns)
done = spec.termination_fn(next_obs)        # torch [..., S] -> bool [...]
"""

from __future__ import annotations

from eor.envs.registry import (
    DATASET_KINDS,
    DATASET_VERSION,
    ENVS,
    EnvSpec,
    all_dataset_names,
    d4rl_file_name,
    dataset_name,
    get_env,
    make_env,
    make_vector_env,
    parse_dataset_name,
)

__all__ = [
    "DATASET_KINDS",
    "DATASET_VERSION",
    "ENVS",
    "EnvSpec",
    "all_dataset_names",
    "d4rl_file_name",
    "dataset_name",
    "get_env",
    "make_env",
    "make_vector_env",
    "parse_dataset_name",
]
