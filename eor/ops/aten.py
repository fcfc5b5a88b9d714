"""The one seam for aten's private overloads on eor's hot paths.

The CPU hot paths (the closed-form critic loss, the actor step's action gradient, the dynamics
step) use aten's backward and out= overloads directly: each is one fused pass into an existing
buffer, with no bool-mask, sigmoid or fresh `[N, B, H]` temporaries. They are not public API,
so every use goes through a function here. At import, each overload's schema is compared with
the one eor was written against (`EXPECTED`); a missing or changed overload makes its functions
compute the same values through public torch instead (autograd of the public function, or a
mask), slower but equal (tested by simulating a mismatch).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

_log = logging.getLogger("eor.ops")

EXPECTED: dict[str, str] = {
    "threshold_backward.default": (
        "aten::threshold_backward(Tensor grad_output, Tensor self, Scalar threshold) -> Tensor"
    ),
    "threshold_backward.grad_input": (
        "aten::threshold_backward.grad_input(Tensor grad_output, Tensor self, Scalar threshold, "
        "*, Tensor(a!) grad_input) -> Tensor(a!)"
    ),
    "silu.out": "aten::silu.out(Tensor self, *, Tensor(a!) out) -> Tensor(a!)",
    "silu_backward.default": "aten::silu_backward(Tensor grad_output, Tensor self) -> Tensor",
    "silu_backward.grad_input": (
        "aten::silu_backward.grad_input(Tensor grad_output, Tensor self, *, "
        "Tensor(a!) grad_input) -> Tensor(a!)"
    ),
    "softplus_backward.default": (
        "aten::softplus_backward(Tensor grad_output, Tensor self, Scalar beta, Scalar threshold) "
        "-> Tensor"
    ),
}


def overload_matches(name: str, schema: str) -> bool:
    """Whether `torch.ops.aten.<name>` ("packet.overload") exists with exactly `schema`."""
    packet, overload = name.split(".")
    try:
        op = getattr(getattr(torch.ops.aten, packet), overload)
        return str(op._schema) == schema
    except Exception:  # noqa: BLE001 - anything unexpected means: use the public computation
        return False


def checked_overloads() -> dict[str, bool]:
    """name -> whether torch.ops.aten.<name> has the expected schema (else: public torch)."""
    fast = {name: overload_matches(name, schema) for name, schema in EXPECTED.items()}
    for name, ok in fast.items():
        if not ok:
            _log.debug("torch.ops.aten.%s is not %s: using public torch", name, EXPECTED[name])
    return fast


# Checked once at import, read on every call.
FAST: dict[str, bool] = checked_overloads()


def _vjp(fn, x: Tensor, grad: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """grad · ∂fn(x)/∂x through autograd (the public route to aten's backward kernels)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(fn(leaf), leaf, grad)
    return out


def relu_backward(grad: Tensor, h: Tensor) -> Tensor:
    """grad ⊙ 1[h > 0] (fresh): autograd's ReLU-backward mask convention (0 where h <= 0)."""
    if FAST["threshold_backward.default"]:
        return torch.ops.aten.threshold_backward(grad, h, 0)
    return grad.masked_fill(h <= 0, 0)


def relu_backward_into(grad: Tensor, h: Tensor, out: Tensor) -> Tensor:
    """grad ⊙ 1[h > 0] written into `out` (which may be `grad` or `h`), in one pass."""
    if FAST["threshold_backward.grad_input"]:
        return torch.ops.aten.threshold_backward.grad_input(grad, h, 0, grad_input=out)
    mask = h <= 0  # before `out` (possibly h) is overwritten
    if out is not grad:
        out.copy_(grad)
    return out.masked_fill_(mask, 0)


def silu_into(z: Tensor, out: Tensor) -> Tensor:
    """silu(z) = z·σ(z) written into `out`."""
    if FAST["silu.out"]:
        return torch.ops.aten.silu.out(z, out=out)
    return out.copy_(F.silu(z))


def silu_backward(grad: Tensor, z: Tensor) -> Tensor:
    """grad ⊙ silu'(z), silu'(z) = σ(z)·(1 + z·(1 − σ(z))) (fresh)."""
    if FAST["silu_backward.default"]:
        return torch.ops.aten.silu_backward(grad, z)
    return _vjp(F.silu, z, grad)


def silu_backward_into(grad: Tensor, z: Tensor, out: Tensor) -> Tensor:
    """grad ⊙ silu'(z) written into `out` (which may be `grad`)."""
    if FAST["silu_backward.grad_input"]:
        return torch.ops.aten.silu_backward.grad_input(grad, z, grad_input=out)
    return out.copy_(_vjp(F.silu, z, grad))


def softplus_backward(
    grad: Tensor, x: Tensor, beta: float = 1.0, threshold: float = 20.0
) -> Tensor:
    """grad ⊙ softplus'(x) for `F.softplus(x, beta, threshold)` (fresh)."""
    if FAST["softplus_backward.default"]:
        return torch.ops.aten.softplus_backward(grad, x, beta, threshold)
    return _vjp(lambda t: F.softplus(t, beta, threshold), x, grad)
