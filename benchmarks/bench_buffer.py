"""Replay buffer speed: eor's C++ buffer against numpy and the reference implementation's way.

HalfCheetah sizes (obs 17, act 6), batch 256, a 1M-row real buffer and a 1.25M-row model buffer
(RAVL: 50,000 rollouts x 5 steps x 5 retained epochs), random float32 contents.

Cases (per-call CPU time of the calling thread, see `interleaved`; every case runs `inner` calls
per timing, interleaved round by round so that load on the shared machine hits all alike):

* mixed batch, 12 real + 244 model, into torch tensors:
  - eor: `eor.sample_mixed([real, model], [12, 244], out=arrays)` where `arrays` are numpy
    views of preallocated torch tensors (`eor.buffer.torch_batch`): the training hot loop;
  - eor, fresh tensors: the same without `out=`, then `torch.from_numpy` per field;
  - (a) numpy reference: `eor.ref.RingBufferRef.sample_mixed` (numpy `Generator.choice`
    without replacement per buffer, `arr[idx]` per field and buffer, `np.concatenate`), then
    `torch.from_numpy` per field;
  - (b) the reference implementation's way: `eor.ref.TorchBufferRef.sample_mixed` (torch
    tensor per field, `Generator.choice(size, n, replace=False)`, index each tensor, `torch.cat`);
  - the floor: `np.take` of 256 precomputed random rows of one contiguous `[1.25M, 42]` float32
    array into a preallocated `[256, 42]` array: the same bytes gathered with no sampling, no
    validation and no Python wrapper. A fresh index set per call keeps the rows out of cache.
* plain `sample(256)` from the model buffer (eor with out=, vs (a) and (b));
* `add` of 50,000 rows (a rollout chunk) into the full model buffer, vs `RingBufferRef.add`.

Speedup keys (baseline median / eor median): mixed_vs_numpy, mixed_vs_reference,
mixed_vs_gather_floor (floor / eor: 1/3 means eor takes three times the floor), and
mixed_alloc_vs_numpy, mixed_alloc_vs_reference, sample_vs_numpy, sample_vs_reference,
add_vs_numpy.

    python benchmarks/bench_buffer.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eor  # noqa: E402
from benchmarks.common import parse_args, print_table, timeit, write_results  # noqa: E402
from eor.buffer import FIELDS, torch_batch  # noqa: E402
from eor.ref import RingBufferRef, TorchBufferRef  # noqa: E402

S, A, B = 17, 6, 256
REAL_N, MODEL_N = 1_000_000, 1_250_000
N_REAL, N_MODEL = 12, 244  # int(0.05 · 256) real, the rest model
ADD_CHUNK = 50_000


def random_fields(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "obs": rng.standard_normal((n, S), dtype=np.float32),
        "act": rng.uniform(-1, 1, (n, A)).astype(np.float32),
        "rew": rng.standard_normal(n, dtype=np.float32),
        "next_obs": rng.standard_normal((n, S), dtype=np.float32),
        "done": np.zeros(n, np.float32),
    }


def interleaved(cases: dict[str, Callable[[], Any]], inner: int, rounds: int) -> dict[str, dict]:
    """Per-call seconds of each case: `rounds` timings of `inner` calls, cases interleaved.

    The primary clock is this thread's CPU time (`time.thread_time`), not wall time: on the
    shared 2-core machine (load ~9) a process is descheduled most of the time, and wall-clock
    chunks measure the scheduler more than the code. Every case here is single-threaded (torch
    runs with one thread), so CPU time is the time the work takes. Wall time is reported too.
    """
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        timeit(fn, repeats=1, warmup=max(inner // 10, 1))
    for _ in range(rounds):
        for name, fn in cases.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(inner):
                fn()
            cpu[name].append((time.thread_time() - c0) / inner)
            wall[name].append((time.perf_counter() - w0) / inner)
    out = {}
    for name, times in cpu.items():
        times.sort()
        out[name] = {
            "median_s": statistics.median(times),
            "min_s": times[0],
            "max_s": times[-1],
            "spread_s": times[(3 * len(times)) // 4] - times[len(times) // 4],
            "wall_median_s": statistics.median(wall[name]),
            "repeats": len(times),
            "calls_per_repeat": inner,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(1)  # see interleaved(); also what a sampler thread in training gets
    inner, rounds, add_rounds = (300, 5, 3) if args.quick else (1000, 15, 9)
    rng = np.random.default_rng(0)

    print(f"filling buffers: real {REAL_N:,} rows, model {MODEL_N:,} rows (obs {S}, act {A})")
    real_fields, model_fields = random_fields(rng, REAL_N), random_fields(rng, MODEL_N)
    real = eor.ReplayBuffer.from_arrays(*(real_fields[k] for k in FIELDS), seed=0)
    model = eor.ReplayBuffer(MODEL_N, S, A, seed=1)
    for lo in range(0, MODEL_N, ADD_CHUNK):
        model.add(*(model_fields[k][lo : lo + ADD_CHUNK] for k in FIELDS))
    ref_real = RingBufferRef.from_arrays(*(real_fields[k] for k in FIELDS))
    ref_model = RingBufferRef.from_arrays(*(model_fields[k] for k in FIELDS))
    # (b) keeps its own tensors, as the reference implementation does
    t_real, t_model = TorchBufferRef(real_fields), TorchBufferRef(model_fields)
    # the floor: one contiguous [N, 42] float32 array, rows laid out as eor stores them
    rows = np.ascontiguousarray(
        np.concatenate([model.fields()[k].reshape(MODEL_N, -1) for k in FIELDS], axis=1)
    )
    del real_fields, model_fields
    floor_out = np.empty((B, rows.shape[1]), np.float32)
    n_floor = (rounds + 1) * inner + inner // 10 + 1
    floor_idx = rng.integers(0, MODEL_N, (n_floor, B))
    floor_i = iter(range(10**12))

    tensors, arrays = torch_batch(B, S, A)
    np_rng, torch_rng = np.random.default_rng(1), np.random.default_rng(2)
    buffers, counts = [real, model], [N_REAL, N_MODEL]

    def eor_mixed() -> None:
        eor.sample_mixed(buffers, counts, out=arrays)

    def eor_mixed_alloc() -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in eor.sample_mixed(buffers, counts).items()}

    def numpy_mixed() -> dict[str, torch.Tensor]:
        batch = RingBufferRef.sample_mixed([ref_real, ref_model], counts, np_rng)
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def reference_mixed() -> dict[str, torch.Tensor]:
        return TorchBufferRef.sample_mixed([t_real, t_model], counts, torch_rng)

    def floor() -> None:
        np.take(rows, floor_idx[next(floor_i) % n_floor], axis=0, out=floor_out)

    def eor_sample() -> None:
        model.sample(B, out=arrays)

    def numpy_sample() -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in ref_model.sample(B, np_rng).items()}

    def reference_sample() -> dict[str, torch.Tensor]:
        return t_model.sample(B, torch_rng)

    print(f"timing {rounds} rounds x {inner} calls per case (interleaved)")
    t = interleaved(
        {
            "mixed: eor (out= torch tensors)": eor_mixed,
            "mixed: eor (fresh tensors)": eor_mixed_alloc,
            "mixed: (a) numpy reference": numpy_mixed,
            "mixed: (b) reference implementation": reference_mixed,
            "mixed: floor (np.take of the same bytes)": floor,
            "sample: eor (out=)": eor_sample,
            "sample: (a) numpy reference": numpy_sample,
            "sample: (b) reference implementation": reference_sample,
        },
        inner,
        rounds,
    )

    chunk = random_fields(rng, ADD_CHUNK)
    chunk_args = [chunk[k] for k in FIELDS]
    t.update(
        interleaved(
            {
                "add 50k: eor": lambda: model.add(*chunk_args),
                "add 50k: (a) numpy reference": lambda: ref_model.add(*chunk_args),
            },
            inner=1,
            rounds=add_rounds,
        )
    )

    def ratio(baseline: str, ours: str) -> float:
        return t[baseline]["median_s"] / t[ours]["median_s"]

    mixed = "mixed: eor (out= torch tensors)"
    speedups = {
        "mixed_vs_numpy": ratio("mixed: (a) numpy reference", mixed),
        "mixed_vs_reference": ratio("mixed: (b) reference implementation", mixed),
        "mixed_vs_gather_floor": ratio("mixed: floor (np.take of the same bytes)", mixed),
        "mixed_alloc_vs_numpy": ratio("mixed: (a) numpy reference", "mixed: eor (fresh tensors)"),
        "mixed_alloc_vs_reference": ratio(
            "mixed: (b) reference implementation", "mixed: eor (fresh tensors)"
        ),
        "sample_vs_numpy": ratio("sample: (a) numpy reference", "sample: eor (out=)"),
        "sample_vs_reference": ratio("sample: (b) reference implementation", "sample: eor (out=)"),
        "add_vs_numpy": ratio("add 50k: (a) numpy reference", "add 50k: eor"),
    }
    eor_of = {
        "mixed: (a) numpy reference": mixed,
        "mixed: (b) reference implementation": mixed,
        "mixed: floor (np.take of the same bytes)": mixed,
        "mixed: eor (fresh tensors)": mixed,
        "sample: (a) numpy reference": "sample: eor (out=)",
        "sample: (b) reference implementation": "sample: eor (out=)",
        "add 50k: (a) numpy reference": "add 50k: eor",
    }
    results = []
    for name, r in t.items():
        row = {
            "case": name,
            "median_us": r["median_s"] * 1e6,
            "spread_us": r["spread_s"] * 1e6,
            "min_us": r["min_s"] * 1e6,
            "wall_median_us": r["wall_median_s"] * 1e6,
            "repeats": r["repeats"],
            "calls_per_repeat": r["calls_per_repeat"],
        }
        if name in eor_of:
            row["time / eor"] = r["median_s"] / t[eor_of[name]]["median_s"]
        results.append(row)
    print_table(
        results, ["case", "median_us", "spread_us", "min_us", "wall_median_us", "time / eor"]
    )
    print()
    for k, v in speedups.items():
        print(f"{k:28s} {v:8.2f}x")
    floor_factor = 1 / speedups["mixed_vs_gather_floor"]
    print(
        f"targets: mixed >= 20x (a) and (b): {speedups['mixed_vs_numpy']:.1f}x, "
        f"{speedups['mixed_vs_reference']:.1f}x; within 3x of the floor: {floor_factor:.2f}x the floor"
    )
    path = write_results(
        "buffer",
        results,
        speedups,
        out=args.out,
        extra={
            "config": {
                "obs_dim": S,
                "act_dim": A,
                "batch": B,
                "real_rows": REAL_N,
                "model_rows": MODEL_N,
                "mixed": [N_REAL, N_MODEL],
                "add_chunk": ADD_CHUNK,
                "quick": bool(args.quick),
            }
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
