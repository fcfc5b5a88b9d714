"""What each kept page-fault-avoiding mechanism pays end to end, with `eor.runtime.tune_malloc` on.

The rule (DEVELOPERS.md, "Speed mechanisms"): a mechanism on a hot path stays only while it pays
at least 5% end to end, measured on what a real command repeats. This benchmark times, in one
process, each unit of real work with everything on and with one mechanism off, the two
alternating round by round; gain = time with the mechanism off / time with it on.

  closed_form_step: `eor.dynamics.step.ClosedFormStep` (off: autograd's backward of the same
      loss), on a dynamics training epoch (`DynamicsTrainer.train_epoch`, 7 members).

tune_malloc (glibc keeps freed memory in the process instead of handing it back and faulting
it in again) is applied first, as `eor train-model` and `eor train-agent` do, so each mechanism
must pay on top of it. tune_malloc itself is process-wide and cannot be switched off within a
process: it is measured by `benchmarks/bench_agent.py` and `benchmarks/bench_dynamics.py`, run
once plain and once with --malloc-tuning.

    python benchmarks/bench_mechanisms.py [--quick] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_agent import A, S, interleaved  # noqa: E402
from benchmarks.common import parse_args, print_table, write_results  # noqa: E402
from eor.dynamics import DynamicsConfig, DynamicsTrainer  # noqa: E402
from eor.runtime import tune_malloc  # noqa: E402


def _row(case: str, stats: dict[str, dict[str, float]]) -> dict[str, Any]:
    on, off = stats["on"]["median_s"], stats["off"]["median_s"]
    return {
        "case": case,
        "on_ms": 1e3 * on,
        "off_ms": 1e3 * off,
        "on_spread_ms": 1e3 * stats["on"]["spread_s"],
        "off_spread_ms": 1e3 * stats["off"]["spread_s"],
        "gain": off / on,
    }


def bench_dynamics_mechanisms(n_rows: int, rounds: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n_rows, S), dtype=np.float32)
    act = rng.uniform(-1, 1, (n_rows, A)).astype(np.float32)
    rew = rng.standard_normal(n_rows, dtype=np.float32)
    nxt = obs + 0.1 * rng.standard_normal((n_rows, S), dtype=np.float32)
    trainer = DynamicsTrainer(
        DynamicsConfig(env_name="halfcheetah-random-v2", seed=0), obs, act, rew, nxt,
        env_name="halfcheetah",
    )  # fmt: skip
    closed_form = trainer.closed_form

    def epoch() -> None:
        trainer.train_epoch()

    def closed_form_off() -> None:
        trainer.closed_form = None
        try:
            epoch()
        finally:
            trainer.closed_form = closed_form

    stats = interleaved({"on": epoch, "off": closed_form_off}, rounds=rounds, warmup=1)
    return [_row("closed_form_step", stats)]


def main() -> None:
    args = parse_args(__doc__ or "")
    tuned = tune_malloc()
    rows = bench_dynamics_mechanisms(5_000 if args.quick else 50_000, rounds=3 if args.quick else 7)
    print_table(rows, ["case", "on_ms", "off_ms", "on_spread_ms", "off_spread_ms", "gain"])
    print(f"tune_malloc applied: {tuned}")
    speedups = {r["case"]: r["gain"] for r in rows}
    path = write_results(
        "mechanisms", rows, speedups, out=args.out, extra={"malloc_tuned": bool(tuned)}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
