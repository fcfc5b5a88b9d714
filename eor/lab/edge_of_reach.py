"""The edge-of-reach experiment on the point mass, with the TRUE dynamics (docs/lab.md).

Three methods train on k-step rollouts of `eor.lab.pointmass.PointMass` itself (no learned
model, so no model error), with eor's own pieces: the `eor.agent.ravl.RAVL` learner, C++
`eor.ReplayBuffer`s for the data and the rollouts, `eor.mixed_batch.MixedBatchSampler` for the
real/model mix and `eor.agent.rollout.rollout_phase` for the rollouts (docs/algorithm.md §3.5):

    base   SAC with N = 2 critics, η = 0 (the min over two critics, no diversity term);
    patch  base, with the Bellman target of every row whose next state is edge-of-reach
           (`ReachLabels.edge_of_reach`, exact) replaced by r + γ(1 − d)·V*(s′), V* the
           oracle of `value_iteration` (`OraclePatchedRAVL`);
    ravl   RAVL: N = 10 critics, η = 1 (docs/algorithm.md §3 defaults).

The patch uses the optimal value V*, without SAC's entropy bonus: the soft value of the current
policy is not known in closed form, and with a small α the two differ little.

Each evaluation (`evaluate`) logs: the return of the deterministic policy in the true env from
fixed dataset start states (and the optimal return from the same starts), the mean Q(s, π(s))
over the critics at dataset states beside the true Q*(s, π(s)) there, and the ensemble std of
Q(s, π(s)) at states sampled uniformly from the edge-of-reach set and from the within-reach set
R_{k−1}, chosen by the exact labels.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eor.agent.ravl import RAVL, NonFiniteLossError, RAVLConfig
from eor.agent.rollout import rollout_phase
from eor.buffer import ReplayBuffer
from eor.lab.pointmass import PointMass, ReachLabels, ValueGrid, make_dataset, value_iteration
from eor.mixed_batch import MixedBatchSampler


@dataclass(frozen=True)
class Method:
    """One of the compared methods."""

    name: str
    num_critics: int
    eta: float
    patch: bool
    title: str


def methods_for(config: LabConfig) -> dict[str, Method]:
    """The three methods, with the critic counts and η of `config`."""
    n, eta = config.base_num_critics, 0.0
    return {
        "base": Method("base", n, eta, False, f"base: SAC, N={n}, η=0"),
        "patch": Method("patch", n, eta, True, f"base + oracle patch at edge-of-reach (N={n})"),
        "ravl": Method(
            "ravl",
            config.ravl_num_critics,
            config.ravl_eta,
            False,
            f"RAVL: N={config.ravl_num_critics}, η={config.ravl_eta:g}",
        ),
    }


METHOD_NAMES: tuple[str, ...] = ("base", "patch", "ravl")


@dataclass
class LabConfig:
    """Settings of `eor lab edge-of-reach`. The learner's remaining hyperparameters (τ, lrs,
    auto-α, target entropy −2) are docs/algorithm.md §3's defaults."""

    methods: tuple[str, ...] = METHOD_NAMES
    seed: int = 0
    # --- training (docs/algorithm.md §3.5; sizes scaled down to minutes on 2 CPU cores) ---
    epochs: int = 25
    updates_per_epoch: int = 1000
    steps_k: int = 5
    rollouts_per_epoch: int = 10_000
    buffer_retain_epochs: int = 5
    dataset_size: int = 10_000
    batch_size: int = 256
    dataset_ratio: float = 0.05
    # --- learners ---
    hidden_dim: int = 64
    gamma: float = 0.99
    base_num_critics: int = 2
    ravl_num_critics: int = 10
    ravl_eta: float = 1.0
    # --- evaluation ---
    eval_every: int = 1
    eval_starts: int = 20
    eval_horizon: int = 40
    probe_states: int = 500
    log_every: int = 100
    value_cells_per_step: int = 10
    device: str = "cpu"
    # The networks are small: one thread is about as fast as two on an idle 2-core machine and
    # far faster on a busy one (two threads contending took 50x longer per update here).
    threads: int = 1

    @classmethod
    def quick(cls, **changes: Any) -> LabConfig:
        """A run of seconds with the same outputs (for tests and a first look)."""
        base = cls(
            epochs=2,
            updates_per_epoch=50,
            rollouts_per_epoch=500,
            dataset_size=1000,
            eval_starts=5,
            eval_horizon=20,
            probe_states=100,
            log_every=25,
            value_cells_per_step=2,
        )
        return dataclasses.replace(base, **changes)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and what was expected."""
        if not self.methods:
            raise ValueError(f"methods must name at least one of {', '.join(METHOD_NAMES)}")
        for name in self.methods:
            if name not in METHOD_NAMES:
                raise ValueError(
                    f"methods: unknown method {name!r}; expected some of {', '.join(METHOD_NAMES)}"
                )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat a method, got {', '.join(self.methods)}")
        for name in (
            "epochs",
            "updates_per_epoch",
            "steps_k",
            "rollouts_per_epoch",
            "buffer_retain_epochs",
            "dataset_size",
            "batch_size",
            "hidden_dim",
            "base_num_critics",
            "ravl_num_critics",
            "eval_starts",
            "eval_horizon",
            "probe_states",
            "log_every",
            "value_cells_per_step",
            "threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int):
            raise ValueError(f"eval_every must be a non-negative integer, got {self.eval_every!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be a non-negative integer, got {self.eval_every!r}")
        if not 0.0 <= self.dataset_ratio <= 1.0:
            raise ValueError(f"dataset_ratio must be in [0, 1], got {self.dataset_ratio!r}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma!r}")
        if not (math.isfinite(self.ravl_eta) and self.ravl_eta >= 0.0):
            raise ValueError(f"ravl_eta must be a number >= 0, got {self.ravl_eta!r}")
        if self.rollouts_per_epoch > self.dataset_size:
            raise ValueError(
                f"rollouts_per_epoch ({self.rollouts_per_epoch}) must not exceed dataset_size "
                f"({self.dataset_size}): start states are drawn without replacement"
            )
        if self.eval_starts > self.dataset_size:
            raise ValueError(
                f"eval_starts ({self.eval_starts}) must not exceed dataset_size ({self.dataset_size})"
            )
        n_model = self.batch_size - int(self.dataset_ratio * self.batch_size)
        if n_model > self.rollouts_per_epoch * self.steps_k:
            raise ValueError(
                f"one epoch of rollouts ({self.rollouts_per_epoch} x {self.steps_k}) must hold "
                f"at least the {n_model} model rows of a batch; raise rollouts_per_epoch"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["methods"] = list(self.methods)
        return out


# --------------------------------------------------------------------------- the patched learner
class OraclePatchedRAVL(RAVL):
    """RAVL whose Bellman targets at edge-of-reach next states are the oracle's.

    For rows whose next state s′ is edge-of-reach for `steps_k`-step rollouts, the target is
    r + γ(1 − d)·V*(s′) (V* = `oracle`); every other row keeps RAVL's target. The learner's own
    target is computed for all rows first, so its random stream is the unpatched one.
    """

    def __init__(
        self,
        config: RAVLConfig,
        *,
        reach: ReachLabels,
        oracle: Callable[[Tensor], Tensor],
        steps_k: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        if isinstance(steps_k, bool) or not isinstance(steps_k, int) or steps_k < 1:
            raise ValueError(f"steps_k must be an integer >= 1, got {steps_k!r}")
        self.reach = reach
        self.oracle = oracle
        self.steps_k = steps_k
        self.patched_rows = 0
        self.target_rows = 0

    @torch.no_grad()
    def _critic_target(self, rew: Tensor, next_obs: Tensor, done: Tensor) -> Tensor:
        target = super()._critic_target(rew, next_obs, done)  # [B]
        edge = self.reach.edge_of_reach(next_obs, self.steps_k)  # [B] bool
        value = self.oracle(next_obs).to(target.dtype)  # [B]
        patched = rew + self.gamma * (1.0 - done) * value
        self.patched_rows += int(edge.sum())
        self.target_rows += int(edge.numel())
        return torch.where(edge, patched, target)


# --------------------------------------------------------------------------- the shared set-up
@dataclass
class LabSetup:
    """What every method shares: the env, its data, the labels, the oracle, the probe states."""

    env: PointMass
    data: dict[str, np.ndarray]
    reach: ReachLabels
    oracle: ValueGrid
    eval_starts: Tensor  # [E, 2] float32, dataset states
    probe_data: Tensor  # [P, 2] dataset states
    probe_edge: Tensor  # [P, 2] uniform on the edge-of-reach set
    probe_within: Tensor  # [P, 2] uniform on R_{k-1}
    optimal_return: float  # mean over eval_starts of the optimal policy's return
    optimal_final_distance: float


def build_setup(config: LabConfig, env: PointMass | None = None) -> LabSetup:
    """The env (default `PointMass()`), dataset, labels, oracle and probe states of a run."""
    env = env or PointMass()
    data = make_dataset(env, config.dataset_size, config.seed)
    reach = ReachLabels(data["obs"], env)
    oracle = value_iteration(env, config.gamma, cells_per_step=config.value_cells_per_step)
    rng = np.random.default_rng(config.seed + 10)
    obs = torch.from_numpy(data["obs"])
    starts = obs[rng.choice(len(obs), config.eval_starts, replace=False)]
    probe_data = obs[rng.choice(len(obs), min(config.probe_states, len(obs)), replace=False)]
    probe_edge, probe_within = _probe_by_label(env, reach, config, rng)
    states, rewards = env.rollout(env.optimal_action, starts.double(), config.eval_horizon)
    goal = torch.tensor(env.goal, dtype=torch.float64)
    return LabSetup(
        env=env,
        data=data,
        reach=reach,
        oracle=oracle,
        eval_starts=starts,
        probe_data=probe_data,
        probe_edge=probe_edge,
        probe_within=probe_within,
        optimal_return=float(rewards.sum(0).mean()),
        optimal_final_distance=float((states[-1] - goal).norm(dim=-1).mean()),
    )


def _probe_by_label(
    env: PointMass, reach: ReachLabels, config: LabConfig, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """Up to `probe_states` states uniform on the edge-of-reach set and on R_{k−1} (rejection
    from 50 batches of uniform states in the box, labelled exactly). A set that misses the box
    (no edge-of-reach states when R_{k−1} covers it) comes back empty; its statistics are NaN."""
    k, want = config.steps_k, config.probe_states
    edge: list[Tensor] = []
    within: list[Tensor] = []
    n_edge = n_within = 0
    for batch in range(50):
        x = torch.from_numpy(rng.uniform(env.low, env.high, (20_000, 2)).astype(np.float32))
        steps = reach.min_steps(x)
        e, w = x[steps == k], x[steps <= k - 1]
        edge.append(e)
        within.append(w)
        n_edge += len(e)
        n_within += len(w)
        if n_edge >= want and n_within >= want:
            break
        if batch >= 4 and n_within >= want and n_edge == 0:
            break  # none in 100,000 uniform states: the edge set misses the box (or nearly)
    return torch.cat(edge)[:want], torch.cat(within)[:want]


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(learner: RAVL, setup: LabSetup, config: LabConfig) -> dict[str, Any]:
    """One evaluation record (module docstring) of `learner`'s current actor and critics."""
    actor, env = learner.actor, setup.env
    device, dtype = learner.device, learner.dtype

    def policy(obs: Tensor) -> Tensor:
        return actor.act(obs.to(device, dtype), deterministic=True).cpu()

    states, rewards = env.rollout(policy, setup.eval_starts, config.eval_horizon)
    returns = rewards.sum(0)  # [E]
    goal = torch.tensor(env.goal, dtype=states.dtype)
    final = states[-1]  # [E, 2]
    final_steps = setup.reach.min_steps(final)

    def q_stats(obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Q(s, π(s)) `[N, P]`, the actions `[P, 2]`, the ensemble std per state `[P]`)."""
        x = obs.to(device, dtype)
        act = actor.act(x, deterministic=True)
        q = learner.critic.q_values(x, act).cpu().double()  # [N, P]
        if q.shape[0] > 1 and q.shape[1] > 0:
            std = q.std(dim=0)  # [P], unbiased over the critics, as the learner logs it
        else:
            std = torch.zeros(q.shape[1], dtype=q.dtype)
        return q, act.cpu().double(), std

    q_data, act_data, _ = q_stats(setup.probe_data)
    next_data = env.next_state(setup.probe_data.double(), act_data)
    q_true = env.reward(next_data) + config.gamma * setup.oracle(next_data)  # [P]

    def mean(values: Tensor) -> float:
        return float(values.mean()) if values.numel() else math.nan  # an empty probe set: NaN

    q_edge, _, std_edge = q_stats(setup.probe_edge)
    q_within, _, std_within = q_stats(setup.probe_within)
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std(unbiased=False)),
        "final_goal_distance": float((final - goal).norm(dim=-1).mean()),
        "final_beyond_reach": float((final_steps > config.steps_k).double().mean()),
        "q_data_mean": float(q_data.mean()),
        "q_data_true": float(q_true.mean()),
        "q_edge_mean": mean(q_edge),
        "q_within_mean": mean(q_within),
        "q_std_edge": mean(std_edge),
        "q_std_within": mean(std_within),
        "v_true_edge": mean(setup.oracle(setup.probe_edge.double())),
        "v_true_within": mean(setup.oracle(setup.probe_within.double())),
        "trajectories": states.transpose(0, 1).tolist(),  # [E, H + 1, 2]
    }


def buffer_reach(
    buffer: ReplayBuffer, reach: ReachLabels, k: int, rng: np.random.Generator
) -> dict[str, float]:
    """Shares of the model buffer's next states (a sample of up to 2000) that are edge-of-reach
    and that are beyond reach (the latter is 0 with the true dynamics)."""
    n = len(buffer)
    if n == 0:
        return {"buffer_edge_share": math.nan, "buffer_beyond_share": math.nan}
    idx = rng.choice(n, min(n, 2000), replace=False)
    next_obs = torch.from_numpy(np.array(buffer.fields()["next_obs"][idx]))
    steps = reach.min_steps(next_obs)
    return {
        "buffer_edge_share": float((steps == k).double().mean()),
        "buffer_beyond_share": float((steps > k).double().mean()),
    }


# --------------------------------------------------------------------------- one method
def evaluates_after(epoch: int, every: int, epochs: int) -> bool:
    """Evaluate after epochs 1, every + 1, 2·every + 1, ... and after the last (every 0: the
    last only), as `eor train-agent` does."""
    return epoch == epochs or (every > 0 and (epoch - 1) % every == 0)


def train_method(
    method: Method,
    setup: LabSetup,
    config: LabConfig,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train one method with the true dynamics; returns its history and final numbers."""
    device = torch.device(config.device)
    learner_config = RAVLConfig(
        obs_dim=2,
        act_dim=2,
        hidden_dim=config.hidden_dim,
        num_critics=method.num_critics,
        eta=method.eta,
        gamma=config.gamma,
    )
    # Same seed for every method: the dataset, the actor's initial weights, the buffers' and
    # rollouts' streams start alike (the critics differ with N).
    learner: RAVL
    if method.patch:
        learner = OraclePatchedRAVL(
            learner_config,
            reach=setup.reach,
            oracle=setup.oracle,
            steps_k=config.steps_k,
            device=device,
            seed=config.seed,
        )
    else:
        learner = RAVL(learner_config, device=device, seed=config.seed)
    real = ReplayBuffer(config.dataset_size, 2, 2, seed=config.seed)
    real.add(*(setup.data[k] for k in ("obs", "act", "rew", "next_obs", "done")))
    capacity = config.rollouts_per_epoch * config.steps_k * config.buffer_retain_epochs
    model_buffer = ReplayBuffer(capacity, 2, 2, seed=config.seed + 1)
    generator = torch.Generator(device=device).manual_seed(config.seed + 2)
    n_real = int(config.dataset_ratio * config.batch_size)
    sampler = MixedBatchSampler(real, model_buffer, n_real, config.batch_size - n_real, device)
    probe_rng = np.random.default_rng(config.seed + 3)

    history: list[dict[str, Any]] = []
    last_log: dict[str, float] = {}
    diverged_at: int | None = None
    start = time.perf_counter()
    update_time = 0.0
    for epoch in range(1, config.epochs + 1):
        rollout_phase(
            learner.actor,
            setup.env,
            real,
            model_buffer,
            num_rollouts=config.rollouts_per_epoch,
            steps_k=config.steps_k,
            generator=generator,
            device=device,
        )
        t0 = time.perf_counter()
        try:
            for _ in range(config.updates_per_epoch):
                log = (learner.num_updates + 1) % config.log_every == 0
                out = learner.update(sampler.sample(), log=log)
                if log:
                    last_log = out
        except NonFiniteLossError as exc:
            diverged_at = learner.num_updates
            echo(f"[{method.name}] diverged: {exc}")
        update_time += time.perf_counter() - t0
        if diverged_at is not None:
            break
        if evaluates_after(epoch, config.eval_every, config.epochs):
            rec: dict[str, Any] = {"epoch": epoch, "updates": learner.num_updates}
            rec.update(evaluate(learner, setup, config))
            rec.update(buffer_reach(model_buffer, setup.reach, config.steps_k, probe_rng))
            for key in ("alpha", "critic_loss", "q_policy_mean"):
                rec[key] = last_log.get(key, math.nan)
            if isinstance(learner, OraclePatchedRAVL):
                rec["patched_share"] = learner.patched_rows / max(learner.target_rows, 1)
            rec["time"] = time.perf_counter() - start
            history.append(rec)
            echo(_progress_line(method, rec, config, setup))
    wall = time.perf_counter() - start
    final = {k: v for k, v in history[-1].items() if k != "trajectories"} if history else {}
    return {
        "method": method.name,
        "title": method.title,
        "num_critics": method.num_critics,
        "eta": method.eta,
        "patch": method.patch,
        "updates": learner.num_updates,
        "diverged_at_update": diverged_at,
        "wall_time_s": wall,
        "updates_per_s": learner.num_updates / max(update_time, 1e-9),
        "final": final,
        "best_return": max((r["return_mean"] for r in history), default=math.nan),
        "final_trajectories": history[-1]["trajectories"] if history else [],
        "history": [{k: v for k, v in r.items() if k != "trajectories"} for r in history],
    }


def _progress_line(method: Method, rec: dict[str, Any], config: LabConfig, setup: LabSetup) -> str:
    return (
        f"[{method.name}] epoch {rec['epoch']}/{config.epochs} updates {rec['updates']}: "
        f"return {rec['return_mean']:.2f} (optimal {setup.optimal_return:.2f}), "
        f"Q(data) {rec['q_data_mean']:.3g} (true {rec['q_data_true']:.3g}), "
        f"Q std edge {rec['q_std_edge']:.3g} / within {rec['q_std_within']:.3g}, "
        f"{rec['time']:.0f} s"
    )


# --------------------------------------------------------------------------- the whole lab
def run_lab(
    config: LabConfig,
    out_dir: str | Path,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train every method of `config`, write OUT/<method>.png and OUT/summary.json.

    Returns the summary (also written to summary.json). Runs with `config.threads` torch
    threads, restoring the previous count afterwards.
    """
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_lab(config, out, echo)
    finally:
        torch.set_num_threads(threads)


def _run_lab(config: LabConfig, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    from eor.agent.runlog import jsonable
    from eor.fileio import atomic_write_json
    from eor.lab.plot import plot_method

    t0 = time.perf_counter()
    setup = build_setup(config)
    echo(
        f"point mass: data {config.dataset_size} transitions, k = {config.steps_k}, "
        f"oracle by value iteration ({setup.oracle.values.shape[0]}² grid, "
        f"{setup.oracle.sweeps} sweeps); optimal return {setup.optimal_return:.2f}"
    )
    all_methods = methods_for(config)
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "env": setup.env.describe(),
        "optimal_return": setup.optimal_return,
        "optimal_final_goal_distance": setup.optimal_final_distance,
        "value_iteration": {
            "grid": int(setup.oracle.values.shape[0]),
            "spacing": setup.oracle.spacing,
            "sweeps": setup.oracle.sweeps,
        },
        "torch": torch.__version__,
        "methods": results,
    }
    for name in config.methods:
        method = all_methods[name]
        echo(f"[{name}] {method.title}: {config.epochs} x {config.updates_per_epoch} updates")
        result = train_method(method, setup, config, echo)
        figure = plot_method(result, setup, config, out / f"{name}.png")
        result["figure"] = str(figure)
        results[name] = result
        echo(f"[{name}] done in {result['wall_time_s']:.0f} s -> {figure}")
        summary["wall_time_s"] = time.perf_counter() - t0
        atomic_write_json(out / "summary.json", jsonable(summary))
    summary["wall_time_s"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", jsonable(summary))
    return summary
