"""eor's numeric ops, each chosen per call between a Triton kernel, a fast torch path and the
plain-torch reference (`eor.ops.backend`, EOR_BACKEND=auto|triton|torch|ref).

One module per op family: `linear` (`ensemble_linear`, the differentiable ensemble layer),
`mlp` (`ensemble_mlp` and `gaussian_ensemble_forward`, inference only), `critic`
(`critic_loss`, `critic_loss_grads`, `diversity_loss`; their torch maths is
`critic_closed_form`). `aten` is the one guarded seam to aten's private overloads. The modules
are not named after their functions, which this package re-exports under those names.
Dependencies point one way: callers -> these modules -> `backend`, which imports nothing else of
eor.
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
from eor.ops.critic import CriticLoss, critic_loss, critic_loss_grads, diversity_loss
from eor.ops.critic_closed_form import CriticGrads
from eor.ops.linear import ACTIVATIONS, ensemble_linear
from eor.ops.mlp import ensemble_mlp, gaussian_ensemble_forward

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
