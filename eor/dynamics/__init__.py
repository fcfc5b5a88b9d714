"""Probabilistic dynamics ensemble (SPEC section 2) and `eor train-model`.

model = eor.dynamics.load(model_dir, env="halfcheetah", device="cpu")
next_obs, reward, done = model.step(obs, act, generator)
"""

from __future__ import annotations

from eor.dynamics.model import DynamicsEnsemble, Normalizer, bound_logvar, gaussian_nll_loss

__all__ = ["DynamicsEnsemble", "Normalizer", "bound_logvar", "gaussian_nll_loss"]
