"""Edge-of-reach diagnostics: the cost of one probe measurement against the updates it follows.

`eor train-agent` measures its reach probe (`eor.agent.diagnostics.ReachProbe`: P = 256
dataset states rolled out k = 5 steps through the dynamics model, all N critics at every step,
one host read) once per `log_every` = 100 updates. This times, interleaved so that machine
noise hits both alike, a block of 10 updates (`RAVL.update`, mixed batches sampled from two
`eor.ReplayBuffer`s, as the training loop runs them) and one probe measurement, and reports

    overhead = probe time / (100 x update time)

the share of training time the diagnostics add at the default log interval (target < 2%).
Defaults: halfcheetah dims (S 17, A 6), batch 256 (12 real + 244 model), hidden 256, eta 1,
N in {10, 50}, one intra-op thread, a default-sized dynamics ensemble (7 members, 5 elites, 4 x 200, untrained:
the cost does not depend on the weights), and with `--simulator` also the probe through the
MuJoCo simulator (`--true_dynamics`).

    python benchmarks/bench_diagnostics.py [--quick] [--simulator]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eor  # noqa: E402
from benchmarks.common import parse_args, print_table, write_results  # noqa: E402
from eor.agent import RAVL, RAVLConfig  # noqa: E402
from eor.agent.diagnostics import PROBE_SIZE, ReachProbe  # noqa: E402
from eor.dynamics import DynamicsEnsemble  # noqa: E402

S, A, B, H, K = 17, 6, 256, 256, 5
REAL, MODEL = 12, 244
LOG_EVERY = 100  # eor train-agent's default


def arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "obs": rng.standard_normal((n, S), dtype=np.float32),
        "act": rng.uniform(-1, 1, (n, A)).astype(np.float32),
        "rew": rng.standard_normal(n, dtype=np.float32),
        "next_obs": rng.standard_normal((n, S), dtype=np.float32),
        "done": np.zeros(n, np.float32),
    }


def bench(n: int, rounds: int, block: int, model: Any, model_name: str) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    real = eor.ReplayBuffer.from_arrays(**arrays(20_000, rng), seed=1)
    fake = eor.ReplayBuffer.from_arrays(**arrays(50_000, rng), seed=2)
    learner = RAVL(RAVLConfig(obs_dim=S, act_dim=A, hidden_dim=H, num_critics=n, eta=1.0), seed=0)
    probe = ReachProbe(real, steps_k=K, device="cpu")
    update_s, probe_s = [], []
    for r in range(rounds + 1):  # round 0 warms up
        t0 = time.perf_counter()
        for _ in range(block):
            learner.update(eor.sample_mixed([real, fake], [REAL, MODEL]))
        t1 = time.perf_counter()
        probe.values(learner.actor, learner.critic, model)
        t2 = time.perf_counter()
        if r:
            update_s.append((t1 - t0) / block)
            probe_s.append(t2 - t1)
    upd, prb = statistics.median(update_s), statistics.median(probe_s)
    return {
        "case": f"N={n}, P={PROBE_SIZE}, k={K}, {model_name}",
        "update_ms": 1e3 * upd,
        "probe_ms": 1e3 * prb,
        "probe_in_updates": prb / upd,
        "overhead_pct": 100 * prb / (LOG_EVERY * upd),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    def options(parser: Any) -> None:
        parser.add_argument(
            "--simulator", action="store_true", help="also the probe through MuJoCo"
        )

    args = parse_args(__doc__.splitlines()[0], argv, options=options)
    torch.manual_seed(0)
    # One intra-op thread (as --deterministic): on a shared machine, threads fighting over the
    # cores make both timings noise; the ratio is what matters.
    torch.set_num_threads(1)
    rounds = 4 if args.quick else 15
    block = 3 if args.quick else 10
    ensemble = DynamicsEnsemble(
        S, A, env_name="halfcheetah", generator=torch.Generator().manual_seed(0)
    )
    models: list[tuple[Any, str, str]] = [(ensemble, "dynamics ensemble 7x(4x200)", "model")]
    if args.simulator:
        from eor.envs import get_env
        from eor.envs.true_dynamics import SimulatorDynamics

        models.append((SimulatorDynamics(get_env("halfcheetah")), "MuJoCo simulator", "sim"))
    rows, overhead = [], {}
    for n in (10, 50):
        for model, name, tag in models:
            rows.append(bench(n, rounds, block, model, name))
            overhead[f"overhead_pct_n{n}_{tag}"] = rows[-1]["overhead_pct"]
    print_table(
        rows, ["case", "update_ms", "probe_ms", "probe_in_updates", "overhead_pct", "rounds"]
    )
    extra = {
        "quick": bool(args.quick),
        "log_every": LOG_EVERY,
        "config": {"S": S, "A": A, "batch": B, "hidden": H, "steps_k": K, "probe": PROBE_SIZE},
    }
    # Percentages, not speedups: kept out of "speedups" (benchmarks/summary.py tabulates those).
    extra["overhead_pct"] = {k: round(v, 3) for k, v in overhead.items()}
    path = write_results("diagnostics", rows, {}, out=args.out, extra=extra)
    print(f"overhead at log_every={LOG_EVERY} (% of update time): {overhead}\nwrote {path}")


if __name__ == "__main__":
    main()
