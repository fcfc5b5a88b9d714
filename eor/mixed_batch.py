"""RAVL's mixed batches as torch tensors: real and model transitions in one C++ call.

    sampler = MixedBatchSampler(real, model, n_real=12, n_model=244, device=device)
    batch = sampler.sample()    # {"obs": [B, S], "act": [B, A], "rew": [B], "next_obs", "done"}

Rows `[0, n_real)` come from the real buffer, the rest from the model buffer
(`eor.buffer.sample_mixed`, docs/algorithm.md §3), written straight into arrays preallocated by
`eor.buffer.torch_batch`, so the update loop allocates nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from eor.buffer import ReplayBuffer, sample_mixed, torch_batch


class MixedBatchSampler:
    """Mixed batches as torch tensors: `sample_mixed([real, model], [n_real, n_model])`.

    On CPU the returned tensors are the preallocated tensors themselves (no copy; valid until
    the next `sample`). On CUDA they are pinned and copied with `non_blocking=True`; two slots
    alternate, and a slot is rewritten only after the CUDA event of its last copy has completed.
    A count of 0 leaves its buffer out (it may then be empty).
    """

    def __init__(
        self,
        real: ReplayBuffer,
        model: ReplayBuffer,
        n_real: int,
        n_model: int,
        device: torch.device,
    ) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        pairs = [(b, n) for b, n in ((real, n_real), (model, n_model)) if n > 0]
        self.buffers = [b for b, _ in pairs]
        self.counts = [n for _, n in pairs]
        slots = [
            torch_batch(n_real + n_model, real.obs_dim, real.act_dim, pin_memory=self.cuda)
            for _ in range(2 if self.cuda else 1)
        ]
        self._slots: list[dict[str, Tensor]] = [tensors for tensors, _ in slots]
        self._arrays: list[dict[str, Any]] = [arrays for _, arrays in slots]
        self._events = [torch.cuda.Event() if self.cuda else None for _ in self._slots]
        self._next = 0

    def sample(self) -> dict[str, Tensor]:
        i = self._next
        self._next = (i + 1) % len(self._slots)
        event = self._events[i]
        if event is not None:
            event.synchronize()  # the copy from this slot two batches ago is done
        sample_mixed(self.buffers, self.counts, out=self._arrays[i])
        if not self.cuda:
            return dict(self._slots[i])
        batch = {k: t.to(self.device, non_blocking=True) for k, t in self._slots[i].items()}
        assert event is not None
        event.record()
        return batch
