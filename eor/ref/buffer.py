"""Plain numpy/torch references of the replay buffer (`eor.buffer`, `csrc/`): the FIFO ring
buffer, the mixed-batch sampler and the xoshiro256** stream the C++ core draws from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# ============================================================================ replay buffer
# (numpy reference ring buffer; owned by the C++ buffer work)

BUFFER_FIELDS = ("obs", "act", "rew", "next_obs", "done")
_MASK64 = (1 << 64) - 1


class RingBufferRef:
    """Plain numpy FIFO ring buffer: the specification of `eor.ReplayBuffer`'s storage.

    One float32 array per field, `[capacity, ...]`. Row r of an add goes to slot `position`,
    which then advances modulo capacity; `len` grows to capacity and stays there. Rows with a
    NaN or inf in any field are rejected (ValueError) or, with `drop_nonfinite`, skipped.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.data = {
            "obs": np.zeros((capacity, obs_dim), np.float32),
            "act": np.zeros((capacity, act_dim), np.float32),
            "rew": np.zeros((capacity,), np.float32),
            "next_obs": np.zeros((capacity, obs_dim), np.float32),
            "done": np.zeros((capacity,), np.float32),
        }
        self.size = 0
        self.position = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, rew, next_obs, done, drop_nonfinite: bool = False) -> int:
        rows = {
            "obs": np.asarray(obs, np.float32).reshape(-1, self.obs_dim),
            "act": np.asarray(act, np.float32).reshape(-1, self.act_dim),
            "rew": np.asarray(rew, np.float32).reshape(-1),
            "next_obs": np.asarray(next_obs, np.float32).reshape(-1, self.obs_dim),
            "done": np.asarray(done, np.float32).reshape(-1),
        }
        finite = np.ones(len(rows["obs"]), bool)
        for v in rows.values():
            finite &= np.isfinite(v.reshape(len(finite), -1)).all(axis=1) if v.size else True
        if not finite.all() and not drop_nonfinite:
            raise ValueError(f"{int((~finite).sum())} rows contain NaN or inf")
        m = int(finite.sum())
        slots = (self.position + np.arange(m)) % self.capacity  # row r goes to position + r
        last = slice(max(m - self.capacity, 0), m)  # earlier rows would be overwritten anyway
        for k in BUFFER_FIELDS:
            self.data[k][slots[last]] = rows[k][finite][last]
        self.position = (self.position + m) % self.capacity
        self.size = min(self.size + m, self.capacity)
        return m

    @classmethod
    def from_arrays(cls, obs, act, rew, next_obs, done) -> RingBufferRef:
        """A full buffer (capacity = n) whose field arrays are float32 copies of the inputs."""
        obs = np.asarray(obs, np.float32)
        ref = cls(len(obs), obs.shape[1], np.shape(act)[1])
        for k, v in zip(BUFFER_FIELDS, (obs, act, rew, next_obs, done), strict=True):
            ref.data[k][...] = np.asarray(v, np.float32).reshape(ref.data[k].shape)
        ref.size = len(obs)
        return ref

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Per-field fancy indexing of slots `idx` (each in [0, len))."""
        assert np.all((idx >= 0) & (idx < self.size))
        return {k: v[idx] for k, v in self.data.items()}

    def sample(
        self, batch_size: int, rng: np.random.Generator, replace: bool = False
    ) -> dict[str, np.ndarray]:
        """numpy's own sampler: `rng.choice(len, batch_size, replace)` then `gather`."""
        return self.gather(rng.choice(self.size, batch_size, replace=replace))

    @staticmethod
    def sample_mixed(
        buffers: Sequence[RingBufferRef], counts: Sequence[int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Benchmark baseline (a): per buffer and per field fancy indexing, then np.concatenate."""
        parts = [b.sample(n, rng) for b, n in zip(buffers, counts, strict=True)]
        return {k: np.concatenate([p[k] for p in parts]) for k in BUFFER_FIELDS}


class TorchBufferRef:
    """Benchmark baseline (b): the reference implementation's way of storing and sampling.

    One torch tensor per field; distinct indices from `Generator.choice(len, B, replace=False)`;
    each tensor indexed with them; a mixed batch is `torch.cat` of the per-buffer batches.
    """

    def __init__(self, fields: dict[str, np.ndarray]) -> None:
        self.data = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}
        self.size = len(self.data["obs"])

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Tensor]:
        idx = torch.from_numpy(rng.choice(self.size, batch_size, replace=False))
        return {k: v[idx] for k, v in self.data.items()}

    @staticmethod
    def sample_mixed(
        buffers: Sequence[TorchBufferRef], counts: Sequence[int], rng: np.random.Generator
    ) -> dict[str, Tensor]:
        parts = [b.sample(n, rng) for b, n in zip(buffers, counts, strict=True)]
        return {k: torch.cat([p[k] for p in parts]) for k in BUFFER_FIELDS}


class Xoshiro256Ref:
    """Pure-Python model of the buffer's generator (csrc/include/eor/random.hpp).

    splitmix64 seeding, xoshiro256** outputs, Lemire's bounded integers, and the sparse
    Fisher-Yates draw of k distinct integers. Same seed, same stream as the C++ code.
    """

    def __init__(self, seed: int = 0, state: Sequence[int] | None = None) -> None:
        if state is not None:
            self.s = [int(w) & _MASK64 for w in state]
            return
        x, self.s = seed & _MASK64, []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & _MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & _MASK64

    def next(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def bounded(self, n: int) -> int:
        """Uniform in [0, n): high word of next() · n, rejecting low words below 2^64 mod n."""
        m = self.next() * n
        if (m & _MASK64) < n:
            threshold = (1 << 64) % n
            while (m & _MASK64) < threshold:
                m = self.next() * n
        return m >> 64

    def distinct(self, n: int, k: int) -> list[int]:
        """k distinct integers from [0, n) in uniformly random order.

        2k <= n: draw `bounded(n)` until the value is new (rejection). Otherwise: k steps of a
        Fisher-Yates shuffle of range(n).
        """
        out: list[int] = []
        if 2 * k <= n:
            seen: set[int] = set()
            for _ in range(k):
                r = self.bounded(n)
                while r in seen:
                    r = self.bounded(n)
                seen.add(r)
                out.append(r)
            return out
        moved: dict[int, int] = {}  # the shuffled array, where it differs from the identity
        for i in range(k):
            j = i + self.bounded(n - i)
            out.append(moved.get(j, j))
            moved[j] = moved.get(i, i)
        return out

    def indices(self, n: int, k: int, replace: bool = False) -> list[int]:
        """The slots `eor.ReplayBuffer.sample(k)` reads from a buffer holding n rows."""
        return [self.bounded(n) for _ in range(k)] if replace else self.distinct(n, k)
