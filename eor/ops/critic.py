"""The RAVL critic loss ops: `critic_loss` (a differentiable loss), `critic_loss_grads` (its
values and gradients without autograd: what the RAVL learner uses) and `diversity_loss`
(EDAC's term alone).

Implementations (chosen per call by `eor.ops.backend`): ``torch``, the closed form of
`eor.ops.critic_closed_form` (one forward and one δ chain, no double backward); ``triton``, the
same algorithm with its GEMMs, masks and the diversity normalisation as Triton kernels
(`eor.kernels.diversity`, float32); ``ref``, autograd's double backward through `eor.ref`.

The custom op ``eor::critic_loss_grads`` (with a fake implementation) is what `torch.compile`
sees; eager calls run its body directly (the custom op's dispatch costs about 0.1 ms a call).
`critic_loss` wraps it in `_ClosedFormLossFn`, whose backward hands over the closed-form
gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from eor import ref
from eor.ops import backend
from eor.ops.backend import (
    BackendUnavailableError,
    _choose_backend,
    _dispatch,
    register_op,
    requested_backend,
)
from eor.ops.critic_closed_form import CriticGrads, check_critic_args, closed_form_grads


class CriticLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable w.r.t. the critic weights and biases
    td: Tensor  # scalar, detached: Σ_i mean_b (Q_i − y)²
    diversity: Tensor  # scalar, detached: L_div (0 when eta == 0)
    q: Tensor  # [N, B], detached: Q_i(s, a)


# All three run the closed form; on CUDA (or EOR_BACKEND=triton under TRITON_INTERPRET=1) its
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


# ----------------------------------------------------------------------------- custom op


def _critic_loss_grads_list(
    obs: Tensor,
    act: Tensor,
    target: Tensor | None,
    weights: list[Tensor],
    biases: list[Tensor],
    eta: float,
    need_grads: bool,
    use_triton: bool,
) -> list[Tensor]:
    """[td, diversity, q] (+ the 4 weight and 4 bias gradients if need_grads); the body of the
    custom op `eor::critic_loss_grads`, called directly in eager mode (the custom op's
    dispatch costs about 0.1 ms a call); use_triton runs `eor.kernels.diversity`."""
    fn = (
        backend.load_kernels("diversity").critic_loss_grads_triton
        if use_triton
        else closed_form_grads
    )
    # Without a target (the diversity term alone) nobody reads Q: it is left out.
    out = CriticGrads(
        *fn(
            obs, act, target, weights, biases, eta, need_grads=need_grads, need_q=target is not None
        )
    )
    tensors = [out.td, out.diversity, out.q]
    if need_grads:
        assert out.weight_grads is not None and out.bias_grads is not None
        tensors += [*out.weight_grads, *out.bias_grads]
    return tensors


_critic_loss_grads_op = torch.library.custom_op("eor::critic_loss_grads", mutates_args=())(
    _critic_loss_grads_list
)
"""The closed-form critic loss as one opaque op, for torch.compile and CUDA graphs."""


@_critic_loss_grads_op.register_fake
def _(obs, act, target, weights, biases, eta, need_grads, use_triton):  # type: ignore[no-untyped-def]
    q_shape = (weights[0].shape[0], obs.shape[0] if target is not None else 0)
    out = [obs.new_empty(()), obs.new_empty(()), obs.new_empty(q_shape)]
    if need_grads:
        out += [torch.empty_like(w) for w in weights] + [torch.empty_like(b) for b in biases]
    return out


class _ClosedFormLossFn(torch.autograd.Function):
    """loss = L_td + η·L_div as a scalar whose backward returns the precomputed gradients.

    forward computes the gradients eagerly (closed form, no graph); backward scales them by
    grad_output. obs / act / target get no gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        obs: Tensor,
        act: Tensor,
        target: Tensor | None,
        eta: float,
        use_triton: bool,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        weights, biases = list(params[:4]), list(params[4:])
        need = any(ctx.needs_input_grad[5:])  # type: ignore[attr-defined]
        op = (
            torch.ops.eor.critic_loss_grads
            if torch.compiler.is_compiling()
            else _critic_loss_grads_list
        )
        td, div, q, *grads = op(obs, act, target, weights, biases, eta, need, use_triton)
        if need:
            # Kept as a plain attribute (they are no inputs or outputs) and dropped in backward,
            # so the engine can take them over as .grad without a copy.
            ctx.grads = grads  # type: ignore[attr-defined]
        loss = td + eta * div if eta > 0 else td.clone()
        ctx.mark_non_differentiable(td, div, q)
        return loss, td, div, q

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        grads = getattr(ctx, "grads", None)
        if grads is None:
            raise RuntimeError(
                "critic loss: backward ran twice through the same loss (its closed-form "
                "gradients are handed over on the first backward); recompute the loss"
            )
        ctx.grads = None  # type: ignore[attr-defined]
        # loss.backward() passes exactly 1: hand the gradients over as they are (no N·H² copies).
        # Checked on CPU only, where reading the value costs no device sync, and not while
        # torch.compile traces (the value is data there, not a number).
        if (
            not torch.compiler.is_compiling()
            and grad_loss.device.type == "cpu"
            and grad_loss.item() == 1.0
        ):
            return (None, None, None, None, None, *grads)
        return (None, None, None, None, None, *(g * grad_loss for g in grads))


def _closed_form_loss(
    obs: Tensor,
    act: Tensor,
    target: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
    *,
    use_triton: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, td, diversity, q); loss differentiable w.r.t. weights and biases (closed form).

    The values and gradients come from the custom op ``eor::critic_loss_grads``: the torch
    closed form (`closed_form_grads`), or with use_triton the Triton launcher
    `eor.kernels.diversity.critic_loss_grads_triton` (same contract, float32).
    """
    loss, td, div, q = _ClosedFormLossFn.apply(
        obs, act, target, float(eta), bool(use_triton), *weights, *biases
    )
    return loss, td, div, q


# ----------------------------------------------------------------------------- public ops


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

    The torch path (`eor.ops.critic_closed_form`) computes L and all gradients in closed form
    from one forward and one δ chain (no double backward), equal to `eor.ref.critic_loss_ref`
    to rounding. Raises ValueError for eta < 0, eta > 0 with num_critics < 2, or bad shapes.
    """
    check_critic_args(obs, act, target, weights, biases)
    eta = _check_eta(eta, weights[0].shape[0])
    return _dispatch(
        "critic_loss",
        {
            "triton": lambda: CriticLoss(
                *_closed_form_loss(
                    obs, act, target, weights, biases, eta, use_triton=_critic_use_triton(weights)
                )
            ),
            "torch": lambda: CriticLoss(*_closed_form_loss(obs, act, target, weights, biases, eta)),
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
) -> CriticGrads:
    """The RAVL critic loss of `critic_loss` with its gradients, without autograd.

    Returns CriticGrads(td, diversity, q, weight_grads, bias_grads): L = td + eta·diversity,
    and the gradients of L with respect to every weight and bias (same shapes), all detached.
    For a training loop that sets `.grad` itself: `p.grad = g` for each parameter, then the
    optimiser step. Every gradient is a fresh tensor.
    Raises ValueError as `critic_loss` does.
    """
    check_critic_args(obs, act, target, weights, biases)
    eta = _check_eta(eta, weights[0].shape[0])

    def triton() -> CriticGrads:
        if not _critic_use_triton(weights):
            return closed_form_grads(obs, act, target, weights, biases, eta)
        launcher = backend.load_kernels("diversity").critic_loss_grads_triton
        return CriticGrads(*launcher(obs, act, target, weights, biases, eta))

    def reference() -> CriticGrads:
        params = [p.detach().requires_grad_(True) for p in (*weights, *biases)]
        with torch.enable_grad():
            res = _critic_loss_ref(obs, act, target, params[:4], params[4:], eta)
            grads = torch.autograd.grad(res.loss, params, allow_unused=True)
        grads = tuple(
            torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
        )
        return CriticGrads(res.td, res.diversity, res.q, list(grads[:4]), list(grads[4:]))

    if torch.compiler.is_compiling():  # one opaque node in the graph (except for ref)
        chosen = _choose_backend("critic_loss_grads", obs)
        if chosen != "ref":
            use_triton = chosen == "triton" and _critic_use_triton(weights)
            td, div, q, *grads = torch.ops.eor.critic_loss_grads(
                obs, act, target, list(weights), list(biases), eta, True, use_triton
            )
            return CriticGrads(td, div, q, grads[:4], grads[4:])
    with torch.no_grad():
        return _dispatch(
            "critic_loss_grads",
            {
                "triton": triton,
                "torch": lambda: closed_form_grads(obs, act, target, weights, biases, eta),
                "ref": reference,
            },
            obs,
        )


def diversity_loss(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
    """EDAC's L_div = mean_b Σ_{i≠j} ⟨g_i, g_j⟩ / (N − 1), g_i = ∇ₐQ_i / (‖∇ₐQ_i‖ + 1e-10).

    A scalar differentiable w.r.t. weights and biases (closed form; bias gradients are exactly
    0). Shapes as in `critic_loss`. Raises ValueError when num_critics < 2.
    """
    check_critic_args(obs, act, None, weights, biases)
    _check_eta(1.0, weights[0].shape[0])
    return _dispatch(
        "diversity_loss",
        {
            "triton": lambda: _closed_form_loss(
                obs, act, None, weights, biases, 1.0, use_triton=_critic_use_triton(weights)
            )[0],
            "torch": lambda: _closed_form_loss(obs, act, None, weights, biases, 1.0)[0],
            "ref": lambda: ref.diversity_loss_ref(obs, act, weights, biases),
        },
        obs,
    )
