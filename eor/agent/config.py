"""`TrainAgentConfig`: every setting of `eor train-agent`, one field per CLI option.

Fields are grouped as the training loop uses them:

* run: what to train on, where to write, how long, how often to evaluate, log and save;
* data mix: batch size and share of real transitions in each batch (docs/algorithm.md §3);
* rollouts: the model-rollout phase run at the start of every epoch (docs/algorithm.md §3);
* learner: the RAVL hyperparameters, inherited from `eor.agent.ravl.RAVLHyperparams` (declared
  and checked there, once); `learner_config` makes the learner's `RAVLConfig` from them.

Each field's `metadata["help"]` is its option's help text (`eor.agent.cli` generates the
options from the fields). config.json is the flat dict of the fields (`to_dict` / `from_dict`).

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from eor.agent.ravl import RAVLConfig, RAVLHyperparams


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RunConfig(RAVLHyperparams):
    """What a training command's config adds to the learner group it inherits (no fields): the
    learner's `RAVLConfig`, config.json's dict, and the checks its `validate` shares."""

    def learner_config(self, obs_dim: int, act_dim: int) -> RAVLConfig:
        """The learner's `RAVLConfig`: this config's learner group and the env's shapes."""
        learner = {f.name: getattr(self, f.name) for f in fields(RAVLHyperparams)}
        return RAVLConfig(obs_dim=obs_dim, act_dim=act_dim, **learner)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of `to_dict`; unknown keys (eor_version, env_id, ... in config.json) are
        ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def _check_integer(self, name: str, low: int) -> None:
        """ValueError unless field `name` is an int (not a bool) >= `low` (0 or 1)."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            kind = "a positive integer" if low == 1 else "a non-negative integer"
            raise ValueError(f"{name} must be {kind}, got {value!r}")

    def _check_bool(self, name: str) -> None:
        if not isinstance(getattr(self, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass
class TrainAgentConfig(RunConfig):
    """All settings of one RAVL training run (maps one to one onto `eor train-agent`).

    The learner group (hidden_dim ... target_entropy) is inherited from `RAVLHyperparams`.
    """

    # --- run ---------------------------------------------------------------------------------
    env_name: str = field(
        default="halfcheetah-medium-v2",
        metadata=_help("D4RL dataset name, e.g. halfcheetah-medium-v2 (picks env, data, score)."),
    )
    dataset: str | None = field(
        default=None,
        metadata=_help("Dataset name or HDF5/NPZ path to train on instead of env_name's dataset."),
    )
    seed: int = field(
        default=42, metadata=_help("Seed of the networks, buffers, rollouts and evaluation envs.")
    )
    device: str = field(
        default="auto",
        metadata=_help(
            "auto (cuda:0 if CUDA is visible, else cpu: the reference's default), "
            "cpu, cuda:0, cuda:1, ..."
        ),
    )
    run_dir: str | None = field(
        default=None,
        metadata=_help("Output directory [default: runs/<env_name>-s<seed>-<UTC time>]."),
    )
    epochs: int = field(
        default=3000,
        metadata=_help("Epochs (each: rollouts, updates_per_epoch updates, evaluation)."),
    )
    updates_per_epoch: int = field(default=1000, metadata=_help("Gradient updates per epoch."))
    eval_every: int = field(
        default=1,
        metadata=_help(
            "Evaluate after epochs 1, N+1, 2N+1, ... (as the reference) and after "
            "the last; 0: only after the last."
        ),
    )
    eval_episodes: int = field(
        default=10, metadata=_help("Deterministic evaluation episodes, run as one batch of envs.")
    )
    eval_max_steps: int | None = field(
        default=None,
        metadata=_help(
            "Cap evaluation episodes at N steps [default: the env's 1000]; for quick tests."
        ),
    )
    # The model buffer dominates latest.pt (halfcheetah at the defaults: 1.25M transitions,
    # about 210 MB); the last epoch, Ctrl-C and --save_every epochs always write it.
    checkpoint_every: int = field(
        default=1,
        metadata=_help(
            "Rewrite checkpoints/latest.pt (whole state, model buffer included) every N epochs."
        ),
    )
    save_every: int = field(
        default=0,
        metadata=_help(
            "Also keep checkpoints/epoch_XXXX.pt (learner only) every N epochs; 0: never."
        ),
    )
    log_every: int = field(
        default=100, metadata=_help("Write a train metrics record every N updates.")
    )
    deterministic: bool = field(
        default=False,
        metadata=_help(
            "torch.use_deterministic_algorithms (the reference's deterministic_torch)"
            ", and 1 CPU thread for bit-reproducible CPU runs."
        ),
    )
    threads: int | None = field(
        default=None,
        metadata=_help(
            "Torch intra-op CPU threads [default: torch's, one per core]; `eor sweep` sets "
            "each trial's CPUs. --deterministic runs with 1."
        ),
    )
    cuda_graph: bool = field(
        default=False,
        metadata=_help(
            "Replay each RAVL update as one captured CUDA graph (eor.agent.cuda_graph; needs "
            "CUDA, log steps run eagerly); default off until measured on a GPU."
        ),
    )
    wandb: bool = field(
        default=False,
        metadata=_help(
            "Mirror the metrics to Weights & Biases (needs `pip install wandb`; "
            "WANDB_MODE=offline works). Off by default (the reference always logged)."
        ),
    )
    wandb_project: str = field(default="RAVL", metadata=_help("wandb project name."))
    wandb_group: str = field(default="test", metadata=_help("wandb run group."))
    name: str = field(
        default="ravl",
        metadata=_help(
            "Run name: the base of name_expanded, the wandb run name and --save directory."
        ),
    )
    name_prefix: str = field(default="", metadata=_help("Prefix of name_expanded ('' for none)."))
    save: bool = field(
        default=False,
        metadata=_help(
            "At the end, write the reference's agent file SAVE_PATH/agent_"
            "<name_expanded>/weights.pt (with config.yaml, written at the start)."
        ),
    )
    save_path: str | None = field(
        default="./trained_agents",
        metadata=_help("Parent directory of --save's agent_<name_expanded> directory."),
    )
    quiet: bool = field(default=False, metadata=_help("No progress bar."))

    # --- data mix ----------------------------------------------------------------------------
    batch_size: int = field(default=256, metadata=_help("Transitions per update."))
    dataset_ratio: float = field(
        default=0.05,
        metadata=_help(
            "Share of real transitions in each batch, in [0, 1]: "
            "int(dataset_ratio * batch_size) real, the rest from the model buffer."
        ),
    )

    # --- rollouts ----------------------------------------------------------------------------
    rollouts_per_epoch: int = field(
        default=50_000,
        metadata=_help("Model rollouts (distinct dataset start states) per epoch."),
    )
    steps_k: int = field(default=5, metadata=_help("Model steps per rollout (k)."))
    buffer_retain_epochs: int = field(
        default=5, metadata=_help("Epochs of rollouts the FIFO model buffer keeps.")
    )
    load_model_dir: str | None = field(
        default=None,
        metadata=_help(
            "Directory of a dynamics model written by `eor train-model` (required unless "
            "--true_dynamics)."
        ),
    )
    true_dynamics: bool = field(
        default=False,
        metadata=_help(
            "Roll out in the MuJoCo simulator instead of a learned model (halfcheetah, hopper, "
            "walker2d; docs/algorithm.md §3.5); excludes --load_model_dir."
        ),
    )

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
        """Raise ValueError naming the first bad field and what was expected (the learner
        group's checks are `RAVLHyperparams.validate`'s)."""
        integer = self._check_integer
        for name in (
            "epochs",
            "updates_per_epoch",
            "batch_size",
            "eval_episodes",
            "log_every",
            "rollouts_per_epoch",
            "steps_k",
            "buffer_retain_epochs",
            "checkpoint_every",
        ):
            integer(name, 1)
        for name in ("eval_every", "save_every"):
            integer(name, 0)
        self._check_bool("cuda_graph")
        if self.eval_max_steps is not None:
            integer("eval_max_steps", 1)
        if self.threads is not None:
            integer("threads", 1)
        if not (0.0 <= self.dataset_ratio <= 1.0) or math.isnan(self.dataset_ratio):
            raise ValueError(f"dataset_ratio must be in [0, 1], got {self.dataset_ratio!r}")
        super().validate()
        for name in ("save", "deterministic", "wandb", "quiet", "true_dynamics"):
            self._check_bool(name)
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
        if self.true_dynamics and self.load_model_dir:
            raise ValueError(
                "true_dynamics: rollouts come from the simulator or from load_model_dir's "
                f"model, not both (load_model_dir={self.load_model_dir!r}); give one"
            )
        if require_model_dir and not self.load_model_dir and not self.true_dynamics:
            raise ValueError(
                "load_model_dir must be given: a directory written by `eor train-model` "
                "(or --true_dynamics: rollouts in the simulator)"
            )


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
