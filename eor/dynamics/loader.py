"""`eor.dynamics.load`: a trained dynamics model from a directory in either format.

An eor model directory (meta.json, written by `eor train-model` or `eor convert-model`) is read
by `eor.dynamics.io`; a directory written by the reference code (weights.pt + data.pkl or
config.pkl, no meta.json) is converted on the fly by `eor.dynamics.reference_format`, which
logs one line. Both modules depend on nothing here, so neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from eor.dynamics import reference_format
from eor.dynamics.io import load_model_dir
from eor.dynamics.model import DynamicsEnsemble


def load(
    path: str | Path,
    env: Any = None,
    device: str | torch.device = "cpu",
    allow_unfinished: bool = False,
) -> DynamicsEnsemble:
    """The model saved in `path` (see `eor.dynamics.io.load_model_dir` for env, device and
    allow_unfinished; a reference-format directory is always finished)."""
    if reference_format.is_reference_dir(Path(path)):
        return reference_format.load_reference(path, env=env, device=device)
    return load_model_dir(path, env=env, device=device, allow_unfinished=allow_unfinished)
