"""Probabilistic dynamics ensemble (docs/algorithm.md §2) and `eor train-model`.

model = eor.dynamics.load(model_dir, env="halfcheetah", device="cpu")
next_obs, reward, done = model.step(obs, act, generator)   # [B, S], [B], [B] bool
model.obs_dim, model.act_dim, model.env_name, model.elites

A model directory saved by the reference code (weights.pt + data.pkl) loads the same way,
converted on the fly; convert_reference_dir(src, out) saves it as an eor model directory
(eor.dynamics.reference_format).
"""

from __future__ import annotations

from eor.dynamics.config import DynamicsConfig
from eor.dynamics.io import DynamicsLoadError, read_meta
from eor.dynamics.loader import load
from eor.dynamics.model import DynamicsEnsemble, Normalizer, bound_logvar, gaussian_nll_loss
from eor.dynamics.reference_format import ReferenceFormatError, UnsafePickleError
from eor.dynamics.reference_format import convert_dir as convert_reference_dir
from eor.dynamics.run import train_to_dir
from eor.dynamics.train import DynamicsTrainer, EarlyStopping

__all__ = [
    "DynamicsConfig",
    "DynamicsEnsemble",
    "DynamicsLoadError",
    "DynamicsTrainer",
    "EarlyStopping",
    "Normalizer",
    "ReferenceFormatError",
    "UnsafePickleError",
    "bound_logvar",
    "convert_reference_dir",
    "gaussian_nll_loss",
    "load",
    "read_meta",
    "train_to_dir",
]
