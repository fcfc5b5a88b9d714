"""The dynamics ensemble's training step in closed form: loss and every gradient, no autograd.

    step = ClosedFormStep(model)
    loss = step(x_norm, target)     # [E, b, S+A], [E, b, D] -> scalar; sets every p.grad
    optimizer.step()

The same computation as `model.training_loss(x_norm, target).backward()` (same ops in the same
order, so the same bits on the CPU: tested), written out layer by layer:

    forward   z_l = a_l·W_l + b_l (one baddbmm),  a_{l+1} = SiLU(z_l),  head = z_L
    loss      docs/algorithm.md §2's bounded Gaussian NLL and ∂L/∂head (`head_nll_grads`)
    backward  g_L = ∂L/∂head;  ∂W_l = a_lᵀ·g_l,  ∂b_l = Σ_rows g_l,
              g_{l−1} = SiLU′(z_{l−1}) ⊙ (g_l·W_lᵀ)

Every intermediate lives in buffers kept from one step to the next (one set per batch size,
dtype and device), and the gradients are written into the parameters' own `.grad` tensors,
allocated once. On the CPU this is what makes the step fast: PyTorch's CPU allocator is malloc, and glibc hands the
~1.4 MB `[E, B, H]` activations of a fresh autograd graph back to the OS after each step, so
every step page-faulted some 400 pages in again (~0.6 ms of a ~9 ms step), besides autograd's
own bookkeeping (~0.4 ms). The trainer uses this step where `ops.ensemble_linear` would run
plain torch (the CPU); with Triton (CUDA) it keeps the autograd path through the fused kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eor.dynamics.model import DynamicsEnsemble, head_nll_grads
from eor.ops import aten


class _Buffers:
    """Activations and backward scratch for one batch size (and the model's dtype and device)."""

    def __init__(self, model: DynamicsEnsemble, batch: int) -> None:
        like = model.weights[0]
        e = model.num_members

        def empty(width: int) -> Tensor:
            return torch.empty(e, batch, width, dtype=like.dtype, device=like.device)

        self.z = [empty(w.shape[2]) for w in model.weights]  # pre-activations, head last
        self.a = [empty(w.shape[2]) for w in model.weights[:-1]]  # SiLU outputs
        self.grad_head = empty(model.weights[-1].shape[2])
        self.scratch = [empty(model.hidden_dim), empty(model.hidden_dim)]  # backward ping-pong


class ClosedFormStep:
    """docs/algorithm.md §2's loss of `model` on a batch, with every parameter's gradient set in `.grad`.

    Calls run under no_grad and overwrite `.grad` (no zeroing needed between steps); a
    parameter whose `.grad` was set to None or replaced gets its buffer back on the next call.
    """

    def __init__(self, model: DynamicsEnsemble) -> None:
        self.model = model
        self._buffers: dict[tuple[int, torch.dtype, torch.device], _Buffers] = {}
        self._grads: dict[int, Tensor] = {}

    def _grad_of(self, p: Tensor) -> Tensor:
        """p's persistent gradient buffer, installed as p.grad."""
        g = self._grads.get(id(p))
        if g is None or g.shape != p.shape or g.device != p.device or g.dtype != p.dtype:
            g = torch.zeros_like(p, memory_format=torch.contiguous_format)
            self._grads[id(p)] = g
        if p.grad is not g:
            p.grad = g
        return g

    def _check(self, x_norm: Tensor, target: Tensor) -> None:
        m = self.model
        e, i, d = m.num_members, m.weights[0].shape[1], m.out_dim
        if x_norm.dim() != 3 or x_norm.shape[0] != e or x_norm.shape[2] != i:
            raise ValueError(f"x_norm must have shape [{e}, b, {i}], got {tuple(x_norm.shape)}")
        if target.shape != (e, x_norm.shape[1], d):
            raise ValueError(
                f"target must have shape [{e}, {x_norm.shape[1]}, {d}], got {tuple(target.shape)}"
            )
        like = m.weights[0]
        for name, t in (("x_norm", x_norm), ("target", target)):
            if t.dtype != like.dtype or t.device != like.device:
                raise ValueError(
                    f"{name} must be {like.dtype} on {like.device} like the model, "
                    f"got {t.dtype} on {t.device}"
                )

    @torch.no_grad()
    def __call__(self, x_norm: Tensor, target: Tensor) -> Tensor:
        """x_norm `[E, b, S+A]` (each member its batch), target `[E, b, D]` -> loss (0-dim)."""
        self._check(x_norm, target)
        m = self.model
        key = (x_norm.shape[1], x_norm.dtype, x_norm.device)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _Buffers(m, x_norm.shape[1])
        weights, biases = list(m.weights), list(m.biases)
        last = len(weights) - 1

        h = x_norm
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            torch.baddbmm(b.unsqueeze(1), h, w, out=buf.z[i])
            if i < last:
                h = aten.silu_into(buf.z[i], buf.a[i])

        loss, g, g_max, g_min = head_nll_grads(
            buf.z[last], target, m.max_logvar, m.min_logvar, grad_head=buf.grad_head
        )
        self._grad_of(m.max_logvar).copy_(g_max)
        self._grad_of(m.min_logvar).copy_(g_min)

        for i in range(last, -1, -1):
            inp = x_norm if i == 0 else buf.a[i - 1]
            torch.bmm(inp.transpose(1, 2), g, out=self._grad_of(weights[i]))
            torch.sum(g, dim=1, out=self._grad_of(biases[i]))
            if i > 0:
                da = buf.scratch[i % 2]
                torch.bmm(g, weights[i].transpose(1, 2), out=da)
                g = aten.silu_backward_into(da, buf.z[i - 1], da)
        return loss
