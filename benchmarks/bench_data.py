"""Dataset loading and collection speed.

1. Load a D4RL-layout HDF5 (synthetic halfcheetah shapes: obs 17, act 6, a timeout every 1000
   rows, next_observations) into the replay buffer: `eor.data.load_dataset(path).to_buffer()`
   (validated, float32 C-contiguous, Q-learning form) against the bare h5py + numpy load
   `eor.ref.data.load_h5py_numpy_ref` (no validation). Speedup key `load_vs_h5py`.
   Also, for information, D4RL-style row-by-row conversion (`eor.ref.data.qlearning_loop_ref`).
2. Collection rate in the real simulator (random policy, HalfCheetah-v4): steps per second of
   `eor.data.collect`, with one plain env and with a SyncVectorEnv of 4.

    python benchmarks/bench_data.py [--quick]      # 1M rows (quick: 100k) and 100k (20k) steps
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parse_args, print_table, timeit, write_results  # noqa: E402
from eor.data import collect, load_dataset, read_raw  # noqa: E402
from eor.data.collector import _run  # noqa: E402
from eor.envs import get_env  # noqa: E402
from eor.ref.data import load_h5py_numpy_ref, qlearning_loop_ref  # noqa: E402


def write_synthetic(path: Path, n: int, seed: int = 0) -> None:
    """D4RL layout with random contents (fine for load timing)."""
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=rng.standard_normal((n, 17), np.float32))
        f.create_dataset("next_observations", data=rng.standard_normal((n, 17), np.float32))
        f.create_dataset("actions", data=rng.uniform(-1, 1, (n, 6)).astype(np.float32))
        f.create_dataset("rewards", data=rng.standard_normal(n, np.float32))
        f.create_dataset("terminals", data=np.zeros(n, bool))
        f.create_dataset("timeouts", data=timeouts)
        f.attrs["dataset"] = "halfcheetah-random-v2"


def main() -> None:
    args = parse_args(__doc__ or "")
    rows = 100_000 if args.quick else 1_000_000
    collect_steps = 20_000 if args.quick else 100_000
    repeats = 5 if args.quick else 7
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="eor-bench-data-"))
    try:
        path = tmp / "halfcheetah_random-v2.hdf5"
        write_synthetic(path, rows)
        size_mb = path.stat().st_size / 2**20

        eor_t = timeit(lambda: load_dataset(path).to_buffer(), repeats=repeats, warmup=1)
        ref_t = timeit(lambda: load_h5py_numpy_ref(path), repeats=repeats, warmup=1)
        assert len(load_dataset(path).to_buffer()) == len(load_h5py_numpy_ref(path))
        results.append({"case": f"load {rows} rows -> buffer", "provider": "eor", **eor_t})
        results.append({"case": f"load {rows} rows -> buffer", "provider": "h5py+numpy", **ref_t})
        # D4RL's per-row Python conversion, once (it is slow), for scale.
        raw, _ = read_raw(path)
        t0 = time.perf_counter()
        qlearning_loop_ref(raw)
        loop_s = time.perf_counter() - t0
        results.append(
            {
                "case": f"convert {rows} rows",
                "provider": "row loop (D4RL style)",
                "median_s": loop_s,
                "repeats": 1,
            }
        )

        spec = get_env("halfcheetah")
        rates = {}
        for label, k, vector in (("plain env", 1, False), ("SyncVectorEnv x4", 4, True)):
            t0 = time.perf_counter()
            _run(spec, collect_steps, 0, None, 0.0, k, False, vector=vector)
            dt = time.perf_counter() - t0
            rates[label] = collect_steps / dt
            results.append(
                {
                    "case": f"collect {collect_steps} steps",
                    "provider": label,
                    "median_s": dt,
                    "steps_per_s": rates[label],
                    "repeats": 1,
                }
            )
        # The full command (incl. env start-up and the HDF5 write), default settings.
        t0 = time.perf_counter()
        collect("halfcheetah-random-v2", collect_steps, 0, out=tmp / "c.hdf5")
        dt = time.perf_counter() - t0
        results.append(
            {
                "case": f"eor collect {collect_steps} steps (end to end)",
                "provider": "eor",
                "median_s": dt,
                "steps_per_s": collect_steps / dt,
                "repeats": 1,
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    speedups = {
        "load_vs_h5py": ref_t["median_s"] / eor_t["median_s"],
        "load_vs_row_loop": loop_s / eor_t["median_s"],
    }
    print(f"HDF5 file: {rows} rows, {size_mb:.0f} MiB")
    print_table(results, ["case", "provider", "median_s", "spread_s", "steps_per_s"])
    for key, value in speedups.items():
        print(f"{key}: {value:.2f}x")
    print(
        f"collect rate (end to end): {collect_steps / dt:.0f} steps/s -> 1M steps in "
        f"{1e6 / (collect_steps / dt) / 60:.1f} min"
    )
    out = write_results(
        "data",
        results,
        speedups,
        out=args.out,
        extra={
            "rows": rows,
            "collect_steps": collect_steps,
            "quick": args.quick,
            "collect_steps_per_s": rates,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
