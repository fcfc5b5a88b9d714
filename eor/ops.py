"""Public ensemble ops and their dispatch.

Every op has three layers (STYLE.md): a plain-torch reference in `eor.ref`, a Triton kernel in
`eor.kernels` (the `kernels/` folder), and the public function here, which picks the
implementation **per call** from the tensors' device:

- CUDA tensors with Triton importable -> ``triton``;
- anything else -> ``torch``, the fast torch path in this module;
- ``EOR_BACKEND=auto|triton|torch|ref`` overrides the choice. An automatic choice that fails
  falls back quietly to ``torch`` (and is remembered for the rest of the process); an explicit
  ``triton`` that cannot run raises `BackendUnavailableError` with the reason. With
  ``TRITON_INTERPRET=1`` and ``EOR_BACKEND=triton`` the kernels run on CPU tensors (tests).

Triton is imported lazily, only when a kernel is about to run, so CPU use never imports it.

The ops are also registered as `torch.library` custom ops (``eor::ensemble_linear``,
``eor::ensemble_linear_backward``, ``eor::ensemble_mlp``, ``eor::gaussian_ensemble_forward``,
and ``eor::critic_loss_grads`` in `eor.fused_critic`) with fake implementations and, for the
linear layer, `register_autograd`. Under `torch.compile` the public functions emit these ops,
so the compiled graph holds each as one opaque node; eager calls skip the custom-op wrapper
(about 0.3 ms per layer on this CPU) and run the same implementations directly: native
autograd for the torch linear layer, an autograd.Function for the Triton one and for the
critic loss (whose backward hands over the closed-form gradients).

The critic ops: `critic_loss` (a differentiable loss), `critic_loss_grads` (its values and
gradients without autograd, optionally into caller buffers: what the RAVL learner uses) and
`diversity_loss` (EDAC's term alone).

Adding an op to the dispatch (used by the critic section at the end of this file)::

    register_op("critic_loss", triton=False)             # once, at import
    backend = _choose_backend("critic_loss", obs, act)   # "triton" | "torch" | "ref"
    out = _dispatch("critic_loss", {"torch": fast, "ref": slow}, obs, act)

`_dispatch` calls the implementation for the chosen backend and does the quiet fallback;
`backend_report` lists every registered op.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from eor import ref
from eor.fused_critic import CriticGrads, grads_into
from eor.workspace import scratch

BACKENDS = ("auto", "triton", "torch", "ref")
ACTIVATIONS = ref.ACTIVATIONS

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend (EOR_BACKEND=triton) cannot run here."""


# ----------------------------------------------------------------------------- dispatch


@dataclass
class _OpEntry:
    name: str
    has_triton: bool


_REGISTRY: dict[str, _OpEntry] = {}
# (op name, device type) pairs whose automatic Triton choice failed once: torch from then on.
_TRITON_BROKEN: dict[tuple[str, str], str] = {}


def register_op(name: str, *, triton: bool) -> None:
    """Make `name` known to the dispatch and to `backend_report`.

    triton: whether a Triton implementation exists. An op without one runs the torch path even
    under EOR_BACKEND=triton (reported as such), so that a whole training run can force Triton.
    """
    _REGISTRY[name] = _OpEntry(name, triton)


def requested_backend() -> str:
    """The EOR_BACKEND value (default ``auto``); ValueError for anything else."""
    value = os.environ.get("EOR_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"EOR_BACKEND must be one of {BACKENDS}, got {value!r}")
    return value


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_unavailable_reason(device: torch.device) -> str | None:
    """None if Triton kernels can run on tensors of `device`, else why not."""
    if not _triton_importable():
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if _interpret():
        return None
    return (
        f"tensors are on {device.type!r}, not CUDA, and TRITON_INTERPRET is not 1 "
        "(set TRITON_INTERPRET=1 to run the kernels in the Triton interpreter on CPU, "
        "or use EOR_BACKEND=auto|torch)"
    )


def _device_of(tensors: Sequence[Tensor | None]) -> torch.device:
    for t in tensors:
        if isinstance(t, Tensor):
            return t.device
    return torch.device("cpu")


def _choose_backend(op_name: str, *tensors: Tensor | None) -> str:
    """The backend ("triton", "torch" or "ref") that `op_name` uses for these tensors (the
    first tensor's device decides). Raises BackendUnavailableError for an explicit
    EOR_BACKEND=triton that cannot run, ValueError for an invalid EOR_BACKEND."""
    return _choose_backend_on(op_name, _device_of(tensors))


def _choose_backend_on(op_name: str, device: torch.device) -> str:
    entry = _REGISTRY.get(op_name)
    if entry is None:
        raise KeyError(f"unknown op {op_name!r}; register it with eor.ops.register_op")
    requested = requested_backend()
    if requested in ("torch", "ref"):
        return requested
    if requested == "triton":
        if not entry.has_triton:
            return "torch"
        reason = _triton_unavailable_reason(device)
        if reason is not None:
            raise BackendUnavailableError(f"EOR_BACKEND=triton for {op_name}: {reason}")
        return "triton"
    # auto: Triton only for CUDA tensors, and only while it has not failed for this op.
    if (
        entry.has_triton
        and device.type == "cuda"
        and (op_name, device.type) not in _TRITON_BROKEN
        and _triton_importable()
    ):
        return "triton"
    return "torch"


def _dispatch(op_name: str, impls: Mapping[str, Callable[[], _T]], *tensors: Tensor | None) -> _T:
    """Run `impls[backend]()` for the chosen backend, falling back quietly from an automatic
    Triton choice that raises. `impls` needs "torch"; a missing "ref" uses "torch"."""
    backend = _choose_backend(op_name, *tensors)
    if backend == "triton" and requested_backend() == "auto":
        try:
            return impls["triton"]()
        except Exception as exc:  # noqa: BLE001 - any kernel failure means: use torch
            device = _device_of(tensors)
            _TRITON_BROKEN[(op_name, device.type)] = f"{type(exc).__name__}: {exc}"
            _log.info("eor.ops.%s: Triton failed (%s); using torch", op_name, exc)
            return impls["torch"]()
    return impls.get(backend, impls["torch"])()


def backend_report(device: torch.device | str) -> dict[str, str]:
    """Which backend each registered op would use for tensors on `device` (for `eor info`).

    Never raises: an explicit EOR_BACKEND=triton that cannot run is reported with the reason.
    """
    device = torch.device(device)
    report: dict[str, str] = {}
    for name, entry in _REGISTRY.items():
        try:
            backend = _choose_backend_on(name, device)
        except (BackendUnavailableError, ValueError) as exc:
            backend = f"error: {exc}"
        if backend == "torch" and requested_backend() == "triton" and not entry.has_triton:
            backend = "torch (no Triton kernel for this op)"
        if (name, device.type) in _TRITON_BROKEN:
            backend += f" (Triton failed: {_TRITON_BROKEN[(name, device.type)]})"
        report[name] = backend
    return report


_KERNEL_MODULES: dict[str, ModuleType] = {}


def _kernels(name: str) -> ModuleType:
    """Import `eor.kernels.<name>` lazily, re-importing it when TRITON_INTERPRET changed since:
    `triton.jit` decides at decoration time whether a kernel is compiled or interpreted."""
    if name != "ensemble_linear":  # the others import its jit helpers: reload it first
        _kernels("ensemble_linear")
    mod = _KERNEL_MODULES.get(name)
    interpret = _interpret()
    if mod is None:
        mod = importlib.import_module(f"eor.kernels.{name}")
    if getattr(mod, "INTERPRETED", None) != interpret:
        mod = importlib.reload(mod)
    _KERNEL_MODULES[name] = mod
    return mod


# ----------------------------------------------------------------------------- input checks


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _check_linear(x: Tensor, weight: Tensor, bias: Tensor, activation: str) -> None:
    _check_activation(activation)
    if weight.dim() != 3:
        raise ValueError(f"weight must be [E, I, O], got shape {tuple(weight.shape)}")
    e, i, o = weight.shape
    if bias.shape != (e, o):
        raise ValueError(
            f"bias must be [E, O] = [{e}, {o}] for weight {tuple(weight.shape)}, "
            f"got shape {tuple(bias.shape)}"
        )
    if x.dim() == 2:
        ok = x.shape[1] == i
    elif x.dim() == 3:
        ok = x.shape[0] == e and x.shape[2] == i
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"x must be [B, {i}] (shared) or [{e}, B, {i}] (per member) for weight "
            f"{tuple(weight.shape)}, got shape {tuple(x.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t.dtype != x.dtype:
            raise ValueError(f"{name} dtype {t.dtype} differs from x dtype {x.dtype}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def _check_mlp(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
) -> None:
    _check_activation(activation)
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"weights and biases must be non-empty lists of equal length, got "
            f"{len(weights)} weights and {len(biases)} biases"
        )
    if reduce not in (None, "min"):
        raise ValueError(f"reduce must be None or 'min', got {reduce!r}")
    if members is not None and reduce is not None:
        raise ValueError("members (gathered form) and reduce cannot be used together")
    h = x
    e = weights[0].shape[0] if weights[0].dim() == 3 else -1
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.dim() != 3 or w.shape[0] != e:
            raise ValueError(f"weights[{layer}] must be [E={e}, I, O], got {tuple(w.shape)}")
        try:
            _check_linear(h, w, b, "none")
        except ValueError as exc:
            raise ValueError(f"layer {layer}: {exc}") from None
        h = torch.empty((e, x.shape[-2], w.shape[2]), dtype=x.dtype, device="meta")  # shape only
    if members is not None:
        if x.dim() != 2:
            raise ValueError(f"with members, x must be [B, I], got shape {tuple(x.shape)}")
        if members.dim() != 1 or members.shape[0] != x.shape[0]:
            raise ValueError(
                f"members must be [B] = [{x.shape[0]}], got shape {tuple(members.shape)}"
            )
        if members.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"members must be int64 or int32, got dtype {members.dtype}")
        if members.numel() and (int(members.min()) < 0 or int(members.max()) >= e):
            raise ValueError(
                f"members must lie in [0, {e}), got values in "
                f"[{int(members.min())}, {int(members.max())}]"
            )


# ----------------------------------------------------------------------------- fast torch paths


def _act_(h: Tensor, activation: str) -> Tensor:
    """Activation in place (inference only)."""
    if activation == "relu":
        return h.relu_()
    if activation == "silu":
        return F.silu(h, inplace=True)
    return h


def _linear_fwd_torch(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str
) -> tuple[Tensor, Tensor]:
    """z = x @ W + b per member, y = act(z). Returns (y, saved) where saved is what the
    backward needs besides y: z for silu, an empty tensor otherwise.

    A shared x `[B, I]` is broadcast as a stride-0 `[E, B, I]` view: baddbmm reads it without
    copying. (Measured on this CPU: as fast as one `[B, I] @ [I, E·O]` GEMM, without the
    weight permute-copy and with a contiguous `[E, B, O]` result.)
    """
    e = weight.shape[0]
    xe = x.expand(e, -1, -1) if x.dim() == 2 else x  # [E, B, I]
    z = torch.baddbmm(bias.unsqueeze(1), xe, weight)  # [E, B, O]
    if activation == "silu":
        return F.silu(z), z
    if activation == "relu":
        z.relu_()  # y > 0 exactly where z > 0: y alone gives the backward's mask
    return z, z.new_empty(0)


def _act_grad_torch(dy: Tensor, y: Tensor, saved: Tensor, activation: str) -> Tensor:
    """dL/dz from dL/dy: relu' = [y > 0]; silu'(z) = σ(z)·(1 + z·(1 − σ(z))).

    The aten backward kernels do each in one fused pass (no bool-mask or σ temporaries).
    """
    if activation == "relu":
        return torch.ops.aten.threshold_backward(dy, y, 0)
    if activation == "silu":
        return torch.ops.aten.silu_backward(dy, saved)
    return dy


def _linear_bwd_torch(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    saved: Tensor,
    activation: str,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of `_linear_fwd_torch`; dy `[E, B, O]` -> (dx, dW `[E, I, O]`, db `[E, O]`).

    dx = Σ_e dz[e] @ W[e]ᵀ for a shared x, dz @ Wᵀ per member otherwise; dW = xᵀ @ dz with a
    shared x read at member stride 0; db = Σ_b dz. (Measured on this CPU: bmm then a sum over
    members beats addbmm, which runs E separate addmm calls, and one `[B, E·O] @ [E·O, I]` GEMM,
    which needs dz and W permute-copied.)
    """
    dz = _act_grad_torch(dy, y, saved, activation)  # [E, B, O]
    e = weight.shape[0]
    dx = dw = db = None
    if needs[0]:
        wt = weight.transpose(1, 2)  # [E, O, I]
        if x.dim() == 2:
            dx = torch.bmm(dz, wt).sum(dim=0)  # [E, B, I] -> [B, I]
        else:
            dx = torch.bmm(dz, wt)  # [E, B, I]
    if needs[1]:
        xt = x.t().expand(e, -1, -1) if x.dim() == 2 else x.transpose(1, 2)  # [E, I, B]
        dw = torch.bmm(xt, dz)  # [E, I, O]
    if needs[2]:
        db = dz.sum(dim=1)  # [E, O]
    return dx, dw, db


def _mlp_layers_torch(
    h: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    member: int | None = None,
) -> Tensor:
    """Hidden layers and head, inference only, activations in place.

    member=None: h `[B, I]` shared or `[E, B, I]` -> `[E, B, O]`;
    member=e: h `[n, I]` rows of one member -> `[n, O]` (plain addmm, W[e] is contiguous).
    """
    last = len(weights) - 1
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if member is not None:
            h = torch.addmm(b[member], h, w[member])  # [n, O_l]
        else:
            hx = h.expand(w.shape[0], -1, -1) if h.dim() == 2 else h  # [E, B, I_l]
            # Hidden activations alternate between two reused scratch buffers (eor.workspace);
            # the head's output is fresh (it is returned).
            out = (
                scratch(f"mlp.{layer % 2}", (w.shape[0], hx.shape[1], w.shape[2]), hx)
                if layer < last
                else None
            )
            h = torch.baddbmm(b.unsqueeze(1), hx, w, out=out)  # [E, B, O_l]
        if layer < last:
            _act_(h, activation)
    return h


def _mlp_gathered_torch(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str, members: Tensor
) -> Tensor:
    """Row b through member members[b]: sort rows by member, run one contiguous GEMM chain
    per member segment, scatter back. Never gathers per-row weight copies (the reference's
    `w[members]` is B·I·O floats: 8 GB for 50,000 rows of 200×200)."""
    e = weights[0].shape[0]
    order = torch.argsort(members, stable=True)  # [B]
    counts = torch.bincount(members, minlength=e).tolist()  # one host sync, E ints
    xs = x.index_select(0, order)  # [B, I], rows grouped by member
    out_sorted = x.new_empty(x.shape[0], weights[-1].shape[2])  # [B, O]
    start = 0
    for member, count in enumerate(counts):
        if count:
            seg = slice(start, start + count)
            out_sorted[seg] = _mlp_layers_torch(xs[seg], weights, biases, activation, member)
            start += count
    out = torch.empty_like(out_sorted)
    out.index_copy_(0, order, out_sorted)  # back to the caller's row order
    return out


def _mlp_torch(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
) -> Tensor:
    if members is not None:
        return _mlp_gathered_torch(x, weights, biases, activation, members)
    out = _mlp_layers_torch(x, weights, biases, activation)  # [E, B, O]
    if reduce == "min":
        return out.amin(dim=0)  # [B, O]
    return out


def _bound_logvar_torch(raw: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """docs/algorithm.md §2: lv = max − softplus(max − raw); lv = min + softplus(lv − min)."""
    lv = max_logvar - F.softplus(max_logvar - raw)
    return F.softplus(lv.sub_(min_logvar)).add_(min_logvar)


def _gaussian_torch(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    members: Tensor | None,
    activation: str,
) -> tuple[Tensor, Tensor]:
    out = _mlp_torch(x, weights, biases, activation, members, None)  # [..., 2D]
    d = out.shape[-1] // 2
    # Separate (non-aliasing) outputs: the custom op may not return views of one buffer.
    return out[..., :d].contiguous(), _bound_logvar_torch(out[..., d:], max_logvar, min_logvar)


# ----------------------------------------------------------------------------- custom ops
# Each op body dispatches per call; the fake implementations give shapes for torch.compile.


def _linear_fwd_any(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str
) -> tuple[Tensor, Tensor]:
    return _dispatch(
        "ensemble_linear",
        {
            "triton": lambda: _kernels("ensemble_linear").ensemble_linear_fwd(
                x, weight, bias, activation
            ),
            "torch": lambda: _linear_fwd_torch(x, weight, bias, activation),
        },
        x,
    )


def _linear_bwd_any(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    saved: Tensor,
    activation: str,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    return _dispatch(
        "ensemble_linear",
        {
            "triton": lambda: _kernels("ensemble_linear").ensemble_linear_bwd(
                dy, x, weight, y, saved, activation, needs
            ),
            "torch": lambda: _linear_bwd_torch(dy, x, weight, y, saved, activation, needs),
        },
        x,
    )


class _EnsembleLinearFn(torch.autograd.Function):
    """Eager autograd for `ensemble_linear` on the Triton backend, dispatching forward and
    backward per call (the eager torch backend is native autograd: `_linear_autograd_torch`).

    Eager calls use this rather than the custom op: the custom op's autograd wrapper costs
    about 0.3 ms per layer forward + backward on this CPU, as much as a small layer's GEMMs.
    Under torch.compile the custom op (same implementations) is used instead.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, activation: str) -> Tensor:  # type: ignore[override]
        y, saved = _linear_fwd_any(x, weight, bias, activation)
        ctx.save_for_backward(x, weight, y, saved)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        x, weight, y, saved = ctx.saved_tensors
        needs = (
            bool(ctx.needs_input_grad[0]),
            bool(ctx.needs_input_grad[1]),
            bool(ctx.needs_input_grad[2]),
        )
        dx, dw, db = _linear_bwd_any(dy, x, weight, y, saved, ctx.activation, needs)
        return dx, dw, db, None


@torch.library.custom_op("eor::ensemble_linear", mutates_args=())
def _ensemble_linear_op(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str
) -> tuple[Tensor, Tensor]:
    """(y, saved): y = act(x @ W + b) `[E, B, O]`; saved = z for silu, else empty."""
    return _linear_fwd_any(x, weight, bias, activation)


@_ensemble_linear_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    shape = (weight.shape[0], x.shape[-2], weight.shape[2])
    return x.new_empty(shape), x.new_empty(shape if activation == "silu" else (0,))


@torch.library.custom_op("eor::ensemble_linear_backward", mutates_args=())
def _ensemble_linear_backward_op(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    saved: Tensor,
    activation: str,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dW, db); a gradient that `needs` does not ask for comes back empty."""
    need = (bool(needs[0]), bool(needs[1]), bool(needs[2]))
    grads = _linear_bwd_any(dy, x, weight, y, saved, activation, need)
    empty = x.new_empty(0)
    return tuple(g if g is not None else empty.clone() for g in grads)  # type: ignore[return-value]


@_ensemble_linear_backward_op.register_fake
def _(dy, x, weight, y, saved, activation, needs):  # type: ignore[no-untyped-def]
    e, i, o = weight.shape
    return (
        x.new_empty(x.shape if needs[0] else (0,)),
        x.new_empty((e, i, o) if needs[1] else (0,)),
        x.new_empty((e, o) if needs[2] else (0,)),
    )


def _linear_setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, weight, _bias, activation = inputs
    y, saved = output
    ctx.save_for_backward(x, weight, y, saved)
    ctx.activation = activation


def _linear_backward(ctx, dy: Tensor, _dsaved: Tensor):  # type: ignore[no-untyped-def]
    x, weight, y, saved = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    dx, dw, db = torch.ops.eor.ensemble_linear_backward(
        dy, x, weight, y, saved, ctx.activation, needs
    )
    return (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None, None)


_ensemble_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _mlp_any(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
) -> Tensor:
    return _dispatch(
        "ensemble_mlp",
        {
            "triton": lambda: _kernels("ensemble_mlp").ensemble_mlp_fwd(
                x, weights, biases, activation, members=members, reduce=reduce
            ),
            "torch": lambda: _mlp_torch(x, weights, biases, activation, members, reduce),
        },
        x,
    )


@torch.library.custom_op("eor::ensemble_mlp", mutates_args=())
def _ensemble_mlp_op(
    x: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
) -> Tensor:
    """Inference-only ensemble MLP; see `ensemble_mlp`."""
    return _mlp_any(x, weights, biases, activation, members, reduce)


def _mlp_out_shape(
    x: Tensor, weights: Sequence[Tensor], members: Tensor | None, reduce: str | None
) -> tuple[int, ...]:
    b, o = x.shape[-2], weights[-1].shape[2]
    if members is not None or reduce == "min":
        return (b, o)
    return (weights[0].shape[0], b, o)


@_ensemble_mlp_op.register_fake
def _(x, weights, biases, activation, members, reduce):  # type: ignore[no-untyped-def]
    return x.new_empty(_mlp_out_shape(x, weights, members, reduce))


@torch.library.custom_op("eor::gaussian_ensemble_forward", mutates_args=())
def _gaussian_op(
    x: Tensor,
    weights: list[Tensor],
    biases: list[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    members: Tensor | None,
    activation: str,
) -> tuple[Tensor, Tensor]:
    """(mean, logvar) of the dynamics ensemble; see `gaussian_ensemble_forward`."""
    return _gaussian_any(x, weights, biases, max_logvar, min_logvar, members, activation)


def _gaussian_any(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    members: Tensor | None,
    activation: str,
) -> tuple[Tensor, Tensor]:
    return _dispatch(
        "gaussian_ensemble_forward",
        {
            "triton": lambda: _kernels("ensemble_mlp").gaussian_ensemble_fwd(
                x, weights, biases, max_logvar, min_logvar, activation, members=members
            ),
            "torch": lambda: _gaussian_torch(
                x, weights, biases, max_logvar, min_logvar, members, activation
            ),
        },
        x,
    )


@_gaussian_op.register_fake
def _(x, weights, biases, max_logvar, min_logvar, members, activation):  # type: ignore[no-untyped-def]
    shape = list(_mlp_out_shape(x, weights, members, None))
    shape[-1] //= 2
    return x.new_empty(shape), x.new_empty(shape)


register_op("ensemble_linear", triton=True)
register_op("ensemble_mlp", triton=True)
register_op("gaussian_ensemble_forward", triton=True)
# The critic loss (section at the end, OPSB) has a torch path only for now; re-registering it
# there with triton=True is how it would gain a kernel.
register_op("critic_loss", triton=False)


# ----------------------------------------------------------------------------- public ops


def ensemble_linear(x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none") -> Tensor:
    """y[e] = act(x[e] @ W[e] + b[e]) for every member e, differentiable in x, W and b.

    x: `[E, B, I]` per-member input, or `[B, I]` shared by all members (never copied E times);
    weight: `[E, I, O]`; bias: `[E, O]`; activation: "none" | "relu" | "silu".
    Returns `[E, B, O]`.

    Backward: dz = dy ⊙ act'(z); dx = dz @ Wᵀ (shared x: Σ_e dz[e] @ W[e]ᵀ); dW = xᵀ @ dz;
    db = Σ_b dz.
    """
    _check_linear(x, weight, bias, activation)
    backend = _choose_backend("ensemble_linear", x)
    if backend == "ref":
        return ref.ensemble_linear_ref(x, weight, bias, activation)
    if torch.compiler.is_compiling():  # one opaque node in the graph
        return torch.ops.eor.ensemble_linear(x, weight, bias, activation)[0]
    if backend == "torch":
        return _linear_autograd_torch(x, weight, bias, activation)
    return _EnsembleLinearFn.apply(x, weight, bias, activation)


def _linear_autograd_torch(x: Tensor, weight: Tensor, bias: Tensor, activation: str) -> Tensor:
    """The eager torch path: `_linear_fwd_torch`'s ops (a stride-0 shared x, one baddbmm with
    the bias, the activation in one pass) left to native autograd, whose backward runs the
    same GEMMs and fused activation kernels as `_linear_bwd_torch` with no Python in between
    (measured: about 0.1 ms less per layer forward + backward than `_EnsembleLinearFn`)."""
    xe = x.expand(weight.shape[0], -1, -1) if x.dim() == 2 else x  # [E, B, I]
    z = torch.baddbmm(bias.unsqueeze(1), xe, weight)  # [E, B, O]
    if activation == "silu":
        return F.silu(z)
    if activation == "relu":
        return z.relu_()  # baddbmm's backward does not need z: in place is safe
    return z


@torch.no_grad()
def ensemble_mlp(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "relu",
    *,
    members: Tensor | None = None,
    reduce: str | None = None,
) -> Tensor:
    """Inference-only ensemble MLP: `activation` after every layer but the last (linear).

    x: `[B, I]` shared or `[E, B, I]`; weights[l]: `[E, I_l, O_l]`; biases[l]: `[E, O_l]`.
    - default: `[E, B, O]`;
    - reduce="min": `[B, O]`, min over members (target Q);
    - members `[B]` int64 in [0, E): gathered form, row b through member members[b]; x must be
      `[B, I]`; returns `[B, O]` = full forward's `out[members[b], b]` at about 1/E the work.
    Policy evaluation is the E = 1 case (`[1, B, O]`).
    """
    _check_mlp(x, weights, biases, activation, members, reduce)
    if _choose_backend("ensemble_mlp", x) == "ref":
        return ref.ensemble_mlp_ref(x, weights, biases, activation, members=members, reduce=reduce)
    if torch.compiler.is_compiling():
        return torch.ops.eor.ensemble_mlp(
            x, list(weights), list(biases), activation, members, reduce
        )
    return _mlp_any(x, weights, biases, activation, members, reduce)


@torch.no_grad()
def gaussian_ensemble_forward(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    *,
    members: Tensor | None = None,
    activation: str = "silu",
) -> tuple[Tensor, Tensor]:
    """Inference-only dynamics forward, (mean, logvar), each `[E, B, D]` or `[B, D]` with
    `members`. The head has width 2·D: first D outputs are the mean, last D the raw log-variance,
    bounded as in docs/algorithm.md §2 with max_logvar, min_logvar `[D]`:
    lv = max − softplus(max − raw); lv = min + softplus(lv − min).
    """
    _check_mlp(x, weights, biases, activation, members, None)
    width = weights[-1].shape[2]
    if width % 2:
        raise ValueError(f"the last layer must have even width 2·D (mean, logvar), got {width}")
    for name, t in (("max_logvar", max_logvar), ("min_logvar", min_logvar)):
        if t.shape != (width // 2,):
            raise ValueError(f"{name} must be [D] = [{width // 2}], got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"{name} dtype {t.dtype} differs from x dtype {x.dtype}")
    if _choose_backend("gaussian_ensemble_forward", x) == "ref":
        return ref.gaussian_ensemble_forward_ref(
            x, weights, biases, max_logvar, min_logvar, members=members, activation=activation
        )
    if torch.compiler.is_compiling():
        return torch.ops.eor.gaussian_ensemble_forward(
            x, list(weights), list(biases), max_logvar, min_logvar, members, activation
        )
    return _gaussian_any(x, weights, biases, max_logvar, min_logvar, members, activation)


# ============================================================================ critic loss
# (owned by OPSB: CriticLoss, critic_loss, diversity_loss)


class CriticLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable w.r.t. the critic weights and biases
    td: Tensor  # scalar, detached: Σ_i mean_b (Q_i − y)²
    diversity: Tensor  # scalar, detached: L_div (0 when eta == 0)
    q: Tensor  # [N, B], detached: Q_i(s, a)


# Both run the closed form; on CUDA (or EOR_BACKEND=triton under TRITON_INTERPRET=1) its
# GEMMs, masks and the diversity normalisation run as Triton kernels (kernels/diversity.py).
register_op("critic_loss", triton=True)
register_op("critic_loss_grads", triton=True)
register_op("diversity_loss", triton=True)


def _critic_use_triton(weights: Sequence[Tensor]) -> bool:
    """Whether the chosen Triton backend runs the kernels: they are float32 only, so an automatic
    choice takes the torch path for other dtypes and an explicit EOR_BACKEND=triton raises."""
    if weights[0].dtype != torch.float32:
        if requested_backend() == "triton":
            raise BackendUnavailableError(
                f"EOR_BACKEND=triton for the critic loss needs float32 tensors, "
                f"got {weights[0].dtype}"
            )
        return False
    return True


def _check_eta(eta: float, num_critics: int) -> float:
    try:
        value = float(eta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"eta must be a non-negative float, got {eta!r}") from exc
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"eta must be a finite float >= 0, got {eta!r}")
    if value > 0.0 and num_critics < 2:
        raise ValueError(
            f"the diversity term (eta={value:g} > 0) needs num_critics >= 2, "
            f"got num_critics={num_critics}; use eta=0 for a single critic"
        )
    return value


def _critic_loss_ref(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
) -> CriticLoss:
    """EOR_BACKEND=ref: the autograd (double-backward) reference, split into its parts."""
    q = ref.critic_q_ref(obs, act, weights, biases)  # [N, B]
    td = ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
    if eta > 0:
        div = ref.diversity_loss_ref(obs, act, weights, biases)
        loss = td + eta * div
    else:
        div, loss = td.new_zeros(()), td
    return CriticLoss(loss, td.detach(), div.detach(), q.detach())


def critic_loss(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
) -> CriticLoss:
    """RAVL critic loss L = Σ_i mean_b (Q_i(s, a) − y)² + η·L_div for N ReLU critics (docs/algorithm.md §3).

    obs `[B, S]`, act `[B, A]`, target `[B]` (no gradient flows to any of them);
    weights `[W1 [N, S+A, H1], W2 [N, H1, H2], W3 [N, H2, H3], W4 [N, H3, 1]]`, biases
    `[b1 [N, H1], .., b4 [N, 1]]`. Returns CriticLoss(loss, td, diversity, q): `loss` is a scalar
    whose backward gives every weight and bias its gradient; td, diversity, q `[N, B]` are
    detached. L_div is EDAC's, at the batch actions; it is skipped when eta == 0.

    The torch path (`eor.fused_critic`) computes L and all gradients in closed form from one
    forward and one δ chain (no double backward), equal to `eor.ref.critic_loss_ref` to
    rounding. Raises ValueError for eta < 0, eta > 0 with num_critics < 2, or bad shapes.
    """
    from eor.fused_critic import check_critic_args, critic_loss_fused

    check_critic_args(obs, act, target, weights, biases)
    eta = _check_eta(eta, weights[0].shape[0])
    return _dispatch(
        "critic_loss",
        {
            "triton": lambda: CriticLoss(
                *critic_loss_fused(
                    obs, act, target, weights, biases, eta, use_triton=_critic_use_triton(weights)
                )
            ),
            "torch": lambda: CriticLoss(*critic_loss_fused(obs, act, target, weights, biases, eta)),
            "ref": lambda: _critic_loss_ref(obs, act, target, weights, biases, eta),
        },
        obs,
    )


def critic_loss_grads(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
    *,
    out: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
) -> CriticGrads:
    """The RAVL critic loss of `critic_loss` with its gradients, without autograd.

    Returns CriticGrads(td, diversity, q, weight_grads, bias_grads): L = td + eta·diversity,
    and the gradients of L with respect to every weight and bias (same shapes), all detached.
    For a training loop that sets `.grad` itself: `p.grad = g` for each parameter, then the
    optimiser step.

    out: (weight grads, bias grads), contiguous tensors of the weights' and biases' shapes,
        dtype and device, to write the gradients into, for example the same buffers every
        update. On the CPU the torch path computes the big ones straight into them, which
        spares the page faults of fresh multi-MB tensors (about 1 ms per update at N = 10,
        batch 256). The returned gradients are then these tensors.
    Raises ValueError as `critic_loss` does, and for `out` tensors of the wrong shape.
    """
    from eor.fused_critic import check_critic_args
    from eor.fused_critic import critic_loss_grads as closed_form

    check_critic_args(obs, act, target, weights, biases)
    eta = _check_eta(eta, weights[0].shape[0])
    if out is not None:
        _check_grads_out(out, weights, biases)

    def triton() -> CriticGrads:
        if not _critic_use_triton(weights):
            return closed_form(obs, act, target, weights, biases, eta, out=out)
        launcher = _kernels("diversity").critic_loss_grads_triton
        return grads_into(CriticGrads(*launcher(obs, act, target, weights, biases, eta)), out)

    def reference() -> CriticGrads:
        params = [p.detach().requires_grad_(True) for p in (*weights, *biases)]
        with torch.enable_grad():
            res = _critic_loss_ref(obs, act, target, params[:4], params[4:], eta)
            grads = torch.autograd.grad(res.loss, params, allow_unused=True)
        grads = tuple(
            torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
        )
        value = CriticGrads(res.td, res.diversity, res.q, list(grads[:4]), list(grads[4:]))
        return grads_into(value, out)

    if torch.compiler.is_compiling():  # one opaque node in the graph (except for ref)
        backend = _choose_backend("critic_loss_grads", obs)
        if backend != "ref":
            use_triton = backend == "triton" and _critic_use_triton(weights)
            td, div, q, *grads = torch.ops.eor.critic_loss_grads(
                obs, act, target, list(weights), list(biases), eta, True, use_triton
            )
            return grads_into(CriticGrads(td, div, q, grads[:4], grads[4:]), out)
    with torch.no_grad():
        return _dispatch(
            "critic_loss_grads",
            {
                "triton": triton,
                "torch": lambda: closed_form(obs, act, target, weights, biases, eta, out=out),
                "ref": reference,
            },
            obs,
        )


def _check_grads_out(
    out: tuple[Sequence[Tensor], Sequence[Tensor]],
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
) -> None:
    """ValueError naming the `out` entry that cannot hold its parameter's gradient."""
    if len(out) != 2 or len(out[0]) != len(weights) or len(out[1]) != len(biases):
        raise ValueError(
            f"out must be (weight grads, bias grads) with {len(weights)} and {len(biases)} "
            f"tensors, got {[len(o) for o in out]}"
        )
    pairs = [(f"out[0][{i}]", t, w) for i, (t, w) in enumerate(zip(out[0], weights, strict=True))]
    pairs += [(f"out[1][{i}]", t, b) for i, (t, b) in enumerate(zip(out[1], biases, strict=True))]
    for name, t, p in pairs:
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.shape != p.shape or t.dtype != p.dtype or t.device != p.device:
            raise ValueError(
                f"{name} must be {tuple(p.shape)} {p.dtype} on {p.device} like its parameter, "
                f"got {tuple(t.shape)} {t.dtype} on {t.device}"
            )
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
        if t.requires_grad:
            raise ValueError(f"{name} must not require grad (pass a gradient buffer)")


def diversity_loss(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
    """EDAC's L_div = mean_b Σ_{i≠j} ⟨g_i, g_j⟩ / (N − 1), g_i = ∇ₐQ_i / (‖∇ₐQ_i‖ + 1e-10).

    A scalar differentiable w.r.t. weights and biases (closed form; bias gradients are exactly
    0). Shapes as in `critic_loss`. Raises ValueError when num_critics < 2.
    """
    from eor.fused_critic import check_critic_args, critic_loss_fused

    check_critic_args(obs, act, None, weights, biases)
    _check_eta(1.0, weights[0].shape[0])
    return _dispatch(
        "diversity_loss",
        {
            "triton": lambda: critic_loss_fused(
                obs, act, None, weights, biases, 1.0, use_triton=_critic_use_triton(weights)
            )[0],
            "torch": lambda: critic_loss_fused(obs, act, None, weights, biases, 1.0)[0],
            "ref": lambda: ref.diversity_loss_ref(obs, act, weights, biases),
        },
        obs,
    )
