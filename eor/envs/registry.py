"""The environment table: dimensions, gymnasium ids, D4RL reference returns, termination.

D4RL's v2 datasets were recorded with gym's mujoco-py `*-v3` envs. gymnasium's `*-v4` envs keep
those dynamics on the official `mujoco` bindings, so they are the evaluation envs (docs/algorithm.md §1).
Ant needs `use_contact_forces=True` to give D4RL's 111-dim observations (13 qpos[2:] + 14 qvel +
84 clipped external contact forces). Note that mujoco-py 2.x returned all-zero contact forces,
so D4RL's ant data has zeros in those 84 columns while the v4 env reports real ones:
`EnvSpec.contact_force_columns` names those columns, and `make_env(...,
zero_contact_forces=True)` gives an env that zeroes them (docs/algorithm.md §1).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

logger = logging.getLogger("eor.envs")

DATASET_KINDS: tuple[str, ...] = (
    "random",
    "medium",
    "medium-replay",
    "medium-expert",
    "expert",
    "full-replay",
)
DATASET_VERSION = "v2"


@dataclass(frozen=True)
class EnvSpec:
    """One row of the registry.

    `termination_fn(next_obs [..., S]) -> bool [...]` is docs/algorithm.md §3's batched rule on torch tensors
    (`termination` names its function in eor.envs.termination, imported on first use so that
    the registry, `eor collect` and `eor datasets` do not import torch).
    """

    name: str
    obs_dim: int
    act_dim: int
    gym_id: str
    ref_min_score: float
    ref_max_score: float
    termination: str = field(repr=False)
    gym_kwargs: dict[str, Any] = field(default_factory=dict)
    contact_force_columns: tuple[int, int] | None = None
    """Observation columns [start, stop) holding contact forces (ant: 27..111), else None."""

    @property
    def gym_version(self) -> str:
        """The gymnasium env version, e.g. "v4"."""
        return self.gym_id.rsplit("-", 1)[1]

    @overload
    def normalized_score(self, returns: float) -> float: ...
    @overload
    def normalized_score(self, returns: np.ndarray) -> np.ndarray: ...

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """D4RL normalised score: 100 * (return - ref_min) / (ref_max - ref_min)."""
        scale = 100.0 / (self.ref_max_score - self.ref_min_score)
        if np.isscalar(returns):
            return float((float(returns) - self.ref_min_score) * scale)  # type: ignore[arg-type]
        return (np.asarray(returns, dtype=np.float64) - self.ref_min_score) * scale

    def termination_fn(self, next_obs: Tensor) -> Tensor:
        """done flags [...] (bool) for predicted next states [..., obs_dim], on their device."""
        if next_obs.ndim == 0 or next_obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"termination_fn({self.name}): next_obs must have shape [..., {self.obs_dim}], "
                f"got {tuple(next_obs.shape)}"
            )
        module = importlib.import_module("eor.envs.termination")
        return getattr(module, self.termination)(next_obs)

    def dataset_names(self) -> list[str]:
        """All D4RL dataset names of this env, e.g. halfcheetah-medium-v2."""
        return [dataset_name(self.name, kind) for kind in DATASET_KINDS]


ENVS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec(
        "halfcheetah", 17, 6, "HalfCheetah-v4", -280.178953, 12135.0, "halfcheetah_termination"
    ),
    "hopper": EnvSpec("hopper", 11, 3, "Hopper-v4", -20.272305, 3234.3, "hopper_termination"),
    "walker2d": EnvSpec("walker2d", 17, 6, "Walker2d-v4", 1.629008, 4592.3, "walker2d_termination"),
    "ant": EnvSpec(
        "ant",
        111,
        8,
        "Ant-v4",
        -325.6,
        3879.7,
        "ant_termination",
        {"use_contact_forces": True},
        contact_force_columns=(27, 111),
    ),
}


def dataset_name(env: str, kind: str) -> str:
    """("halfcheetah", "medium-replay") -> "halfcheetah-medium-replay-v2"."""
    return f"{env}-{kind}-{DATASET_VERSION}"


def all_dataset_names() -> list[str]:
    """Every valid dataset name, env-major."""
    return [n for spec in ENVS.values() for n in spec.dataset_names()]


def d4rl_file_name(name: str) -> str:
    """D4RL's cache file name: "halfcheetah-medium-replay-v2" -> "halfcheetah_medium_replay-v2.hdf5"."""
    env, kind = parse_dataset_name(name)
    return f"{env}_{kind.replace('-', '_')}-{DATASET_VERSION}.hdf5"


def _unknown(what: str, name: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")


def parse_dataset_name(name: str) -> tuple[str, str]:
    """ "halfcheetah-medium-replay-v2" -> ("halfcheetah", "medium-replay").

    Raises ValueError listing the valid names and suggesting the nearest one.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    for env in ENVS:
        prefix, suffix = f"{env}-", f"-{DATASET_VERSION}"
        if name.startswith(prefix) and name.endswith(suffix):
            kind = name[len(prefix) : -len(suffix)]
            if kind in DATASET_KINDS:
                return env, kind
    raise _unknown("dataset name", name, all_dataset_names())


def get_env(name: str | EnvSpec) -> EnvSpec:
    """The EnvSpec of an env name ("hopper") or a dataset name ("hopper-medium-v2")."""
    if isinstance(name, EnvSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"env name must be a str or EnvSpec, got {type(name).__name__}")
    if name in ENVS:
        return ENVS[name]
    try:
        return ENVS[parse_dataset_name(name)[0]]
    except ValueError:
        raise _unknown("env or dataset name", name, list(ENVS) + all_dataset_names()) from None


def _route_mujoco_warnings() -> None:
    """Send MuJoCo's compiler warnings to the "eor.envs" logger.

    By default MuJoCo prints them and appends them to MUJOCO_LOG.TXT in the working directory
    (HalfCheetah's XML triggers a harmless 'settotalmass is deprecated' on every make).
    Installed once, and only when no one else has installed a handler.
    """
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(lambda msg: logger.debug("MuJoCo: %s", msg))


def _check_zero_contact_forces(spec: EnvSpec, zero_contact_forces: bool) -> None:
    if not isinstance(zero_contact_forces, (bool, np.bool_)):
        raise TypeError(
            f"zero_contact_forces must be a bool, got {type(zero_contact_forces).__name__}"
        )
    if zero_contact_forces and spec.contact_force_columns is None:
        raise ValueError(
            f"zero_contact_forces=True: {spec.name} ({spec.gym_id}) has no contact-force "
            "columns; only ant has them"
        )


def make_env(
    name: str | EnvSpec,
    seed: int | None = None,
    *,
    zero_contact_forces: bool = False,
    **kwargs: Any,
) -> Any:
    """A gymnasium env for `name` (env or dataset name), 1000-step time limit.

    With `seed`, the env is reset once with that seed (and its action space seeded), so later
    `reset()` calls continue a reproducible stream. Extra kwargs go to `gymnasium.make`.
    zero_contact_forces: report exactly 0.0 in `spec.contact_force_columns` (ant only; for a
    run whose dataset recorded no contact forces, see `eor.envs.wrappers.ZeroContactForces`).
    """
    import gymnasium as gym

    spec = get_env(name)
    _check_zero_contact_forces(spec, zero_contact_forces)
    _route_mujoco_warnings()
    with warnings.catch_warnings():
        # We choose the v4 envs on purpose (docs/algorithm.md §1); gymnasium's "out of date" notice is noise.
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        env = gym.make(spec.gym_id, **{**spec.gym_kwargs, **kwargs})
    if zero_contact_forces:
        from eor.envs.wrappers import ZeroContactForces

        assert spec.contact_force_columns is not None  # checked above
        env = ZeroContactForces(env, spec.contact_force_columns)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector_env(
    name: str | EnvSpec,
    num_envs: int,
    seed: int | None = None,
    *,
    asynchronous: bool = False,
    autoreset_mode: str | None = None,
    zero_contact_forces: bool = False,
) -> Any:
    """A gymnasium vector env of `num_envs` copies (SyncVectorEnv, or AsyncVectorEnv).

    `autoreset_mode`: gymnasium's AutoresetMode value ("NextStep" default, "SameStep",
    "Disabled"). With `seed`, env i is reset with seed + i. `zero_contact_forces`: as in
    `make_env`, for every copy.
    """
    import gymnasium as gym

    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    spec = get_env(name)
    _check_zero_contact_forces(spec, zero_contact_forces)
    mode = gym.vector.AutoresetMode(autoreset_mode or "NextStep")
    zero = bool(zero_contact_forces)

    def thunk() -> Any:
        return make_env(spec, zero_contact_forces=zero)

    fns = [thunk] * num_envs
    if asynchronous:
        venv: Any = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
    else:
        venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    if seed is not None:
        venv.reset(seed=seed)
        venv.action_space.seed(seed)
    return venv
