"""`eor sweep`: a grid of `eor train-model` and `eor train-agent` runs from one TOML file.

`eor.sweep.spec` reads and validates the file (each option through the command's own parser
and config validation, before anything runs) and expands it into trials: one dynamics model
per (dataset, model seed, model setting), shared by the agent trials that need it.
`eor.sweep.local` runs them in this process, models first, skipping finished trials and
resuming interrupted ones.
"""

from __future__ import annotations

from eor.sweep.spec import SpecError, SweepSpec, Trial, load_spec

__all__ = ["SpecError", "SweepSpec", "Trial", "load_spec"]
