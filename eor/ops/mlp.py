"""Inference-only ensemble MLPs: `ensemble_mlp` (full, min over members, gathered rows) and
`gaussian_ensemble_forward` (the dynamics model's mean and bounded log-variance).

Implementations (chosen per call by `eor.ops.backend`): ``torch``, a chain of batched GEMMs
with the activations in place; ``triton``, the
fused kernels of `eor.kernels.ensemble_mlp`; ``ref``, `eor.ref`. The custom ops
``eor::ensemble_mlp`` and ``eor::gaussian_ensemble_forward`` (with fake implementations) are
what `torch.compile` sees; eager calls run the implementations directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from eor import ref
from eor.ops import backend
from eor.ops.backend import _choose_backend, _dispatch, register_op
from eor.ops.linear import _check_activation, _check_linear

register_op("ensemble_mlp", triton=True)
register_op("gaussian_ensemble_forward", triton=True)


# ----------------------------------------------------------------------------- input checks


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


# ----------------------------------------------------------------------------- fast torch path


def _act_(h: Tensor, activation: str) -> Tensor:
    """Activation in place (inference only)."""
    if activation == "relu":
        return h.relu_()
    if activation == "silu":
        return F.silu(h, inplace=True)
    return h


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
            h = torch.baddbmm(b.unsqueeze(1), hx, w)  # [E, B, O_l]
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
            "triton": lambda: backend.load_kernels("ensemble_mlp").ensemble_mlp_fwd(
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
            "triton": lambda: backend.load_kernels("ensemble_mlp").gaussian_ensemble_fwd(
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


# ----------------------------------------------------------------------------- public ops


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
