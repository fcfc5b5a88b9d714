"""Closed-form RAVL critic loss (TD + η·EDAC diversity) and all its gradients, without autograd.

`closed_form_grads` is the torch path behind `eor.ops.critic_loss`, `critic_loss_grads` and
`diversity_loss` (`eor.ops.critic` checks the arguments and dispatches). It equals
`eor.ref.critic_loss_ref` / `eor.ref.diversity_loss_ref` (autograd double backward) to rounding.

Critics (N of them) are ReLU MLPs on x = concat(s, a), x `[B, D]` with D = S + A, shared by all:

    h1 = relu(x W1 + b1)    W1 `[N, D, H1]`   h1 `[N, B, H1]`
    h2 = relu(h1 W2 + b2)   W2 `[N, H1, H2]`
    h3 = relu(h2 W3 + b3)   W3 `[N, H2, H3]`
    q  = h3 W4 + b4         W4 `[N, H3, 1]`   q `[N, B]`

With the ReLU masks m_l = 1[pre_l > 0] (= 1[h_l > 0]) the input gradient of Σ_b q is

    δ3 = m3 ⊙ w4ᵀ,  δ2 = m2 ⊙ (δ3 W3ᵀ),  δ1 = m1 ⊙ (δ2 W2ᵀ),  ∇ₓq = δ1 W1ᵀ        δ_l `[N, B, H_l]`

and v = ∇ₐq = δ1 W1aᵀ `[N, B, A]`, W1a = W1[:, S:, :] `[N, A, H1]` (the action rows).

Diversity (docs/algorithm.md §3): g_i = v_i / (‖v_i‖ + 1e-10) and, with Σ_g = Σ_i g_i `[B, A]`,

    L_div = mean_b Σ_{i≠j} ⟨g_i, g_j⟩ / (N − 1) = mean_b (‖Σ_g‖² − Σ_i ‖g_i‖²) / (N − 1),
    U_i = ∂L/∂g_i = 2 (Σ_g − g_i) / (B (N − 1)),
    G_i = ∂L/∂v_i = U_i / (r_i + ε) − v_i ⟨v_i, U_i⟩ / (r_i (r_i + ε)²),   r_i = ‖v_i‖,

where the second term is 0 at r_i = 0, as autograd's norm backward gives. Reversing the linear
chain v = δ1 W1aᵀ, δ1 = m1 ⊙ (δ2 W2ᵀ), ... (the masks are piecewise constant, so they pass no
gradient and every bias gradient of L_div is exactly 0):

    dW1a = Gᵀ δ1 (obs rows 0),  e1 = m1 ⊙ (G W1a),  dW2 = e1ᵀ δ2,  e2 = m2 ⊙ (e1 W2),
    dW3 = e2ᵀ δ3 = (e2ᵀ m3) ⊙ w4ᵀ,  dw4 = Σ_b m3 ⊙ (e2 W3) = Σ_j W3 ⊙ (e2ᵀ m3).

The last identity avoids the GEMM e2 W3: both dW3 and dw4 come from M = e2ᵀ m3 `[N, H2, H3]`.

TD (docs/algorithm.md §3): L_td = Σ_i mean_b (q_i − y)², dq = 2 (q − y) / B `[N, B]`. Its backward deltas are
dq ⊙ δ_l, the same δ's, so one forward and one δ chain serve both terms, and each weight
gradient of L = L_td + η L_div is ONE batched GEMM of a combined left factor:

    dW1 = Zᵀ δ1, Z = [dq ⊙ x_s, dq ⊙ x_a + η G]     dW2 = (dq ⊙ h1 + η e1)ᵀ δ2
    M = (dq ⊙ h2 + η e2)ᵀ m3,  dW3 = M ⊙ w4ᵀ,  dw4 = Σ_j W3 ⊙ M + b3 ⊙ (dqᵀ m3)
    db_l = dqᵀ δ_l,  db4 = Σ_b dq.

(For dw4: Σ_j W3[j,k] Σ_b dq_b h2[b,j] m3[b,k] = Σ_b dq_b m3[b,k] (pre3[b,k] − b3[k]) =
(h3ᵀ dq)[k] − b3[k] (m3ᵀ dq)[k], so adding b3 ⊙ (m3ᵀ dq) back gives h3ᵀ dq + η dw4_div.)

Cost at N critics, batch B, width H: 7 batched B×H×H GEMMs (2 forward, 2 δ, 1 e, 2 weight
gradients); autograd double backward of the reference spends about 18.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from eor.ops import aten

EPS = 1e-10  # EDAC's constant in the normalisation ‖∇ₐQ‖ + 1e-10


def _mask_(grad: Tensor, h: Tensor) -> Tensor:
    """grad ⊙ 1[h > 0] in place (h a ReLU output): autograd's own ReLU-backward kernel, so the
    mask convention (h > 0) is exactly autograd's, in one pass with no new buffer."""
    return aten.relu_backward_into(grad, h, grad)


class CriticGrads(NamedTuple):
    """Values and gradients of L = [L_td] + η·L_div; grads in the order of the parameters."""

    td: Tensor  # scalar (0 when the TD term is not included)
    diversity: Tensor  # scalar (0 when eta == 0)
    q: Tensor  # [N, B]
    weight_grads: list[Tensor] | None  # [dW1, dW2, dW3, dW4], same shapes as the weights
    bias_grads: list[Tensor] | None  # [db1, db2, db3, db4], same shapes as the biases


def check_critic_args(
    obs: Tensor,
    act: Tensor,
    target: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
) -> None:
    """Raise ValueError naming the argument when shapes, dtypes or devices do not fit."""
    if len(weights) != 4 or len(biases) != 4:
        raise ValueError(
            f"weights and biases must hold 4 tensors each (3 hidden ReLU layers and the head), "
            f"got {len(weights)} weights and {len(biases)} biases"
        )
    if obs.dim() != 2 or act.dim() != 2 or obs.shape[0] != act.shape[0]:
        raise ValueError(
            f"obs must be [B, S] and act [B, A] with the same B, got obs {tuple(obs.shape)} "
            f"and act {tuple(act.shape)}"
        )
    b = obs.shape[0]
    if target is not None and tuple(target.shape) != (b,):
        raise ValueError(f"target must be [B] = [{b}], got {tuple(target.shape)}")
    n = weights[0].shape[0]
    width = obs.shape[1] + act.shape[1]
    for layer, (w, bias) in enumerate(zip(weights, biases, strict=True), start=1):
        if w.dim() != 3 or w.shape[0] != n or w.shape[1] != width:
            raise ValueError(
                f"weights[{layer - 1}] must be [N={n}, {width}, out], got {tuple(w.shape)}"
            )
        if tuple(bias.shape) != (n, w.shape[2]):
            raise ValueError(
                f"biases[{layer - 1}] must be [N={n}, {w.shape[2]}], got {tuple(bias.shape)}"
            )
        width = w.shape[2]
    if width != 1:
        raise ValueError(f"weights[3] must have one output (Q), got {width}")
    dtype, device = weights[0].dtype, weights[0].device
    tensors = {"obs": obs, "act": act, **({"target": target} if target is not None else {})}
    for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
        tensors[f"weights[{i}]"] = w
        tensors[f"biases[{i}]"] = bias
    for name, t in tensors.items():
        if t.dtype != dtype or t.device != device:
            raise ValueError(
                f"{name} is {t.dtype} on {t.device}; every tensor must be {dtype} on {device} "
                f"like weights[0]"
            )
    if not dtype.is_floating_point:
        raise ValueError(f"critic tensors must be floating point, got {dtype}")


@torch.no_grad()
def closed_form_grads(
    obs: Tensor,
    act: Tensor,
    target: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
    *,
    need_grads: bool = True,
    need_q: bool = True,
) -> CriticGrads:
    """Closed-form L = L_td + η·L_div (L_td left out when `target` is None) and its gradients.

    obs `[B, S]`, act `[B, A]`, target `[B]` or None; weights / biases as in the module doc.
    Arguments are assumed checked (`check_critic_args`); eta > 0 needs N ≥ 2.
    need_q: with target None and need_q False, Q itself is not computed (the diversity term
    needs only the ReLU masks) and an empty `[N, 0]` q is returned.
    """
    w1, w2, w3, w4 = weights
    b1, b2, b3, b4 = biases
    n, d, _ = w1.shape
    bsz, s_dim = obs.shape
    eta = float(eta)
    use_div = eta > 0.0

    # ---- forward, shared input: every critic reads the same x (expand: no copy).
    x = torch.cat([obs, act], dim=1)  # [B, D]
    shapes = [(n, bsz, w.shape[2]) for w in (w1, w2, w3)]
    h1 = torch.baddbmm(b1.unsqueeze(1), x.expand(n, bsz, d), w1).relu_()  # [N, B, H1]
    h2 = torch.baddbmm(b2.unsqueeze(1), h1, w2).relu_()
    h3 = torch.baddbmm(b3.unsqueeze(1), h2, w3)
    skip_q = target is None and not need_q
    if skip_q:  # h3 stays the pre-activation: only its sign is used below
        q = x.new_empty(n, 0)
    else:
        h3.relu_()
        q = torch.baddbmm(b4.unsqueeze(1), h3, w4).squeeze(2)  # [N, B], fresh: it is returned
    zero = q.new_zeros(())
    if target is not None:
        err = q - target  # [N, B]
        td = err.square().mean(dim=1).sum()  # Σ_i mean_b (q − y)²
        dq = err.mul_(2.0 / bsz)  # [N, B] = ∂L_td/∂q
    else:
        dq, td = None, zero
    if not use_div and (dq is None or not need_grads):
        return CriticGrads(td, zero, q, None, None)

    # ---- δ chain (input gradient of Σ_b q), shared by the TD backward and the diversity term.
    w4_row = w4.transpose(1, 2)  # [N, 1, H3]
    if skip_q:  # from the pre-activation: the same mask 1[pre3 > 0] = 1[h3 > 0], one pass each
        m3 = torch.gt(h3, 0, out=x.new_empty(shapes[2]))  # as a float
        delta3 = aten.relu_backward_into(
            w4_row.expand(shapes[2]), h3, h3
        )  # [N, B, H3] = m3 ⊙ w4ᵀ, over the pre-activation (not needed any more)
    else:
        m3 = torch.sign(h3)  # 1[h3 > 0] as a float
        delta3 = torch.mul(m3, w4_row, out=h3)  # [N, B, H3]; h3 is not needed any more
    delta2 = _mask_(torch.bmm(delta3, w3.transpose(1, 2)), h2)  # [N, B, H2]
    delta1 = _mask_(torch.bmm(delta2, w2.transpose(1, 2)), h1)  # [N, B, H1]

    diversity = zero
    g_v = None
    if use_div:
        w1a = w1[:, s_dim:, :]  # [N, A, H1], the action rows of W1 (a view)
        v = torch.bmm(delta1, w1a.transpose(1, 2))  # [N, B, A] = ∇ₐ Q_i
        r = torch.linalg.vector_norm(v, dim=2, keepdim=True)  # [N, B, 1]
        inv = (r + EPS).reciprocal_()  # [N, B, 1]
        g = v * inv  # [N, B, A]
        g_sum = g.sum(dim=0)  # [B, A]
        scale = 1.0 / (bsz * (n - 1))
        diversity = (g_sum.square().sum() - g.square().sum()) * scale
        if need_grads:
            u = (g_sum - g).mul_(2.0 * scale)  # [N, B, A] = ∂L_div/∂g
            vu = (v * u).sum(dim=2, keepdim=True)  # [N, B, 1]
            # Norm backward: autograd gives 0 for the projection term where ‖v‖ = 0.
            proj = torch.where(r > 0, vu * inv * inv / r, torch.zeros_like(r))
            g_v = u.mul_(inv).sub_(v * proj)  # [N, B, A] = G = ∂L_div/∂v
    if not need_grads:
        return CriticGrads(td, diversity, q, None, None)

    # ---- reverse chain of the diversity term (e_l), then one GEMM per weight gradient.
    if g_v is not None:
        e1 = _mask_(torch.bmm(g_v, w1[:, s_dim:, :]), h1)  # [N, B, H1]
        e2 = _mask_(torch.bmm(e1, w2), h2)  # [N, B, H2]
        # in place: e1, e2 are not needed any more (diversity_loss passes eta = 1: no pass)
        left2 = e1.mul_(eta) if eta != 1.0 else e1
        left3 = e2.mul_(eta) if eta != 1.0 else e2
        if dq is not None:
            dqc = dq.unsqueeze(2)  # [N, B, 1]
            left2.addcmul_(h1, dqc)  # dq ⊙ h1 + η e1
            left3.addcmul_(h2, dqc)  # dq ⊙ h2 + η e2
    else:
        assert dq is not None
        dqc = dq.unsqueeze(2)
        left2 = h1.mul_(dqc)  # h1 is not needed any more (modified in place)
        left3 = h2.mul_(dqc)

    m_3 = torch.bmm(left3.transpose(1, 2), m3)  # [N, H2, H3] = M
    dw4 = torch.mul(m_3, w3).sum(1, keepdim=True)  # [N, 1, H3] = Σ_j W3 ⊙ M
    dw3 = m_3.mul_(w4_row)  # [N, H2, H3], in place: M is not needed any more
    dw2 = torch.bmm(left2.transpose(1, 2), delta2)  # [N, H1, H2]
    if dq is not None:
        dq_row = dq.unsqueeze(1)  # [N, 1, B]
        s3 = torch.bmm(dq_row, m3)  # [N, 1, H3] = m3ᵀ dq
        dw4.addcmul_(b3.unsqueeze(1), s3)
        z = dq.unsqueeze(2) * x  # [N, B, D]
        if g_v is not None:
            z[:, :, s_dim:].add_(g_v, alpha=eta)
        dw1 = torch.bmm(z.transpose(1, 2), delta1)  # [N, D, H1]
        db1 = torch.bmm(dq_row, delta1).squeeze(1)  # [N, H1]
        db2 = torch.bmm(dq_row, delta2).squeeze(1)  # [N, H2]
        db3 = (s3 * w4_row).squeeze(1)  # [N, H3]
        db4 = dq.sum(dim=1, keepdim=True)  # [N, 1]
    else:
        assert g_v is not None
        dw1a = torch.bmm(g_v.transpose(1, 2), delta1)  # [N, A, H1], the action rows
        if eta != 1.0:
            dw1a.mul_(eta)
        # obs rows get no diversity gradient
        dw1 = torch.cat([w1.new_zeros(n, s_dim, w1.shape[2]), dw1a], dim=1)
        db1, db2, db3, db4 = (torch.zeros_like(b) for b in biases)
    weight_grads = [dw1, dw2, dw3, dw4.transpose(1, 2)]  # dw4 [N, H3, 1]
    return CriticGrads(td, diversity, q, weight_grads, [db1, db2, db3, db4])
