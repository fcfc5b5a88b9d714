"""eor's numeric ops, each chosen per call between a Triton kernel, a fast torch path and the
plain-torch reference (`eor.ops.backend`, EOR_BACKEND=auto|triton|torch|ref).

One module per op family: `ensemble_linear` (differentiable ensemble layer), `ensemble_mlp`
(inference-only ensemble MLPs and the dynamics model's Gaussian forward), `critic_loss` (the RAVL
critic loss, its closed-form gradients and EDAC's diversity term; the torch maths is in
`critic_closed_form`). `aten` is the one guarded seam to aten's private overloads. Dependencies
point one way: callers -> these modules -> `backend`, which imports nothing else of eor.
"""

from __future__ import annotations

from eor.ops.backend import (
    BACKENDS,
    BackendUnavailableError,
    backend_for,
    backend_report,
    register_op,
    requested_backend,
)
from eor.ops.critic_closed_form import CriticGrads
from eor.ops.critic_loss import CriticLoss, critic_loss, critic_loss_grads, diversity_loss
from eor.ops.ensemble_linear import ACTIVATIONS, ensemble_linear
from eor.ops.ensemble_mlp import ensemble_mlp, gaussian_ensemble_forward

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "BackendUnavailableError",
    "CriticGrads",
    "CriticLoss",
    "backend_for",
    "backend_report",
    "critic_loss",
    "critic_loss_grads",
    "diversity_loss",
    "ensemble_linear",
    "ensemble_mlp",
    "gaussian_ensemble_forward",
    "register_op",
    "requested_backend",
]
