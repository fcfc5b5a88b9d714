"""Loading D4RL-style datasets into docs/algorithm.md §1's Q-learning form, with validation.

Raw layout (D4RL HDF5 or `.npz`), N rows:
    observations [N, S], actions [N, A], rewards [N], terminals [N], timeouts [N],
    optionally next_observations [N, S] (and infos/*, ignored).

Q-learning form (D4RL `qlearning_dataset`, docs/algorithm.md §1), transition i:
    (obs[i], act[i], rew[i], next[i], terminals[i])
    next[i] = next_observations[i] if the file has them, else obs[i + 1];
    rows with timeouts[i] true are dropped (obs[i + 1] starts a new episode), so a timeout is
    never a terminal; without next_observations the last row has no obs[i + 1] and is dropped.
The index arithmetic is done once, with boolean masks, so D4RL's old off-by-one (issues #145,
#204: the mask shifted against the next-state slice) cannot happen.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eor.envs import EnvSpec
from eor.fileio import sha256_file

logger = logging.getLogger("eor.data")

RAW_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


class DatasetError(ValueError):
    """A dataset file that is missing, unreadable or inconsistent."""


@dataclass
class Dataset:
    """A dataset in Q-learning form; every array float32 and C-contiguous.

    observations [N, S], actions [N, A], rewards [N], next_observations [N, S], terminals [N]
    (1.0 where the episode really ended, never at a timeout).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    name: str
    env: EnvSpec
    source: str
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    _checksum: str | None = field(default=None, repr=False, compare=False)
    _no_contact_forces: bool | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **info: Any) -> Dataset:
        """Build from the dict of `qlearning_arrays` plus name, env, source, ..."""
        return cls(
            observations=arrays["observations"],
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            next_observations=arrays["next_observations"],
            terminals=arrays["terminals"],
            **info,
        )

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def checksum(self) -> str | None:
        """sha256 of the source file (computed on first use, so loading stays fast); None
        when the data did not come from one file."""
        if self._checksum is None and self.path is not None:
            self._checksum = sha256_file(self.path)
        return self._checksum

    @property
    def contact_forces_missing(self) -> bool:
        """True when the recorder reported no contact forces: the env's contact-force columns
        are 0.0 in every row of observations and next_observations (D4RL's ant data). False
        for envs without such columns. See `contact_forces_missing`; computed once."""
        if self._no_contact_forces is None:
            self._no_contact_forces = contact_forces_missing(
                self.observations, self.next_observations, self.env
            )
        return self._no_contact_forces

    def to_buffer(self, seed: int = 0) -> Any:
        """The data in an `eor.ReplayBuffer` of capacity len(self) (one copy into C++ memory)."""
        import eor

        if not eor.CORE_AVAILABLE:
            raise RuntimeError(f"the C++ replay buffer is not available: {eor.CORE_ERROR}")
        return eor.ReplayBuffer.from_arrays(
            self.observations,
            self.actions,
            self.rewards,
            self.next_observations,
            self.terminals,
            seed=seed,
        )


def contact_forces_missing(
    observations: np.ndarray, next_observations: np.ndarray | None, env: EnvSpec
) -> bool:
    """True when `env.contact_force_columns` are exactly zero in every row of both arrays.

    Only an all-zero block means the recorder had no contact forces (mujoco-py 2, with which
    D4RL's ant data was made, reported none). A real simulator reports exactly zero forces
    too, whenever no body touches anything: in eor's own random-policy ant data about 70% of
    the rows have all 84 columns at zero. So zero rows, however many, are ordinary data as long
    as some row has a force; zeroing the evaluation env's forces then would hide information
    the policy was trained to use. Envs without contact-force columns: False.
    """
    cols = env.contact_force_columns
    if cols is None:
        return False
    start, stop = cols
    arrays = [observations] if next_observations is None else [observations, next_observations]
    for arr in arrays:
        if arr.ndim != 2 or arr.shape[1] < stop:
            raise ValueError(
                f"observations must have shape [N, >= {stop}] for {env.name}'s contact-force "
                f"columns {start}:{stop}, got {arr.shape}"
            )
        block = arr[:, start:stop]
        # Data with real forces shows one within a few rows: look at a short head first, so
        # that only all-zero data pays for a full pass.
        if block[:1024].any() or block.any():
            return False
    return True


# ----------------------------------------------------------------------------- raw files


def read_raw(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The raw arrays (keys of RAW_KEYS that exist) and metadata attributes of a D4RL-style
    HDF5 or `.npz` file. Raises DatasetError for an unreadable, truncated or non-HDF5 file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in RAW_KEYS if k in z.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DatasetError(
                f"{path}: not a readable .npz file (truncated or corrupt?): {exc}"
            ) from exc
        return raw, {}
    if not h5py.is_hdf5(path):
        raise DatasetError(
            f"{path}: not an HDF5 file (expected a D4RL-style .hdf5 or a .npz; "
            "a truncated download also looks like this)"
        )
    try:
        with h5py.File(path, "r") as f:
            # `[()]` reads a whole dataset straight into one fresh numpy array.
            raw = {k: f[k][()] for k in RAW_KEYS if k in f}
            attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        # TypeError/ValueError: a key that is a group, not an array (or an unreadable type).
        raise DatasetError(f"{path}: cannot read HDF5 file (truncated or corrupt?): {exc}") from exc
    return raw, attrs


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def validate_raw(raw: Mapping[str, np.ndarray], env: EnvSpec, where: str = "dataset") -> int:
    """Check keys, lengths, dimensions and finiteness; return the row count N.

    Raises DatasetError naming the key, the lengths or the rows at fault.
    """
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if "timeouts" not in raw and "next_observations" not in raw:
        # Without either, time-limit boundaries cannot be told apart from ordinary steps.
        missing.append("timeouts")
    if missing:
        raise DatasetError(
            f"{where}: missing key(s) {', '.join(map(repr, missing))}; "
            f"found {sorted(raw)}; a D4RL dataset needs {list(REQUIRED_KEYS) + ['timeouts']}"
        )
    for key, value in raw.items():
        dtype = np.asarray(value).dtype
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
            raise DatasetError(f"{where}: {key} has dtype {dtype}, expected a numeric array")
    lengths = {k: int(np.shape(v)[0]) if np.ndim(v) else 0 for k, v in raw.items()}
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise DatasetError(f"{where}: arrays differ in length: {shown}")
    n = lengths["observations"]
    if n == 0:
        raise DatasetError(f"{where}: the dataset is empty (0 rows)")
    want = {
        "observations": env.obs_dim,
        "next_observations": env.obs_dim,
        "actions": env.act_dim,
    }
    for key, dim in want.items():
        if key in raw:
            shape = np.shape(raw[key])
            if len(shape) != 2 or shape[1] != dim:
                raise DatasetError(
                    f"{where}: {key} has shape {shape}, but {env.name} ({env.gym_id}) needs "
                    f"[N, {dim}]"
                )
    for key in ("rewards", "terminals", "timeouts"):
        if key in raw:
            shape = np.shape(raw[key])
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise DatasetError(f"{where}: {key} has shape {shape}, expected [N]")
    for key in ("observations", "actions", "rewards", "next_observations"):
        if key in raw:
            arr = np.asarray(raw[key])
            if np.isfinite(arr).all():  # one fast pass; the per-row count only on failure
                continue
            finite = np.isfinite(arr).reshape(n, -1).all(axis=1)
            bad = np.flatnonzero(~finite)
            raise DatasetError(
                f"{where}: {key} has NaN or inf in {bad.size} of {n} rows "
                f"(first at row {int(bad[0])})"
            )
    return n


def qlearning_arrays(raw: Mapping[str, np.ndarray], *, copy: bool = True) -> dict[str, np.ndarray]:
    """docs/algorithm.md §1's Q-learning form of validated raw arrays (see the module docstring).

    Returns float32 C-contiguous observations, actions, rewards, next_observations, terminals.
    copy=False lets an output share memory with `raw` when nothing is dropped and the input is
    already float32 C-contiguous (the loader owns its freshly read arrays, so it saves a copy).
    """
    n = int(raw["observations"].shape[0])
    rewards = np.asarray(raw["rewards"]).reshape(n)
    terminals = np.asarray(raw["terminals"]).reshape(n).astype(bool)
    timeouts = (
        np.asarray(raw["timeouts"]).reshape(n).astype(bool)
        if "timeouts" in raw
        else np.zeros(n, dtype=bool)
    )
    obs, act = raw["observations"], raw["actions"]
    if "next_observations" in raw:
        return _select(obs, act, rewards, raw["next_observations"], terminals, ~timeouts, copy)
    # Row i needs obs[i + 1]; the last row has none and is dropped. All four slices below are
    # views aligned on i, so the same mask picks matching rows from each. They alias `obs`,
    # so they are always copied.
    keep = ~timeouts[:-1]
    return _select(obs[:-1], act[:-1], rewards[:-1], obs[1:], terminals[:-1], keep, True)


def episode_returns(
    rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Split raw rows into episodes at terminals or timeouts (D4RL raw layout).

    Returns (returns [E] float64, lengths [E] int64, tail): the E complete episodes, and the
    number of rows after the last episode end (an unfinished episode, left out of the stats).
    """
    n = len(rewards)
    ends = np.asarray(terminals, bool).reshape(n).copy()
    if timeouts is not None:
        ends |= np.asarray(timeouts, bool).reshape(n)
    last = np.flatnonzero(ends)  # index of each episode's final row
    if last.size == 0:
        return np.zeros(0), np.zeros(0, np.int64), n
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, np.float64).reshape(n))])
    starts = np.concatenate([[0], last[:-1] + 1])
    returns = csum[last + 1] - csum[starts]
    return returns, (last + 1 - starts).astype(np.int64), int(n - 1 - last[-1])


def _select(
    obs: np.ndarray,
    act: np.ndarray,
    rew: np.ndarray,
    next_obs: np.ndarray,
    term: np.ndarray,
    keep: np.ndarray,
    copy: bool,
) -> dict[str, np.ndarray]:
    """Rows where `keep` is True, as float32 C-contiguous arrays.

    Dropped rows (timeouts) are rare and split the kept rows into few long runs, so the rows
    are copied run by run (memcpy speed, and the cast to float32 happens in the same pass)
    rather than through a boolean-mask gather, which is about twice as slow.
    """
    m = int(keep.sum())
    edges = np.diff(np.concatenate([[0], keep.view(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)

    def pick(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if len(starts) == 1 and starts[0] == 0 and ends[0] == len(a):
            return (
                np.array(a, dtype=np.float32, order="C")
                if copy
                else np.ascontiguousarray(a, np.float32)
            )
        if len(starts) > 4096:  # many short runs: one gather is cheaper than a Python loop
            return np.ascontiguousarray(a[keep], dtype=np.float32)
        out = np.empty((m,) + a.shape[1:], np.float32)
        j = 0
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            out[j : j + e - s] = a[s:e]
            j += e - s
        return out

    return {
        "observations": pick(obs),
        "actions": pick(act),
        "rewards": pick(rew),
        "next_observations": pick(next_obs),
        "terminals": pick(term),
    }
