"""Plain-torch references of the numeric ops in `eor.ops` and `kernels/`: ensemble linear
layers and MLPs, the bounded log-variance, the critic Q, the EDAC diversity term and the
critic loss. Written for clarity, not speed; conventions: ensemble dimension first, `x @ W`
with W `[E, I, O]`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("none", "relu", "silu")


def activation_ref(x: Tensor, activation: str) -> Tensor:
    if activation == "none":
        return x
    if activation == "relu":
        return torch.relu(x)
    if activation == "silu":
        return F.silu(x)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


# ----------------------------------------------------------------------------- ensemble ops


def ensemble_linear_ref(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none"
) -> Tensor:
    """y[e] = act(x[e] @ W[e] + b[e]).

    x: `[E, B, I]` (per-member input) or `[B, I]` (shared by all members);
    weight: `[E, I, O]`; bias: `[E, O]`. Returns `[E, B, O]`.
    """
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(weight.shape[0], -1, -1)
    return activation_ref(torch.matmul(x, weight) + bias.unsqueeze(1), activation)


def ensemble_mlp_ref(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "relu",
    *,
    members: Tensor | None = None,
    reduce: str | None = None,
) -> Tensor:
    """An ensemble MLP: `activation` after every layer but the last, which is linear.

    x: `[B, I]` shared or `[E, B, I]`; weights[l]: `[E, I_l, O_l]`; biases[l]: `[E, O_l]`.
    - default: returns `[E, B, O]`;
    - reduce="min": returns `[B, O]`, the minimum over members;
    - members (`[B]` int64): gathered form, row b uses member members[b]; x must be `[B, I]`;
      returns `[B, O]`, equal to the full forward's `out[members[b], b]`.
    """
    if members is not None:
        h = x
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.bmm(h.unsqueeze(1), w[members]).squeeze(1) + b[members]
            if layer < len(weights) - 1:
                h = activation_ref(h, activation)
        return h
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        last = layer == len(weights) - 1
        h = ensemble_linear_ref(h, w, b, "none" if last else activation)
    if reduce == "min":
        return h.min(dim=0).values
    if reduce is not None:
        raise ValueError(f"reduce must be None or 'min', got {reduce!r}")
    return h


def bound_logvar_ref(logvar: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """docs/algorithm.md §2: logvar = max − softplus(max − logvar), then min + softplus(logvar − min)."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


def gaussian_ensemble_forward_ref(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    *,
    members: Tensor | None = None,
    activation: str = "silu",
) -> tuple[Tensor, Tensor]:
    """Dynamics-model forward: hidden layers with `activation`, then one linear head of width
    2·D whose first D outputs are the mean and last D the raw log-variance, which is bounded.

    Returns (mean, logvar), each `[E, B, D]`, or `[B, D]` with `members`.
    """
    out = ensemble_mlp_ref(x, weights, biases, activation, members=members)
    d = out.shape[-1] // 2
    return out[..., :d], bound_logvar_ref(out[..., d:], max_logvar, min_logvar)


def ensemble_linear_loop_ref(
    x: Tensor, layers: Sequence[torch.nn.Linear], activation: str = "none"
) -> Tensor:
    """Speed baseline: one `nn.Linear` per member in a Python loop (how the reference dynamics
    model runs). x `[E, B, I]` or shared `[B, I]`; layers: E modules I -> O. Returns `[E, B, O]`."""
    xs = [x] * len(layers) if x.dim() == 2 else list(x)
    return torch.stack(
        [activation_ref(layer(xe), activation) for layer, xe in zip(layers, xs, strict=True)]
    )


def ensemble_linear_repeated_ref(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none"
) -> Tensor:
    """Speed baseline: the shared input repeated E times, then one baddbmm (how the reference
    critics run). x `[B, I]`, weight `[E, I, O]`, bias `[E, O]`. Returns `[E, B, O]`."""
    x_rep = x.unsqueeze(0).repeat(weight.shape[0], 1, 1)  # [E, B, I], materialised
    return activation_ref(torch.baddbmm(bias.unsqueeze(1), x_rep, weight), activation)


# ----------------------------------------------------------------------------- critic loss


def critic_q_ref(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
    """Q-ensemble: Q_i(s, a) for every critic. obs `[B, S]`, act `[B, A]` -> `[N, B]`."""
    x = torch.cat([obs, act], dim=-1)  # [B, S+A], shared by all critics
    return ensemble_mlp_ref(x, weights, biases, "relu").squeeze(-1)


def diversity_loss_ref(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
    """EDAC's diversity term, computed as the reference does: autograd with create_graph.

    g_i = ∇_a Q_i(s, a) / (‖∇_a Q_i(s, a)‖₂ + 1e-10);
    L_div = mean_b [ Σ_{i≠j} ⟨g_i, g_j⟩ ] / (N − 1). Differentiable (double backward).
    """
    n = weights[0].shape[0]
    if n < 2:
        raise ValueError(f"the diversity term needs num_critics >= 2, got {n}")
    obs_tile = obs.unsqueeze(0).expand(n, -1, -1)  # [N, B, S]
    act_tile = act.detach().unsqueeze(0).expand(n, -1, -1).clone().requires_grad_(True)  # [N, B, A]
    h = torch.cat([obs_tile, act_tile], dim=-1)
    q = ensemble_mlp_ref(h, weights, biases, "relu")  # [N, B, 1]
    (grad,) = torch.autograd.grad(q.sum(), act_tile, create_graph=True)  # [N, B, A]
    grad = grad / (torch.norm(grad, p=2, dim=2, keepdim=True) + 1e-10)
    grad = grad.transpose(0, 1)  # [B, N, A]
    gram = torch.einsum("bik,bjk->bij", grad, grad)  # [B, N, N]
    mask = 1.0 - torch.eye(n, dtype=gram.dtype, device=gram.device)
    return (gram * mask).sum(dim=(1, 2)).mean() / (n - 1)


def critic_loss_ref(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
) -> Tensor:
    """docs/algorithm.md §3 step 3: Σ_i mean_b (Q_i(s, a) − y)² + η · L_div. target `[B]`."""
    q = critic_q_ref(obs, act, weights, biases)  # [N, B]
    loss = ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
    if eta > 0:
        loss = loss + eta * diversity_loss_ref(obs, act, weights, biases)
    return loss
