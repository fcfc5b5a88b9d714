"""The replay buffer: a thin, documented wrapper around the C++ core in `eor._core`.

A `ReplayBuffer` is a fixed-capacity FIFO ring of float32 transitions

    obs [S] | act [A] | rew [] | next_obs [S] | done []

stored as contiguous rows in C++ memory (csrc/include/eor/replay_buffer.hpp). Sampling draws
slot indices with the buffer's own xoshiro256** generator: distinct within a batch by default,
by a sparse Fisher-Yates shuffle that costs O(batch), never O(len). Batches are dicts of numpy
float32 arrays (`torch.from_numpy` makes tensors without a copy); pass `out=` to write into
arrays you own (for example numpy views of pinned torch tensors, see `torch_batch`) so the hot
loop allocates nothing. The GIL is released while adding and sampling, and each buffer has a
lock, so one thread may add while another samples.

`ReplayBuffer` holds a `eor._core.ReplayBufferCore` in `_cpp` (composition, not inheritance): the core's
shape and storage are fixed for its life, `load` builds a new buffer, and the `fields()` views
keep the core, hence the memory they read, alive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eor import _core

FIELDS = ("obs", "act", "rew", "next_obs", "done")
Batch = dict[str, np.ndarray]
BufferFileError = _core.BufferFileError

__all__ = [
    "FIELDS",
    "Batch",
    "BufferFileError",
    "ReplayBuffer",
    "sample_mixed",
    "empty_batch",
    "torch_batch",
]


class ReplayBuffer:
    """Fixed-capacity FIFO buffer of `(obs, act, rew, next_obs, done)` float32 transitions.

    Args:
        capacity: number of transitions kept; once full, each add overwrites the oldest rows.
            Memory (`capacity · 4 · (2S + A + 2)` bytes, each row padded to a cache-friendly
            stride: 192 bytes for HalfCheetah) is reserved at once but committed by the OS only
            as rows are written, so a 10M-transition buffer (1.9 GB) is cheap until filled.
        obs_dim: S, the observation width.
        act_dim: A, the action width.
        seed: seeds the buffer's own generator (xoshiro256** via splitmix64): the same seed
            gives the same index stream on every run and platform.

    Slots: while not full, slots `[0, len)` hold the rows in insertion order; once full, the
    next row goes to slot `position`. Indices (`sample_indices`, `gather`) are slots.

    Not picklable or copyable (a copy would share the C++ memory): use `save` and `load`.
    """

    __slots__ = ("_cpp",)

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self._cpp = _core.ReplayBufferCore(capacity, obs_dim, act_dim, seed)

    @classmethod
    def _wrap(cls, core: _core.ReplayBufferCore) -> ReplayBuffer:
        buf = cls.__new__(cls)
        buf._cpp = core
        return buf

    def __reduce__(self) -> Any:
        raise TypeError(
            "ReplayBuffer cannot be pickled or copied (a copy would share its C++ memory); "
            "use buf.save(path) and ReplayBuffer.load(path)"
        )

    def __len__(self) -> int:
        return len(self._cpp)

    @property
    def capacity(self) -> int:
        """Number of transitions kept."""
        return self._cpp.capacity

    @property
    def obs_dim(self) -> int:
        """S, the observation width."""
        return self._cpp.obs_dim

    @property
    def act_dim(self) -> int:
        """A, the action width."""
        return self._cpp.act_dim

    @property
    def row_width(self) -> int:
        """Floats per stored transition: 2S + A + 2."""
        return self._cpp.row_width

    @property
    def seed(self) -> int:
        """The seed the generator started from."""
        return self._cpp.seed

    @property
    def position(self) -> int:
        """The slot the next added row goes to."""
        return self._cpp.position

    def clear(self) -> None:
        """Empty the buffer; its memory, capacity and generator are kept."""
        self._cpp.clear()

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(len={len(self)}, capacity={self.capacity}, obs_dim={self.obs_dim}, "
            f"act_dim={self.act_dim}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ adding

    def add(
        self,
        obs: Any,
        act: Any,
        rew: Any,
        next_obs: Any,
        done: Any,
        *,
        drop_nonfinite: bool = False,
    ) -> int:
        """Append n transitions and return how many were stored.

        Shapes: obs `[n, S]`, act `[n, A]`, rew `[n]`, next_obs `[n, S]`, done `[n]` (`[n, 1]`
        is accepted for rew and done). Any numeric dtype; float64 is converted to float32 in
        one pass, float32 C-contiguous input is read in place. A wrong shape raises ValueError
        naming the field and the expected shape.

        A row with NaN or inf in any field (a diverging model rollout) raises ValueError with the
        count of such rows, and nothing is stored; with `drop_nonfinite=True` those rows are
        skipped and the return value counts only the rows stored.
        """
        return self._cpp.add(obs, act, rew, next_obs, done, drop_nonfinite)

    @classmethod
    def from_arrays(
        cls,
        obs: Any,
        act: Any,
        rew: Any,
        next_obs: Any,
        done: Any,
        *,
        seed: int = 0,
        drop_nonfinite: bool = False,
    ) -> ReplayBuffer:
        """A full buffer holding exactly these transitions (capacity = n): one copy into C++.

        For datasets: `ReplayBuffer.from_arrays(ds.observations, ds.actions, ds.rewards,
        ds.next_observations, ds.terminals)`. Shapes as in `add`; n must be >= 1.
        """
        obs_arr = np.asarray(obs)
        act_arr = np.asarray(act)
        if obs_arr.ndim != 2 or obs_arr.shape[0] == 0 or obs_arr.shape[1] == 0:
            raise ValueError(
                f"from_arrays: obs must have shape [n, S] with n, S >= 1, got {list(obs_arr.shape)}"
            )
        if act_arr.ndim != 2:
            raise ValueError(f"from_arrays: act must have shape [n, A], got {list(act_arr.shape)}")
        buf = cls(obs_arr.shape[0], obs_arr.shape[1], act_arr.shape[1], seed)
        buf.add(obs_arr, act_arr, rew, next_obs, done, drop_nonfinite=drop_nonfinite)
        return buf

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        batch_size: int,
        *,
        replace: bool = False,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> Batch:
        """Draw `batch_size` transitions uniformly at random.

        Distinct slots within the batch (docs/algorithm.md §3: "samples are distinct within a batch"), in
        uniformly random order, unless `replace=True`. Returns
        `{"obs": [B, S], "act": [B, A], "rew": [B], "next_obs": [B, S], "done": [B]}`, float32.
        With `out` (a mapping with those keys holding writeable C-contiguous float32 arrays of
        those shapes), the rows are written there and `out` itself is returned.

        Raises ValueError on an empty buffer, or when more distinct rows are asked than stored.
        """
        return self._cpp.sample(batch_size, replace, out)

    def sample_obs(
        self, n: int, *, replace: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Observations of n distinct random transitions, `[n, S]` float32: rollout start states."""
        return self._cpp.sample_obs(n, replace, out)

    def sample_indices(self, k: int, *, replace: bool = False) -> np.ndarray:
        """The slots that `sample(k, replace=replace)` would read, `[k]` int64.

        It advances the generator exactly as `sample` does: after `state = get_state()`,
        `gather(sample_indices(k))` equals `set_state(state); sample(k)`.
        """
        return self._cpp.sample_indices(k, replace)

    def gather(self, indices: Any, *, out: Mapping[str, np.ndarray] | None = None) -> Batch:
        """The transitions in the given slots (each in `[0, len)`, else IndexError)."""
        return self._cpp.gather(indices, out)

    def empty_batch(self, batch_size: int) -> Batch:
        """Freshly allocated arrays shaped like `sample(batch_size)`'s result, for `out=`."""
        return empty_batch(batch_size, self.obs_dim, self.act_dim)

    # ------------------------------------------------------------------ inspection

    def fields(self) -> Batch:
        """Read-only numpy views of the stored slots `[0, len)`, one per field, no copy.

        For statistics (e.g. `fields()["obs"].mean(0)`). Rows are in slot order, not insertion
        order, once the buffer has wrapped. Each view keeps the buffer's memory alive, even after
        the buffer itself is gone; it shows later adds to the slots it covers (copy it to keep
        a snapshot). Do not read them while another thread adds.
        """
        return self._cpp.fields()

    # ------------------------------------------------------------------ generator state

    def get_state(self) -> dict[str, Any]:
        """The generator state, for exact resume: `{"bit_generator": "xoshiro256**", "state": [4 ints]}`."""
        return {"bit_generator": "xoshiro256**", "state": list(self._cpp.rng_state())}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from `get_state()` (the contents are not touched)."""
        if not isinstance(state, Mapping) or state.get("bit_generator") != "xoshiro256**":
            raise ValueError(
                "set_state: expected a dict from get_state() with bit_generator 'xoshiro256**', "
                f"got {state!r}"
            )
        self._cpp.set_rng_state(list(state["state"]))

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write contents, position, size, seed and generator state to `path`.

        Format: a 120-byte header (magic, version, dims, counters, generator state, checksums)
        then the `len` stored rows. The file appears atomically (written to `path.tmp`, renamed).
        """
        self._cpp.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReplayBuffer:
        """A new buffer read from a file written by `save`: the file's capacity, dims, contents,
        position, size, seed and generator state.

        A missing file raises FileNotFoundError; a truncated, corrupt or foreign file raises
        `eor.buffer.BufferFileError` (a ValueError) saying which check failed.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load: no replay buffer file at {path!r}")
        return cls._wrap(_core.ReplayBufferCore.load(path))


def sample_mixed(
    buffers: Sequence[ReplayBuffer],
    counts: Sequence[int],
    *,
    replace: bool = False,
    out: Mapping[str, np.ndarray] | None = None,
) -> Batch:
    """One batch drawn from several buffers in a single C++ call (RAVL: `[real, model], [12, 244]`).

    Rows `[0, counts[0])` come from `buffers[0]`, the next `counts[1]` from `buffers[1]`, and so
    on; each part is distinct within its buffer unless `replace`. A count of 0 skips its buffer
    (it may then be empty). Each buffer's own generator is used. Returns the same dict as
    `ReplayBuffer.sample(sum(counts))`, or `out` filled in.
    """
    try:
        cores = [b._cpp for b in buffers]
    except AttributeError:
        for i, b in enumerate(buffers):
            if not isinstance(b, ReplayBuffer):
                raise TypeError(
                    f"sample_mixed: buffers[{i}] must be an eor.ReplayBuffer, "
                    f"got {type(b).__name__}"
                ) from None
        raise
    return _core.sample_mixed(cores, counts, replace, out)


def empty_batch(batch_size: int, obs_dim: int, act_dim: int) -> Batch:
    """Uninitialised float32 arrays with the shapes of a sampled batch (for `out=`)."""
    return {
        "obs": np.empty((batch_size, obs_dim), np.float32),
        "act": np.empty((batch_size, act_dim), np.float32),
        "rew": np.empty((batch_size,), np.float32),
        "next_obs": np.empty((batch_size, obs_dim), np.float32),
        "done": np.empty((batch_size,), np.float32),
    }


def torch_batch(
    batch_size: int, obs_dim: int, act_dim: int, *, pin_memory: bool = False
) -> tuple[dict[str, Any], Batch]:
    """Preallocated CPU torch tensors and numpy views of the same memory.

    Pass the numpy dict as `out=` to `sample` / `sample_mixed`; the tensors then hold the batch
    with no allocation and no copy (`pin_memory=True` for fast non-blocking GPU transfer).
    """
    import torch

    tensors = {
        k: torch.empty(v.shape, dtype=torch.float32, pin_memory=pin_memory)
        for k, v in empty_batch(batch_size, obs_dim, act_dim).items()
    }
    return tensors, {k: t.numpy() for k, t in tensors.items()}
