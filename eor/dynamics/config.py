"""`DynamicsConfig`: the settings of `eor train-model` that define the trained model.

The fields are the reference's `EnsembleTrainConfig` names and defaults (docs/algorithm.md §4),
plus eor's own (dataset, batch_size, the stopping rule's constants, bootstrap, dtype). Each
field's `metadata["help"]` is its option's help text in `eor train-model --help`
(`eor.dynamics.cli`). A model directory's config.json is `to_dict()`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

BOOTSTRAP_MODES = ("redeal", "fixed")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The reference's EnsembleTrainConfig switches that it defined but never read: eor accepts
# them at their defaults only (docs/algorithm.md §4).
UNUSED_REFERENCE_SWITCHES = {
    "fix_std": False,
    "model_free": False,
    "var_max": False,
    "logvar_head": True,
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _unused(supported: bool) -> Any:
    """A reference switch it never read: only its default is accepted."""
    return field(default=supported, metadata=_help(f"unused by the reference; only {supported}"))


@dataclass
class DynamicsConfig:
    """`eor train-model` options: the reference's EnsembleTrainConfig names and defaults
    (docs/algorithm.md §4), plus eor's own (dataset, batch_size, the stopping rule's constants,
    bootstrap, dtype)."""

    env_name: str = field(
        default="halfcheetah-medium-v2", metadata=_help("env or D4RL dataset name")
    )
    dataset: str | None = field(
        default=None,
        metadata=_help(
            "a D4RL-format .hdf5/.npz file (default: find the dataset named by --env_name)"
        ),
    )
    seed: int = field(
        default=0, metadata=_help("seed of the split, the init, the bootstrap and the shuffles")
    )
    num_models: int = field(default=7, metadata=_help("ensemble size"))
    num_elites: int = field(
        default=5, metadata=_help("members kept for rollouts (lowest holdout MSE)")
    )
    hidden_dim: int = field(default=200, metadata=_help("width of the four hidden layers"))
    epochs: int = field(
        default=2000,
        metadata=_help("hard cap on epochs (--max_epochs is an alias, for short runs)"),
    )
    min_epochs: int = field(default=350, metadata=_help("no early stop before this epoch"))
    model_lr: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    l2_reg_multiplier: float = field(
        default=1.0, metadata=_help("multiplier of the per-layer L2 (weight decay) terms")
    )
    train_val_ratio: float = field(default=0.2, metadata=_help("holdout fraction"))
    batch_size: int = field(default=256, metadata=_help("rows per member per step"))
    max_epochs_since_update: int = field(
        default=5, metadata=_help("epochs without improvement before the lr drop or the stop")
    )
    improvement_threshold: float = field(
        default=0.01, metadata=_help("relative holdout improvement that counts")
    )
    lr_decay: float = field(default=0.3, metadata=_help("factor of the one learning-rate drop"))
    bootstrap: str = field(
        default="redeal",
        metadata=_help(
            "redeal: the E resamples are re-dealt to the members every epoch (the reference's); "
            "fixed: one resample per member"
        ),
    )
    dtype: str = field(
        default="float32",
        metadata=_help("float32, or float64 for exact comparisons with the reference (tests)"),
    )
    # The reference's logging fields, recorded in config.json.
    filename: str = field(
        default="ModelBased", metadata=_help("the run's name (recorded in config.json)")
    )
    log_interval: int = field(
        default=100, metadata=_help("print a progress line every N epochs (0: never)")
    )
    # The reference's buffer capacities: a training split (holdout) larger than this is an error.
    train_memory: int = field(
        default=2_000_000,
        metadata=_help("most training rows allowed (the reference's train buffer size)"),
    )
    val_memory: int = field(
        default=500_000,
        metadata=_help("most holdout rows allowed (the reference's validation buffer size)"),
    )
    # Defined by the reference but never read there; only these values are accepted.
    fix_std: bool = _unused(UNUSED_REFERENCE_SWITCHES["fix_std"])
    model_free: bool = _unused(UNUSED_REFERENCE_SWITCHES["model_free"])
    var_max: bool = _unused(UNUSED_REFERENCE_SWITCHES["var_max"])
    logvar_head: bool = _unused(UNUSED_REFERENCE_SWITCHES["logvar_head"])

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and what was expected."""
        for name in (
            "num_models",
            "num_elites",
            "hidden_dim",
            "epochs",
            "batch_size",
            "train_memory",
            "val_memory",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {self.min_epochs}")
        if self.max_epochs_since_update < 1:
            raise ValueError(
                f"max_epochs_since_update must be >= 1, got {self.max_epochs_since_update}"
            )
        if self.num_elites > self.num_models:
            raise ValueError(
                f"num_elites must be <= num_models, got num_elites={self.num_elites} > "
                f"num_models={self.num_models}"
            )
        if not 0.0 < self.train_val_ratio < 1.0:
            raise ValueError(f"train_val_ratio must lie in (0, 1), got {self.train_val_ratio}")
        if not (math.isfinite(self.model_lr) and self.model_lr > 0):
            raise ValueError(f"model_lr must be a finite number > 0, got {self.model_lr}")
        if not (math.isfinite(self.l2_reg_multiplier) and self.l2_reg_multiplier >= 0):
            raise ValueError(
                f"l2_reg_multiplier must be finite and >= 0, got {self.l2_reg_multiplier}"
            )
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        if not self.improvement_threshold >= 0:
            raise ValueError(
                f"improvement_threshold must be >= 0, got {self.improvement_threshold}"
            )
        if self.bootstrap not in BOOTSTRAP_MODES:
            raise ValueError(f"bootstrap must be one of {BOOTSTRAP_MODES}, got {self.bootstrap!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.log_interval, int) or self.log_interval < 0:
            raise ValueError(f"log_interval must be an integer >= 0, got {self.log_interval!r}")
        for name, supported in UNUSED_REFERENCE_SWITCHES.items():
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
            if value != supported:
                raise ValueError(
                    f"{name} {value} is not implemented in eor: the reference defines {name} "
                    f"but never uses it; only {supported} (its default) is accepted"
                )

    def check_memory(self, n_transitions: int) -> None:
        """The reference's buffer capacities: raise ValueError if the training split of
        `n_transitions` rows exceeds train_memory, or the holdout exceeds val_memory."""
        n_holdout = int(n_transitions * self.train_val_ratio)
        n_train = n_transitions - n_holdout
        for name, rows, part in (
            ("train_memory", n_train, "training split"),
            ("val_memory", n_holdout, "holdout"),
        ):
            cap = getattr(self, name)
            if rows > cap:
                raise ValueError(
                    f"{name} is {cap}, but the {part} of this dataset has {rows} rows "
                    f"({n_transitions} transitions, train_val_ratio {self.train_val_ratio}); "
                    f"raise {name} to at least {rows}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> DynamicsConfig:
        """The config of a model directory's config.json. Directories written before the
        `bootstrap` option were trained with one fixed resample per member: "fixed"."""
        return cls(**{"bootstrap": "fixed", **saved})
