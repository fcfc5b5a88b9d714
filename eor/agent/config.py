"""`TrainAgentConfig`: every setting of `eor train-agent`, one field per CLI option.

Fields are grouped as the training loop uses them:

* run: what to train on, where to write, how long, how often to evaluate, log and save;
* data mix: batch size and share of real transitions in each batch (docs/algorithm.md §3);
* rollouts: the model-rollout phase run at the start of every epoch (docs/algorithm.md §3);
* learner: the RAVL hyper-parameters, passed on to `eor.agent.ravl.RAVLConfig`.

Every field of the reference's `TrainConfig` (train_ravl_agent.py) has a field here with the
same meaning and default (docs/algorithm.md §4); `REFERENCE_FIELDS` maps the reference's names
onto ours where they differ (`actor_learning_rate` is `actor_lr`, `deterministic_torch` is
`deterministic`, `project`/`group` are `wandb_project`/`wandb_group`), and the CLI accepts both
spellings. The reference's four derived fields (env_name_short, env_type, dataset_type,
name_expanded) are computed, never given: `make_name_expanded` draws the run name once per run
(the trainer keeps it in its checkpoints, not in config.json, whose fields define the experiment:
the name's uuid differs from seed to seed); it names the wandb run and the `--save` directory.

`log_every` (100) keeps the logging-only forwards (q_random_std etc.) under 1% of the work and
gives 10 train records per default epoch.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainAgentConfig:
    """All settings of one RAVL training run (maps one to one onto `eor train-agent`)."""

    # --- run ---------------------------------------------------------------------------------
    env_name: str = "halfcheetah-medium-v2"
    """D4RL dataset name (or env name with --dataset); picks the env, its termination and score."""
    dataset: str | None = None
    """Dataset name or HDF5 path; default: the dataset named by env_name."""
    seed: int = 42
    device: str = "auto"
    """"auto" (CUDA when visible, else CPU: the reference's default), "cpu", "cuda:0", ..."""
    run_dir: str | None = None
    """Output directory; default runs/<env_name>-s<seed>-<UTC time>."""
    epochs: int = 3000
    updates_per_epoch: int = 1000
    eval_every: int = 1
    """Evaluate after epochs 1, N+1, 2N+1, ... as the reference does, and always after the last
    epoch; 0 = only at the end."""
    eval_episodes: int = 10
    eval_max_steps: int | None = None
    """Cap on evaluation episode length (default: the env's 1000-step limit); for quick tests."""
    checkpoint_every: int = 1
    """Rewrite checkpoints/latest.pt (whole state, model buffer included) every this many epochs.

    The model buffer dominates its size (halfcheetah at the defaults: 1.25M transitions, about
    210 MB); raise this if writing it each epoch costs too much. The last epoch, Ctrl-C and
    --save_every epochs always write it."""
    save_every: int = 0
    """Also keep checkpoints/epoch_XXXX.pt (learner only) every this many epochs; 0 = never."""
    log_every: int = 100
    """Write a "train" metrics record every this many updates."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (the reference's deterministic_torch) and, for
    bit-reproducible CPU runs, one intra-op thread."""
    wandb: bool = False
    """Mirror the metrics to Weights & Biases (the reference always did; eor only on request)."""
    wandb_project: str = "RAVL"
    wandb_group: str = "test"
    name: str = "ravl"
    """Base of name_expanded (the wandb run name and the --save directory)."""
    name_prefix: str = ""
    save: bool = False
    """At the end of the run write the reference's agent file, SAVE_DIR/weights.pt, where
    SAVE_DIR = save_path/agent_<name_expanded> (with config.yaml, written at the start)."""
    save_path: str | None = "./trained_agents"
    quiet: bool = False

    # --- data mix ----------------------------------------------------------------------------
    batch_size: int = 256
    dataset_ratio: float = 0.05
    """int(dataset_ratio * batch_size) real transitions per batch, the rest from the model buffer."""

    # --- rollouts ----------------------------------------------------------------------------
    rollouts_per_epoch: int = 50_000
    steps_k: int = 5
    buffer_retain_epochs: int = 5
    load_model_dir: str | None = None

    # --- learner (RAVLConfig) ------------------------------------------------------------------
    hidden_dim: int = 256
    num_critics: int = 10
    gamma: float = 0.99
    tau: float = 5e-3
    eta: float = 1.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    max_action: float = 1.0
    """The actor acts in [-max_action, max_action] (tanh output scaled), in rollouts and in
    evaluation. Every supported env's action box is [-1, 1]: beyond it MuJoCo clips the
    controls (the control cost uses the action as given), as with the reference."""
    alpha: float = 0.1
    """The fixed entropy coefficient when auto_alpha is False (unused when it is True)."""
    auto_alpha: bool = True
    """Learn α (log α starts at 0); False keeps α = alpha for the whole run."""
    target_entropy: float | None = None
    """Target entropy of the α loss; None means -act_dim."""

    # ------------------------------------------------------------------------------------------
    @property
    def num_real(self) -> int:
        """Real transitions per batch: int(dataset_ratio * batch_size) (0.05 * 256 -> 12)."""
        return int(self.dataset_ratio * self.batch_size)

    @property
    def num_model(self) -> int:
        """Model transitions per batch: the rest of the batch (244 at the defaults)."""
        return self.batch_size - self.num_real

    @property
    def model_buffer_capacity(self) -> int:
        """FIFO model buffer size: rollouts_per_epoch * steps_k * buffer_retain_epochs."""
        return self.rollouts_per_epoch * self.steps_k * self.buffer_retain_epochs

    @property
    def env_name_short(self) -> str:
        """The reference's short env name: "halfcheetah-medium-v2" -> "hc-med"."""
        return short_env_name(self.env_name)

    @property
    def env_type(self) -> str:
        return self.env_name_short.split("-", 1)[0]

    @property
    def dataset_type(self) -> str:
        parts = self.env_name_short.split("-", 1)
        return parts[1] if len(parts) > 1 else ""

    def make_name_expanded(self, uid: str | None = None) -> str:
        """The reference's run name: [name_prefix-]name-<env short>-N..-eta..-k..-r..--uid."""
        uid = uid if uid is not None else str(uuid.uuid4())[:8]
        prefix = f"{self.name_prefix}-" if self.name_prefix != "" else ""
        return (
            f"{prefix}{self.name}-{self.env_name_short}-N{self.num_critics}-eta{self.eta}"
            f"-k{self.steps_k}-r{self.dataset_ratio}--{uid}"
        )

    def agent_save_dir(self, name_expanded: str) -> Path:
        """Where --save puts config.yaml and weights.pt: save_path/agent_<name_expanded>."""
        if not self.save_path:
            raise ValueError("save_path must be given when save is True (save path required)")
        return Path(self.save_path) / f"agent_{name_expanded}"

    def reference_dict(self, name_expanded: str | None = None) -> dict[str, Any]:
        """The config under the reference's TrainConfig field names, in its order (for the
        --save directory's config.yaml); name_expanded: the run's name (make_name_expanded)."""
        out: dict[str, Any] = {}
        for ref_name, ours in REFERENCE_FIELDS.items():
            out[ref_name] = name_expanded if ours == "name_expanded" else getattr(self, ours)
        return out

    def validate(self, *, require_model_dir: bool = True) -> None:
        """Raise ValueError naming the first bad field and what was expected."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        def non_negative_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")

        for name in (
            "epochs",
            "updates_per_epoch",
            "batch_size",
            "eval_episodes",
            "log_every",
            "rollouts_per_epoch",
            "steps_k",
            "buffer_retain_epochs",
            "hidden_dim",
            "num_critics",
        ):
            positive_int(name)
        positive_int("checkpoint_every")
        for name in ("eval_every", "save_every"):
            non_negative_int(name)
        if self.eval_max_steps is not None:
            positive_int("eval_max_steps")
        if not (0.0 <= self.dataset_ratio <= 1.0) or math.isnan(self.dataset_ratio):
            raise ValueError(f"dataset_ratio must be in [0, 1], got {self.dataset_ratio!r}")
        if self.eta < 0 or not math.isfinite(self.eta):
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta!r}")
        if self.eta > 0 and self.num_critics < 2:
            raise ValueError(
                f"num_critics must be >= 2 when eta > 0 (the diversity term compares pairs of "
                f"critics), got num_critics={self.num_critics} with eta={self.eta}; "
                "use --eta 0 for a single critic"
            )
        if not (0.0 <= self.gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not (0.0 < self.tau <= 1.0):
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (self.max_action > 0 and math.isfinite(self.max_action)):
            raise ValueError(f"max_action must be a positive number, got {self.max_action!r}")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ValueError(f"target_entropy must be finite or None, got {self.target_entropy!r}")
        for name in ("auto_alpha", "save", "deterministic", "wandb", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.save and not self.save_path:
            raise ValueError("save_path must be given when save is True (save path required)")
        for name in ("name", "name_prefix"):
            value = getattr(self, name)
            if "/" in value or "\\" in value:
                raise ValueError(
                    f"{name} must not contain a path separator (it names the save directory), "
                    f"got {value!r}"
                )
        if not self.env_name:
            raise ValueError("env_name must be given, e.g. halfcheetah-medium-v2")
        if require_model_dir and not self.load_model_dir:
            raise ValueError(
                "load_model_dir must be given: a directory written by `eor train-model`"
            )

    def learner_kwargs(self) -> dict[str, Any]:
        """The learner group, as keyword arguments for `RAVLConfig`."""
        return {name: getattr(self, name) for name in LEARNER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainAgentConfig:
        """Inverse of `to_dict`; unknown keys (e.g. eor_version in config.json) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> TrainAgentConfig:
        return dataclasses.replace(self, **changes)


LEARNER_FIELDS: tuple[str, ...] = (
    "hidden_dim",
    "num_critics",
    "gamma",
    "tau",
    "eta",
    "actor_lr",
    "critic_lr",
    "alpha_lr",
    "max_action",
    "alpha",
    "auto_alpha",
    "target_entropy",
)
"""TrainAgentConfig fields that are RAVLConfig fields of the same name."""

REFERENCE_FIELDS: dict[str, str] = {
    "project": "wandb_project",
    "group": "wandb_group",
    "name": "name",
    "name_prefix": "name_prefix",
    "env_name_short": "env_name_short",
    "env_type": "env_type",
    "dataset_type": "dataset_type",
    "name_expanded": "name_expanded",
    "hidden_dim": "hidden_dim",
    "num_critics": "num_critics",
    "gamma": "gamma",
    "tau": "tau",
    "eta": "eta",
    "actor_learning_rate": "actor_lr",
    "critic_learning_rate": "critic_lr",
    "max_action": "max_action",
    "alpha": "alpha",
    "auto_alpha": "auto_alpha",
    "alpha_learning_rate": "alpha_lr",
    "target_entropy": "target_entropy",
    "env_name": "env_name",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "updates_per_epoch": "updates_per_epoch",
    "eval_episodes": "eval_episodes",
    "eval_every": "eval_every",
    "save": "save",
    "save_path": "save_path",
    "deterministic_torch": "deterministic",
    "seed": "seed",
    "log_every": "log_every",
    "device": "device",
    "load_model_dir": "load_model_dir",
    "dataset_ratio": "dataset_ratio",
    "steps_k": "steps_k",
    "rollouts_per_epoch": "rollouts_per_epoch",
    "buffer_retain_epochs": "buffer_retain_epochs",
}
"""Every field of the reference's TrainConfig, in its order -> the TrainAgentConfig field (or
property) that holds it."""

DERIVED_FIELDS: tuple[str, ...] = ("env_name_short", "env_type", "dataset_type", "name_expanded")
"""Reference fields its __post_init__ computes (a given value is overwritten there); eor
computes them too and refuses them on the command line."""

_ENV_SHORT = {"halfcheetah": "hc", "hopper": "hop", "walker2d": "w2d", "ant": "ant"}
_KIND_SHORT = {
    "random": "rand",
    "medium": "med",
    "medium-replay": "mixed",
    "medium-expert": "medexp",
    "expert": "exp",
    "full-replay": "full",
}


def short_env_name(env_name: str) -> str:
    """The reference's SHORTENED_ENV_NAMES ("walker2d-medium-replay-v2" -> "w2d-mixed"),
    extended the same way to ant and full-replay; a bare env name gives its short form alone
    ("hopper" -> "hop"); anything else is returned without dashes."""
    for env, short in _ENV_SHORT.items():
        if env_name == env:
            return short
        if env_name.startswith(f"{env}-") and env_name.endswith("-v2"):
            kind = env_name[len(env) + 1 : -3]
            if kind in _KIND_SHORT:
                return f"{short}-{_KIND_SHORT[kind]}"
    return env_name.replace("-", "")
