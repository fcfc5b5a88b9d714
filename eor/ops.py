"""Public ensemble ops and their dispatch.

Each op picks its implementation per call from the tensors' device: CUDA with Triton
available uses the Triton kernel, otherwise the fastest torch path. `EOR_BACKEND`
(`auto|triton|torch|ref`) overrides the choice; an explicit choice that cannot run raises.

PROVISIONAL: this first version routes every op to `eor.ref`. The signatures below are the
contract that the dynamics model and the agent are written against; keep them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from eor import ref

BACKENDS = ("auto", "triton", "torch", "ref")


def requested_backend() -> str:
    value = os.environ.get("EOR_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"EOR_BACKEND must be one of {BACKENDS}, got {value!r}")
    return value


def backend_report(device: torch.device) -> dict[str, str]:
    """Which backend each op would use for tensors on `device`."""
    return {name: "ref" for name in ("ensemble_linear", "ensemble_mlp", "gaussian_ensemble_forward", "critic_loss")}


def ensemble_linear(x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none") -> Tensor:
    """act(x @ W + b) per member. x `[E, B, I]` or shared `[B, I]`, W `[E, I, O]`, b `[E, O]` -> `[E, B, O]`.

    Differentiable in x, W and b.
    """
    return ref.ensemble_linear_ref(x, weight, bias, activation)


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
    """Inference-only ensemble MLP (see `eor.ref.ensemble_mlp_ref` for shapes and semantics)."""
    return ref.ensemble_mlp_ref(x, weights, biases, activation, members=members, reduce=reduce)


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
    """Inference-only dynamics forward with the log-variance bounding fused; (mean, logvar)."""
    return ref.gaussian_ensemble_forward_ref(
        x, weights, biases, max_logvar, min_logvar, members=members, activation=activation
    )


class CriticLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable w.r.t. the critic weights and biases
    td: Tensor  # scalar, detached: Σ_i mean_b (Q_i − y)²
    diversity: Tensor  # scalar, detached: L_div (0 when eta == 0)
    q: Tensor  # [N, B], detached: Q_i(s, a)


def critic_loss(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
) -> CriticLoss:
    """RAVL critic loss Σ_i mean_b (Q_i(s,a) − y)² + η·L_div for ReLU critics.

    obs `[B, S]`, act `[B, A]`, target `[B]`; weights[l] `[N, I_l, O_l]` (last `[N, H, 1]`),
    biases[l] `[N, O_l]`. Raises ValueError when eta > 0 and N < 2.
    """
    n = weights[0].shape[0]
    if eta > 0 and n < 2:
        raise ValueError(f"eta > 0 needs num_critics >= 2 for the diversity term, got num_critics={n}")
    q = ref.critic_q_ref(obs, act, weights, biases)
    td = ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
    div = ref.diversity_loss_ref(obs, act, weights, biases) if eta > 0 else td.new_zeros(())
    return CriticLoss(td + eta * div, td.detach(), div.detach(), q.detach())
