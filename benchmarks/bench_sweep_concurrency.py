"""Aggregate throughput of 1, 2 and 4 concurrent `eor train-agent` trials on this machine.

What `eor sweep` does with a machine's cores: every trial gets `cpus` of them, as torch
intra-op threads (`--threads`), with OpenMP's idle threads sleeping (OMP_WAIT_POLICY=PASSIVE,
set by `import eor`). This benchmark starts N trials at once as separate processes, the way
Ray's workers run them, and measures the makespan:

* `1x<cores>`: one trial with every core (the default of a single `eor train-agent`);
* `<N>x1`: N trials with one thread each (the sweep with `cpus = 1`): N = cores, 2 x cores;
* `<N>x<cores>`: N trials each with every core, oversubscribed: what users get when they
  start several seeds by hand without `--threads`.

Each trial is a real RAVL run (defaults of docs/algorithm.md §3: N = 10 critics, η = 1) on a
random-policy halfcheetah dataset collected here and a dynamics model trained for one epoch:
one epoch of `updates` updates, its rollout phase, one evaluation episode. Aggregate
throughput = all trials' updates / makespan. The "speedup" keys are aggregate throughput / the
one-trial throughput (above 1: running trials side by side gets more done per second).

The machine must be otherwise idle: any other busy process changes every number.

    python benchmarks/bench_sweep_concurrency.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import eor_command, parse_args, print_table, write_results  # noqa: E402

DATASET = "halfcheetah-random-v2"


def _check(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def run_batch(
    trials: int,
    threads: int,
    updates: int,
    rollouts: int,
    model: Path,
    folder: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    """Start `trials` trials at once, wait for all; makespan and aggregate updates/s."""
    procs = []
    start = time.perf_counter()
    for i in range(trials):
        cmd = [*eor_command(), "train-agent", "--env_name", DATASET, "--seed", str(i),
               "--load_model_dir", str(model), "--run_dir", str(folder / f"t{trials}x{threads}-{i}"),
               "--epochs", "1", "--updates_per_epoch", str(updates), "--eval_episodes", "1",
               "--rollouts_per_epoch", str(rollouts),
               "--threads", str(threads), "--quiet"]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    walls = []
    for proc in procs:
        out, _ = proc.communicate()
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"a trial failed ({proc.returncode}):\n{out.decode()[-2000:]}")
    makespan = max(walls)
    return {
        "config": f"{trials}x{threads}",
        "trials": trials,
        "threads_each": threads,
        "updates_each": updates,
        "makespan_s": round(makespan, 2),
        "trial_s_min": round(min(walls), 2),
        "aggregate_updates_per_s": round(trials * updates / makespan, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    cores = os.cpu_count() or 1
    updates = 150 if args.quick else 1500
    rollouts = 2000 if args.quick else 50_000  # the default: one rollout phase per epoch
    configs = [(1, cores), (cores, 1), (2 * cores, 1), (cores, cores)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = dict(os.environ, EOR_DATA_DIR=str(folder / "data"))
        env.pop("OMP_NUM_THREADS", None)  # --threads decides
        steps = "5000" if args.quick else "60000"
        _check(
            [*eor_command(), "collect", DATASET, "--steps", steps, "--seed", "0", "--quiet"], env
        )
        model = folder / "model"
        _check([*eor_command(), "train-model", "--env_name", DATASET, "--save_path", str(model),
                "--max_epochs", "1", "--quiet"], env)  # fmt: skip
        for trials, threads in configs:
            row = run_batch(trials, threads, updates, rollouts, model, folder, env)
            rows.append(row)
            print(f"{row['config']}: {row['aggregate_updates_per_s']} updates/s in all", flush=True)
    base = rows[0]["aggregate_updates_per_s"]
    for row in rows:
        row["vs_one_trial"] = round(row["aggregate_updates_per_s"] / base, 3)
    print_table(rows, ["config", "makespan_s", "aggregate_updates_per_s", "vs_one_trial"])
    speedups = {f"aggregate_{r['config']}": r["vs_one_trial"] for r in rows[1:]}
    path = write_results("sweep_concurrency", rows, speedups, out=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
