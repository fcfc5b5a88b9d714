"""`TrainOnlineConfig`: every setting of one `eor train-online` run (docs/online.md).

The learner group (hidden_dim ... target_entropy) is `RAVLHyperparams`', with the SAC defaults
of docs/online.md: two critics (clipped double Q, the min over both) and eta = 0 (no EDAC
diversity term), so that `eor.agent.ravl.RAVL` is plain SAC with auto-alpha. Each default's
source is in docs/online.md's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eor.agent.config import RunConfig


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainOnlineConfig(RunConfig):
    """All settings of one online SAC run (maps one to one onto `eor train-online`)."""

    # SAC's learner defaults (docs/online.md): two critics, no diversity term.
    num_critics: int = field(
        default=2, metadata=_help("Critics (N); SAC's clipped double Q takes the min over 2.")
    )
    eta: float = field(
        default=0.0,
        metadata=_help("Weight of the EDAC diversity term; 0 (SAC) by default."),
    )

    # --- run ---------------------------------------------------------------------------------
    env_name: str = field(
        default="halfcheetah",
        metadata=_help("Env: halfcheetah, hopper, walker2d or ant (the gymnasium v4 envs)."),
    )
    seed: int = field(
        default=0,
        metadata=_help("Seed of the networks, the env, the random actions and the buffer."),
    )
    device: str = field(
        default="auto",
        metadata=_help("auto (cuda:0 if CUDA is visible, else cpu), cpu, cuda:0, ..."),
    )
    run_dir: str | None = field(
        default=None,
        metadata=_help("Output directory [default: runs/online-<env_name>-s<seed>-<UTC time>]."),
    )
    total_steps: int = field(default=1_000_000, metadata=_help("Environment steps in all."))
    start_steps: int = field(
        default=10_000,
        metadata=_help("Uniformly random actions for the first N env steps, then the policy."),
    )
    update_after: int = field(
        default=1_000,
        metadata=_help(
            "First update after N env steps (>= batch_size); then one update per env step."
        ),
    )
    batch_size: int = field(default=256, metadata=_help("Transitions per update."))
    buffer_size: int = field(
        default=1_000_000, metadata=_help("Replay buffer capacity (FIFO) in transitions.")
    )
    max_episode_steps: int = field(
        default=1000,
        metadata=_help("Time limit of the training episodes (truncation, not a terminal)."),
    )
    eval_every: int = field(
        default=5_000, metadata=_help("Evaluate (and snapshot the policy) every N env steps.")
    )
    eval_episodes: int = field(
        default=10, metadata=_help("Deterministic evaluation episodes, run as one batch of envs.")
    )
    eval_max_steps: int | None = field(
        default=None,
        metadata=_help("Cap evaluation episodes at N steps [default: the env's 1000]."),
    )
    checkpoint_every: int = field(
        default=50_000,
        metadata=_help(
            "Rewrite checkpoints/latest.pt (whole state, replay buffer included) every N env "
            "steps (and at the end, and on Ctrl-C)."
        ),
    )
    save_policies: bool = field(
        default=True,
        metadata=_help(
            "At every evaluation keep checkpoints/policy_<env step>.pt (the actor) and list it "
            "with its returns in policies.json."
        ),
    )
    log_every: int = field(
        default=1_000, metadata=_help("Write a train metrics record every N updates.")
    )
    threads: int | None = field(
        default=None,
        metadata=_help("torch CPU threads (torch.set_num_threads) [default: torch's choice]."),
    )
    deterministic: bool = field(
        default=False,
        metadata=_help(
            "torch.use_deterministic_algorithms and 1 CPU thread (bit-reproducible CPU runs)."
        ),
    )
    quiet: bool = field(default=False, metadata=_help("No progress bar."))

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and what was expected."""
        integer = self._check_integer
        for name in (
            "total_steps",
            "batch_size",
            "buffer_size",
            "max_episode_steps",
            "eval_every",
            "eval_episodes",
            "checkpoint_every",
            "log_every",
            "update_after",
        ):
            integer(name, 1)
        integer("start_steps", 0)
        for name in ("eval_max_steps", "threads"):
            if getattr(self, name) is not None:
                integer(name, 1)
        for name in ("save_policies", "deterministic", "quiet"):
            self._check_bool(name)
        if self.update_after < self.batch_size:
            raise ValueError(
                f"update_after must be >= batch_size ({self.batch_size}): the first update "
                f"samples batch_size distinct transitions, got update_after={self.update_after}"
            )
        if self.buffer_size < self.batch_size:
            raise ValueError(
                f"buffer_size must be >= batch_size ({self.batch_size}), got {self.buffer_size}"
            )
        if not isinstance(self.env_name, str) or not self.env_name:
            raise ValueError("env_name must be given, e.g. halfcheetah")
        super().validate()


RESUME_OVERRIDABLE: frozenset[str] = frozenset(
    {
        "total_steps",
        "device",
        "eval_every",
        "eval_episodes",
        "eval_max_steps",
        "checkpoint_every",
        "save_policies",
        "log_every",
        "threads",
        "deterministic",
        "quiet",
    }
)
"""Settings `--resume` may change; the others define the run and must match the saved ones."""
