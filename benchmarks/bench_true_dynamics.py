"""The rollout phase in the simulator (`--true_dynamics`) beside the learned model's.

One rollout phase of the training loop (`eor.agent.rollout.rollout_phase`: R distinct start
states from the dataset, k steps of the stochastic actor) with each dynamics model, on the same
start states, actor and device, in one process:

* learned: an untrained 7-member `eor.dynamics.DynamicsEnsemble` (hidden 200, 4 layers; the
  weights' values do not change its cost), its gathered elite step, torch's threads;
* simulator: `eor.envs.true_dynamics.SimulatorDynamics` (`mujoco.rollout`, frame_skip substeps
  per step), with its default threads and with 1 thread.

The start states are a random-policy dataset collected here with the real simulator (no
download). The two run alternately, `repeats` times each. The "speedup" keys are
learned time / simulator time: below 1 the simulator is the slower one (it is, except for
halfcheetah's cheap Euler steps, see benchmarks/README.md), so the key says how much of the
learned model's speed a true-dynamics run gives up. Also `<env>_sim_threads`: the 1-thread
simulator time / the default-threads one.

    python benchmarks/bench_true_dynamics.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eor  # noqa: E402
from benchmarks.common import parse_args, print_table, write_results  # noqa: E402
from eor.agent import RAVL, RAVLConfig  # noqa: E402
from eor.agent.rollout import rollout_phase  # noqa: E402
from eor.data import collect, load_dataset  # noqa: E402
from eor.dynamics import DynamicsEnsemble  # noqa: E402
from eor.envs import get_env  # noqa: E402
from eor.envs.true_dynamics import SIMULATED_ENVS, SimulatorDynamics, default_threads  # noqa: E402


def phase_time(model: Any, actor: Any, real: Any, rollouts: int, k: int) -> tuple[float, int]:
    """Seconds of one rollout phase (fresh model buffer, same generator seed) and its
    stored transitions."""
    buf = eor.ReplayBuffer(rollouts * k, real.obs_dim, real.act_dim, seed=4)
    generator = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    stats = rollout_phase(
        actor, model, real, buf, num_rollouts=rollouts, steps_k=k, generator=generator,
        device="cpu",
    )  # fmt: skip
    return time.perf_counter() - t0, stats.transitions_added


def bench_env(
    name: str, rollouts: int, k: int, repeats: int, rows: int, folder: Path
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    spec = get_env(name)
    path = collect(
        f"{name}-random-v2", steps=rows, seed=0, out=folder / f"{name}.hdf5", progress=False
    )
    real = load_dataset(str(path), env=name).to_buffer(seed=3)
    actor = RAVL(RAVLConfig(obs_dim=spec.obs_dim, act_dim=spec.act_dim), seed=0).actor
    providers: dict[str, Any] = {
        "learned": DynamicsEnsemble(
            spec.obs_dim, spec.act_dim, env_name=name, generator=torch.Generator().manual_seed(0)
        ),
        "simulator": SimulatorDynamics(name),
        "simulator_1thread": SimulatorDynamics(name, nthread=0),
    }
    for model in providers.values():  # warm-up: first-call costs (allocations, thread pool)
        phase_time(model, actor, real, min(rollouts, 256), 1)
    times: dict[str, list[float]] = {p: [] for p in providers}
    stored: dict[str, int] = {}
    for _ in range(repeats):  # alternating, so machine noise hits all alike
        for p, model in providers.items():
            seconds, n = phase_time(model, actor, real, rollouts, k)
            times[p].append(seconds)
            stored[p] = n
    out = []
    med = {}
    for p, ts in times.items():
        ts.sort()
        med[p] = ts[len(ts) // 2]
        threads = providers[p].nthread if p.startswith("simulator") else torch.get_num_threads()
        out.append(
            {
                "env": name,
                "case": f"rollout phase ({rollouts} x {k})",
                "impl": p,
                "threads": max(1, threads),
                "median_s": med[p],
                "min_s": ts[0],
                "max_s": ts[-1],
                "us_per_row_step": 1e6 * med[p] / (rollouts * k),
                "transitions": stored[p],
                "repeats": repeats,
            }
        )
    providers["simulator"].close()
    providers["simulator_1thread"].close()
    speedups = {
        f"{name}_learned_over_sim": med["learned"] / med["simulator"],
        f"{name}_sim_threads": med["simulator_1thread"] / med["simulator"],
    }
    out[1]["learned_over_sim"] = speedups[f"{name}_learned_over_sim"]
    return out, speedups


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    rollouts, k, repeats, rows = (2_000, 5, 3, 5_000) if args.quick else (50_000, 5, 3, 100_000)
    print(
        f"rollout phase, {rollouts} rollouts x {k} steps, {repeats} repeats; torch threads "
        f"{torch.get_num_threads()}, simulator threads {default_threads()}",
        file=sys.stderr,
    )
    results: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SIMULATED_ENVS:
            rows_env, sp = bench_env(name, rollouts, k, repeats, rows, Path(tmp))
            results += rows_env
            speedups.update(sp)
    print_table(
        results,
        ["env", "case", "impl", "threads", "median_s", "us_per_row_step", "learned_over_sim"],
    )
    print("speedups (learned / simulator; < 1: the simulator is slower):", speedups)
    path = write_results(
        "true_dynamics",
        results,
        speedups,
        out=args.out,
        extra={"quick": bool(args.quick), "rollouts": rollouts, "steps_k": k},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
