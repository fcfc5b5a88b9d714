"""The RAVL update as one captured CUDA graph (`eor train-agent --cuda_graph`).

NOT YET RUN ON A GPU: this module was written and tested on machines without one. The CPU
tests cover everything but the capture itself (static buffers, the update reading only them,
bit-for-bit equality with `RAVL.update`, the warm-up / capture / replay / re-capture sequence
through a stand-in for the CUDA calls); the tests marked `gpu` (captured against eager on CUDA,
replay after a reload) have not been run. Hence `--cuda_graph` is off by default until it has
been measured on a GPU.

Why: a RAVL update at the default sizes (B = 256, N = 10, H = 256) is a few hundred small
kernels (three optimiser steps, two backward passes, the closed-form critic gradients, Polyak),
so on a GPU its time goes to launching them from Python. Its shapes never change, so the whole
update (`RAVL._update_step`: the α, actor and critic steps with their fused Adam steps, and
Polyak) can be captured once into a `torch.cuda.CUDAGraph` and replayed per update, one launch.

How (following the PyTorch docs on whole-network capture, torch.cuda.graphs in torch 2.13):

* static inputs: obs, act, rew, next_obs, done are allocated once on the learner's device;
  each batch is `copy_`-ed into them (no conversion: a wrong shape or dtype is a ValueError
  naming the key). The update reads only these tensors, so the caller may reuse its arrays at
  once (a host batch is copied synchronously; the trainer's batches are already on the device).
* warm-up: the first `warmup` updates (and the first after a reset) run eagerly on a side stream,
  as the docs ask, so lazily made state (Adam's moments, cuBLAS handles, Triton compilation and
  autotuning) exists before the capture. They are real updates, not throw-away iterations.
* capture: the next update captures `_update_step` on the static inputs, with the learner's
  `torch.Generator` registered (`CUDAGraph.register_generator_state`) so that every replay draws
  fresh noise, the stream eager updates would draw, and with `capturable=True` on the three
  Adam optimisers for the capture only (fused Adam's kernels do not read the flag in torch 2.13;
  it gates torch's capture health check, and leaving it on would warn on every eager step and
  change the state dicts). Capturing runs nothing; the graph is then replayed for that update.
* static outputs: the graph writes the losses (and α, when it is learned) into tensors
  allocated once; after the replay they are read back in one host transfer
  (`check_finite=True`) or folded into the learner's device-side non-finite flag
  (`check_finite=False`: no host read), exactly as `RAVL.update`, `NonFiniteLossError` included.
* `log=True` updates run eagerly, outside the graph, on the same static inputs (the logging
  stats need an extra critic forward and draw that the graph does not hold); they are the same
  update, so the learner stays on one stream of results whichever way an update ran.
* re-capture: the graph refers to the optimisers' state tensors by address, and
  `Optimizer.load_state_dict` replaces them. A load is detected (the optimisers' `state` dicts
  are new objects) and the graph is dropped and recaptured after a new warm-up; `reset()` does
  so explicitly. Parameters, log α and the generator are restored in place by
  `RAVL.load_state_dict` and need nothing.

What `RAVL._update_step` must keep for this to work: no host sync (`.item()`, `.tolist()`,
`bool(tensor)`), no Python branch on a tensor value and no fresh Python-side state per call. On
CUDA it holds today: the actor step's min-critic backward takes its sync-free dense path there
(`VectorizedCritic.min_q_and_action_grad`), and the input conversions of `RAVL._batch_tensors`
are replaced here by the static copies.

On the CPU (or any device but CUDA) `GraphedUpdate` runs the same body eagerly on its static
inputs: the results are bit-for-bit those of `RAVL.update` (tested); `eor train-agent` refuses
`--cuda_graph` without CUDA instead of silently running eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from eor.agent.ravl import BATCH_KEYS, RAVL, batch_items

__all__ = ["GraphedUpdate"]


class _Graph(Protocol):
    def replay(self) -> None: ...


class _CudaGraphs:
    """The CUDA calls of `GraphedUpdate` (one side stream per wrapper). CPU tests substitute a
    stand-in with the same three methods."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    @contextmanager
    def side_stream(self) -> Iterator[None]:
        """Run the block on the side stream, ordered after and before the current stream's
        work (the docs' warm-up pattern)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def capture(self, body: Callable[[], None], generator: torch.Generator) -> _Graph:
        """A CUDAGraph of `body` (captured, not run), drawing from `generator` on replay."""
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(generator)
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
            body()
        return graph


class GraphedUpdate:
    """`RAVL.update` on static input tensors, replayed as one CUDA graph on CUDA (module
    docstring); eager on any other device.

    Args:
        learner: the RAVL learner to update (its parameters, optimisers, generator and counters
            are the state; this wrapper only adds the buffers and the graph).
        batch_size: B, fixed: every batch must hold exactly B transitions.
        warmup: eager updates (on a side stream) before a capture, and after each reset (>= 1).
        capture: None: capture exactly when the learner is on CUDA; False: never (eager on the
            static inputs, e.g. to compare on a GPU); True: CUDA required (ValueError otherwise).

    `update(batch, log=..., check_finite=...)` takes and returns what `RAVL.update` does.
    """

    def __init__(
        self,
        learner: RAVL,
        batch_size: int,
        *,
        warmup: int = 3,
        capture: bool | None = None,
        _graphs: Any = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("warmup", warmup)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        device = learner.device
        if capture is None:
            capture = device.type == "cuda" or _graphs is not None
        if capture and device.type != "cuda" and _graphs is None:
            raise ValueError(
                f"capture=True needs a learner on CUDA (CUDA graphs), this one is on {device}"
            )
        self.learner = learner
        self.batch_size = int(batch_size)
        self.warmup = int(warmup)
        self.capture = bool(capture)
        c = learner.config
        b = self.batch_size
        shapes = {
            "obs": (b, c.obs_dim),
            "act": (b, c.act_dim),
            "rew": (b,),
            "next_obs": (b, c.obs_dim),
            "done": (b,),
        }
        # The static inputs: allocated once, rewritten by every update, the only inputs the
        # update reads.
        self.static: dict[str, Tensor] = {
            k: torch.zeros(shapes[k], device=device, dtype=learner.dtype) for k in BATCH_KEYS
        }
        # The static outputs, written by the graph (and read after each replay).
        self._losses = torch.zeros(len(learner.loss_keys), device=device, dtype=learner.dtype)
        self._alpha = torch.zeros((), device=device, dtype=learner.dtype)
        self._graphs: Any = None
        if self.capture:
            self._graphs = _graphs if _graphs is not None else _CudaGraphs(device)
        self._graph: _Graph | None = None
        self._graph_states: tuple[object, ...] = ()
        self._eager_since_reset = 0
        self.captures = 0
        """Graphs captured so far (1 per run, plus one per reload)."""
        self.replays = 0
        """Updates run by replaying a graph."""

    @property
    def captured(self) -> bool:
        """Whether a graph is held (the next non-log update replays it)."""
        return self._graph is not None

    def reset(self) -> None:
        """Drop the graph: the next `warmup` updates run eagerly, then a new capture. Needed
        after anything replaces a tensor the graph reads (done automatically after the
        optimisers' `load_state_dict`, e.g. through `RAVL.load_state_dict`)."""
        self._graph = None
        self._graph_states = ()
        self._eager_since_reset = 0

    # ------------------------------------------------------------------------------- update
    def update(
        self,
        batch: Mapping[str, Any] | Sequence[Any],
        *,
        log: bool = False,
        check_finite: bool = True,
    ) -> dict[str, float]:
        """One RAVL update on `batch` (as `RAVL.update`: same arguments, result and errors).

        The batch is copied into the static inputs first; then, on CUDA, a warm-up update
        (eager, side stream), a capture followed by its first replay, or a replay; log=True
        updates run eagerly on the static inputs.
        """
        self._copy_in(batch)
        if self.capture and self._graph is not None and self._states() != self._graph_states:
            self.reset()  # the optimisers' state was replaced (a load): recapture
        if log or not self.capture or self._eager_since_reset < self.warmup:
            return self._eager(log=log, check_finite=check_finite)
        if self._graph is None:
            self._capture()
        assert self._graph is not None
        self._graph.replay()
        self.replays += 1
        learner = self.learner
        learner.num_updates += 1
        if learner.alpha_optim is not None:
            learner.alpha = self._alpha  # the graph's new α (eager code reads learner.alpha)
        return learner._read_losses(self._losses, None, check_finite=check_finite)

    def _eager(self, *, log: bool, check_finite: bool) -> dict[str, float]:
        """The update without a graph, on the static inputs (a side stream while warming up)."""
        learner = self.learner
        warming_up = self.capture and self._graph is None
        with self._graphs.side_stream() if warming_up else nullcontext():
            obs, act, rew, next_obs, done = (self.static[k] for k in BATCH_KEYS)
            losses, log_prob, q_policy = learner._update_step(obs, act, rew, next_obs, done)
            learner.num_updates += 1
            stats = learner._log_stats(obs, act, log_prob, q_policy) if log else None
            out = learner._read_losses(losses, stats, check_finite=check_finite)
        if warming_up:
            self._eager_since_reset += 1
        return out

    def _body(self) -> None:
        """The captured region: steps 1-4 on the static inputs, outputs into static tensors."""
        learner = self.learner
        static = self.static
        losses, _, _ = learner._update_step(*(static[k] for k in BATCH_KEYS))
        self._losses.copy_(losses)
        if learner.alpha_optim is not None:
            self._alpha.copy_(learner.alpha)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        learner = self.learner
        optims: list[torch.optim.Optimizer] = [learner.actor_optim, learner.critic_optim]
        if learner.alpha_optim is not None:
            optims.insert(0, learner.alpha_optim)
        return optims

    def _states(self) -> tuple[object, ...]:
        """Identities of the optimisers' state dicts (new objects after a load_state_dict)."""
        return tuple(optim.state for optim in self._optimizers())

    def _capture(self) -> None:
        optims = self._optimizers()
        for optim in optims:
            if not all(group.get("fused") for group in optim.param_groups):
                raise RuntimeError(
                    "CUDA graph capture needs the learner's Adam optimisers built with "
                    "fused=True (as eor.agent.ravl._adam does on CUDA); got one without"
                )
        saved = [[group["capturable"] for group in optim.param_groups] for optim in optims]
        for optim in optims:
            for group in optim.param_groups:
                group["capturable"] = True
        try:
            self._graph = self._graphs.capture(self._body, self.learner.generator)
        finally:
            for optim, flags in zip(optims, saved, strict=True):
                for group, flag in zip(optim.param_groups, flags, strict=True):
                    group["capturable"] = flag
        self._graph_states = self._states()
        self.captures += 1

    # ------------------------------------------------------------------------------- input
    def _copy_in(self, batch: Mapping[str, Any] | Sequence[Any]) -> None:
        """Check every entry against its static tensor, then copy them all in."""
        items = batch_items(batch)
        sources = []
        for key, item in zip(BATCH_KEYS, items, strict=True):
            dst = self.static[key]
            src = item if isinstance(item, Tensor) else torch.as_tensor(np.asarray(item))
            if key in ("rew", "done") and src.dim() == 2 and src.shape[1] == 1:
                src = src.reshape(-1)  # [B, 1] -> [B]
            if src.shape != dst.shape:
                want = "[" + ", ".join(map(str, dst.shape)) + "]"
                raise ValueError(
                    f"batch[{key!r}] must have shape {want} (batch_size={self.batch_size}, as "
                    f"this GraphedUpdate was built), got {tuple(src.shape)}"
                )
            if src.dtype != dst.dtype:
                raise ValueError(
                    f"batch[{key!r}] must have dtype {dst.dtype} (the learner's; no conversion "
                    f"is made), got {src.dtype}"
                )
            sources.append(src)
        for key, src in zip(BATCH_KEYS, sources, strict=True):
            self.static[key].copy_(src)
