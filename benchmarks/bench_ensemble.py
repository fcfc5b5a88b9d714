"""Ensemble-ops benchmark (issue 3): eor.ops against the reference ways of running ensembles.

    python benchmarks/bench_ensemble.py [--quick]      # writes benchmarks/results/ensemble.json

Cases (speedup = baseline median / eor median; baselines come from `eor.ref`):
- linear_vs_loop: one dynamics layer (E=7, B=256, 200 -> 200, SiLU, per-member inputs),
  forward + backward, against a Python loop over per-member `nn.Linear`
  (`ref.ensemble_linear_loop_ref`, how the reference dynamics model runs);
- linear_vs_repeated: the critics' first layer (N=10, B=256, 23 -> 256, ReLU, shared (s, a)),
  forward + backward including dx, against a baddbmm fed the input repeated N times
  (`ref.ensemble_linear_repeated_ref`, how the reference critics run); also N=50 as a row;
- rollout_step: one model step of 50,000 transitions, 7 members, 23 -> 4×200 SiLU -> 2·18
  (halfcheetah): `ops.gaussian_ensemble_forward` gathered on the transition's elite against the
  full 7-member forward (`ref.gaussian_ensemble_forward_ref`); eor's own full forward is a row;
- critic_update_n10, critic_update_n50, diversity_n10: from `benchmarks/ensemble_critic.py`
  (OPSB's), merged into the same table and JSON when that module is present.

On CPU the fast torch path runs and the providers of a case alternate call by call (median and
interquartile spread of all calls), so that load from other processes hits each alike. On CUDA the Triton path
runs (EOR_BACKEND=auto) and timing is `triton.testing.do_bench`. Achieved GFLOP/s are printed
beside the peak of a large torch matmul measured in the same run.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `eor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import parse_args, print_table, timeit, write_results  # noqa: E402
from eor import ops, ref  # noqa: E402

COLUMNS = ["case", "shape", "provider", "median_ms", "spread_ms", "gflops", "speedup"]


def _sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def _time(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Median and spread (seconds) of `repeats` calls: do_bench on CUDA, timeit on CPU."""
    if device.type == "cuda":
        import triton.testing

        q20, q50, q80 = triton.testing.do_bench(fn, quantiles=[0.2, 0.5, 0.8])
        return {"median_s": q50 / 1e3, "spread_s": (q80 - q20) / 1e3, "min_s": q20 / 1e3}
    return timeit(fn, repeats=repeats, warmup=1)


def _interleaved(
    providers: dict[str, Callable[[], Any]], device: torch.device, rounds: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median and spread (interquartile range) of `rounds · repeats` timed calls per provider.

    On CPU the providers alternate call by call, so that load from other processes on a shared
    machine hits every provider alike; on CUDA each provider gets one do_bench.
    """
    for fn in providers.values():
        fn()  # warm-up (and Triton compilation)
    if device.type == "cuda":
        return {name: _time(fn, device, repeats) for name, fn in providers.items()}
    times: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(rounds * repeats):
        for name, fn in providers.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = {
            "median_s": statistics.median(ts),
            "spread_s": ts[(3 * len(ts)) // 4] - ts[len(ts) // 4],
            "min_s": ts[0],
        }
    return out


def matmul_peak_gflops(device: torch.device, n: int = 2048) -> float:
    """The device's float32 GEMM rate (GFLOP/s) on an n×n matmul, in this process."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    t = _time(lambda: a @ b, device, repeats=5)
    return 2 * n**3 / t.get("min_s", t["median_s"]) / 1e9


def _linear_case(
    key: str,
    e: int,
    b: int,
    i: int,
    o: int,
    activation: str,
    shared: bool,
    baseline: str,
    device: torch.device,
    quick: bool,
) -> tuple[list[dict[str, Any]], float]:
    """Forward + backward of one ensemble layer (gradients for x, W and b)."""
    torch.manual_seed(0)
    x = torch.randn((b, i) if shared else (e, b, i), device=device, requires_grad=True)
    layers = [torch.nn.Linear(i, o).to(device) for _ in range(e)]
    weight = torch.stack([layer.weight.detach().t() for layer in layers]).requires_grad_(True)
    bias = torch.stack([layer.bias.detach() for layer in layers]).requires_grad_(True)
    grad_out = torch.randn(e, b, o, device=device)

    def eor_step() -> None:
        ops.ensemble_linear(x, weight, bias, activation).backward(grad_out)

    if baseline == "loop":

        def base_step() -> None:
            ref.ensemble_linear_loop_ref(x, layers, activation).backward(grad_out)
    else:

        def base_step() -> None:
            ref.ensemble_linear_repeated_ref(x, weight, bias, activation).backward(grad_out)

    base_name = "ref loop nn.Linear" if baseline == "loop" else "ref repeated baddbmm"
    rounds, repeats = (3, 5) if quick else (7, 10)
    t = _interleaved({base_name: base_step, "eor": eor_step}, device, rounds, repeats)
    flops = 3 * 2.0 * e * b * i * o  # forward, dx, dW
    speedup = t[base_name]["median_s"] / t["eor"]["median_s"]
    shape = f"E={e} B={b} {i}->{o} {activation} {'shared' if shared else 'per-member'} x"
    rows = [
        {
            "case": key,
            "shape": shape,
            "provider": name,
            "median_ms": 1e3 * t[name]["median_s"],
            "spread_ms": 1e3 * t[name]["spread_s"],
            "gflops": flops / t[name]["median_s"] / 1e9,
            "speedup": speedup if name == "eor" else 1.0,
        }
        for name in (base_name, "eor")
    ]
    return rows, speedup


def _rollout_case(device: torch.device, quick: bool) -> tuple[list[dict[str, Any]], float]:
    """One model step for 50,000 transitions: the chosen elite only, against all 7 members."""
    torch.manual_seed(0)
    n, e, s, a, h, elites = 50_000, 7, 17, 6, 200, 5
    d = s + 1
    dims = [s + a, h, h, h, h, 2 * d]
    weights = [
        torch.randn(e, fi, fo, device=device) / (2 * fi**0.5)
        for fi, fo in zip(dims[:-1], dims[1:], strict=True)
    ]
    biases = [torch.zeros(e, fo, device=device) for fo in dims[1:]]
    max_lv = torch.full((d,), 0.5, device=device)
    min_lv = torch.full((d,), -10.0, device=device)
    x = torch.randn(n, s + a, device=device)
    elite_ids = torch.arange(elites, device=device)
    # docs/algorithm.md §2: one elite per transition, uniformly at random.
    members = elite_ids[torch.randint(0, elites, (n,), device=device)]

    def full_ref() -> Any:
        return ref.gaussian_ensemble_forward_ref(x, weights, biases, max_lv, min_lv)

    def full_eor() -> Any:
        return ops.gaussian_ensemble_forward(x, weights, biases, max_lv, min_lv)

    def gathered_eor() -> Any:
        return ops.gaussian_ensemble_forward(x, weights, biases, max_lv, min_lv, members=members)

    rounds, repeats = (1, 1) if quick else (5, 3)
    providers = {"ref full 7 members": full_ref, "eor full 7 members": full_eor,
                 "eor gathered elite": gathered_eor}  # fmt: skip
    t = _interleaved(providers, device, rounds, repeats)
    per_row = 2.0 * sum(fi * fo for fi, fo in zip(dims[:-1], dims[1:], strict=True))
    base = t["ref full 7 members"]["median_s"]
    rows = []
    for name, stats in t.items():
        flops = per_row * n * (1 if "gathered" in name else e)
        rows.append(
            {
                "case": "rollout_step",
                "shape": f"N={n} E={e} {s + a}->4x{h} silu->{2 * d}",
                "provider": name,
                "median_ms": 1e3 * stats["median_s"],
                "spread_ms": 1e3 * stats["spread_s"],
                "gflops": flops / stats["median_s"] / 1e9,
                "speedup": base / stats["median_s"],
            }
        )
    return rows, base / t["eor gathered elite"]["median_s"]


def _critic_rows(quick: bool) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """OPSB's critic cases (benchmarks/ensemble_critic.py), if that module is present."""
    try:
        from benchmarks import ensemble_critic
    except ImportError as exc:
        print(f"(critic cases skipped: benchmarks/ensemble_critic.py not importable: {exc})")
        return [], {}
    rows, speedups = ensemble_critic.run(quick)
    out = []
    for row in rows:
        out.append(
            {
                "case": row.get("case"),
                "shape": f"N={row.get('num_critics')} B={row.get('batch')} H={row.get('hidden')}",
                "provider": row.get("provider"),
                "median_ms": row.get("median_ms"),
                "spread_ms": row.get("spread_ms"),
                "gflops": row.get("gflops"),
                "speedup": speedups.get(row.get("case", ""), None)
                if row.get("provider") != "ref"
                else 1.0,
            }
        )
    return out, speedups


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = ops.backend_report(device)
    print(f"device {device}; backends: {backend}")
    peak = matmul_peak_gflops(device, 1024 if args.quick else 2048)
    print(f"peak float32 matmul: {peak:.1f} GFLOP/s")
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    cases = [
        ("linear_vs_loop", 7, 256, 200, 200, "silu", False, "loop"),
        ("linear_vs_repeated", 10, 256, 23, 256, "relu", True, "repeated"),
        ("linear_vs_repeated_n50", 50, 256, 23, 256, "relu", True, "repeated"),
    ]
    for key, e, b, i, o, act, shared, baseline in cases:
        case_rows, speedup = _linear_case(
            key, e, b, i, o, act, shared, baseline, device, args.quick
        )
        rows += case_rows
        if not key.endswith("_n50"):
            speedups[key] = speedup
    case_rows, speedups["rollout_step"] = _rollout_case(device, args.quick)
    rows += case_rows
    critic_rows, critic_speedups = _critic_rows(args.quick)
    rows += critic_rows
    speedups.update(critic_speedups)
    print()
    table = print_table(rows, COLUMNS)
    print()
    for key, value in speedups.items():
        print(f"{key:<22} {value:6.2f}x")
    path = write_results(
        "ensemble",
        rows,
        speedups,
        out=args.out,
        extra={
            "peak_matmul_gflops": peak,
            "device": str(device),
            "backends": backend,
            "table": table,
        },  # fmt: skip
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
