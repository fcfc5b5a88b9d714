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
interquartile spread of all calls), so that load from other processes hits each alike. Achieved
GFLOP/s are printed beside the peak of a large torch matmul measured in the same run.

    python benchmarks/bench_ensemble.py --device cuda [--quick] [--no-compile]
                                                    # writes benchmarks/results/gpu/ensemble.json

With `--device cuda` (exit 77 when no CUDA device is visible; exit 1, after writing the JSON,
when one of eor's providers failed) every case is timed with
`triton.testing.do_bench` for these providers: eor's Triton path (EOR_BACKEND=triton, so a
kernel that cannot run is an error row, never a silent fallback), eor's torch path
(EOR_BACKEND=torch, eager), the reference eager and the reference under `torch.compile` (one
case per op family; a compile that fails is an error row). Shapes: the critic update and its
first layer at N in {2, 10, 50}, batch 256, hidden 256; the dynamics layer (7 members, batch
256, hidden 200) and the 50,000-row rollout step. Speedup keys: `<case>` = reference eager /
eor Triton (as on CPU), `<case>_vs_compile` = reference compiled / eor Triton,
`<case>_vs_torch` = eor torch / eor Triton.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `eor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    parse_args,
    print_table,
    timeit,
    write_results,
)
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


# ----------------------------------------------------------------------------- --device cuda

GPU_OUT = RESULTS_DIR / "gpu" / "ensemble.json"
CUDA_COLUMNS = COLUMNS + ["first_call_ms", "error"]
# A provider: (callable, EOR_BACKEND while it runs, or None to leave it alone).
_Provider = tuple[Callable[[], Any], str | None]


def _cuda_options(parser: Any) -> None:
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="with --device cuda: leave out the torch.compile providers (their compile time)",
    )


@contextmanager
def _eor_backend(name: str | None) -> Iterator[None]:
    """EOR_BACKEND=name for the block (None: unchanged)."""
    if name is None:
        yield
        return
    old = os.environ.get("EOR_BACKEND")
    os.environ["EOR_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("EOR_BACKEND", None)
        else:
            os.environ["EOR_BACKEND"] = old


def _time_providers(
    providers: dict[str, _Provider], device: torch.device, quick: bool
) -> dict[str, dict[str, Any]]:
    """Each provider's first call (compilation included) and then its do_bench time (timeit off
    CUDA); a provider that raises gets {"error": ...} and the others still run."""
    out: dict[str, dict[str, Any]] = {}
    sync = _sync(device)
    for name, (fn, backend) in providers.items():
        try:
            with _eor_backend(backend):
                t0 = time.perf_counter()
                fn()
                if sync:
                    sync()
                first = time.perf_counter() - t0
                if device.type == "cuda":
                    import triton.testing

                    warmup, rep = (5, 20) if quick else (25, 100)
                    q = triton.testing.do_bench(
                        fn, warmup=warmup, rep=rep, quantiles=[0.2, 0.5, 0.8]
                    )
                    stats: dict[str, Any] = {
                        "median_s": q[1] / 1e3,
                        "spread_s": (q[2] - q[0]) / 1e3,
                    }
                else:
                    stats = dict(timeit(fn, repeats=2 if quick else 5, warmup=0))
            stats["first_call_s"] = first
        except Exception as exc:  # a kernel or compile that fails is a result, not the end
            stats = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            print(f"  {name}: {stats['error']}")
        out[name] = stats
    return out


def _provider_rows(
    case: str,
    shape: str,
    t: dict[str, dict[str, Any]],
    baseline: str,
    flops: dict[str, float],
) -> list[dict[str, Any]]:
    base = t.get(baseline, {}).get("median_s")
    rows = []
    for name, stats in t.items():
        row: dict[str, Any] = {"case": case, "shape": shape, "provider": name}
        if "error" in stats:
            row["error"] = stats["error"]
        else:
            row.update(
                median_ms=1e3 * stats["median_s"],
                spread_ms=1e3 * stats["spread_s"],
                first_call_ms=1e3 * stats["first_call_s"],
                gflops=flops.get(name, 0.0) / stats["median_s"] / 1e9 if name in flops else None,
                speedup=base / stats["median_s"] if base else None,
            )
        rows.append(row)
    return rows


def _speedup_keys(
    key: str,
    t: dict[str, dict[str, Any]],
    eor_triton: str,
    eager: str,
    compiled: str | None,
    eor_torch: str,
) -> dict[str, float]:
    """`key` = eager / Triton, `key_vs_compile` = compiled / Triton, `key_vs_torch` = eor torch
    / Triton; each only where both sides ran."""
    out: dict[str, float] = {}
    fast = t.get(eor_triton, {}).get("median_s")
    if not fast:
        return out
    for suffix, other in (("", eager), ("_vs_compile", compiled), ("_vs_torch", eor_torch)):
        slow = t.get(other, {}).get("median_s") if other else None
        if slow:
            out[key + suffix] = slow / fast
    return out


def _cuda_linear_case(
    key: str,
    e: int,
    shared: bool,
    i: int,
    o: int,
    activation: str,
    device: torch.device,
    quick: bool,
    compile_: bool,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One ensemble layer, forward + backward (dx, dW, db): eor Triton, eor torch, the
    reference eager and (compile_) compiled; B = 256."""
    b = 256
    torch.manual_seed(0)
    x = torch.randn((b, i) if shared else (e, b, i), device=device, requires_grad=True)
    layers = [torch.nn.Linear(i, o).to(device) for _ in range(e)]
    weight = torch.stack([layer.weight.detach().t() for layer in layers]).requires_grad_(True)
    bias = torch.stack([layer.bias.detach() for layer in layers]).requires_grad_(True)
    grad_out = torch.randn(e, b, o, device=device)

    def eor_step() -> None:
        ops.ensemble_linear(x, weight, bias, activation).backward(grad_out)

    if shared:
        base_name = "ref repeated baddbmm"
        base_fwd: Callable[[], Any] = lambda: ref.ensemble_linear_repeated_ref(
            x, weight, bias, activation
        )
    else:
        base_name = "ref loop nn.Linear"
        base_fwd = lambda: ref.ensemble_linear_loop_ref(x, layers, activation)
    providers: dict[str, _Provider] = {
        base_name: (lambda: base_fwd().backward(grad_out), None),
        "eor triton": (eor_step, "triton"),
        "eor torch": (eor_step, "torch"),
    }
    compiled_name = None
    if compile_:
        compiled_name = base_name + " torch.compile"
        compiled_fwd = torch.compile(base_fwd)
        providers[compiled_name] = (lambda: compiled_fwd().backward(grad_out), None)
    t = _time_providers(providers, device, quick)
    flops = 3 * 2.0 * e * b * i * o  # forward, dx, dW
    shape = f"E={e} B={b} {i}->{o} {activation} {'shared' if shared else 'per-member'} x"
    rows = _provider_rows(key, shape, t, base_name, {name: flops for name in t})
    keys = _speedup_keys(key, t, "eor triton", base_name, compiled_name, "eor torch")
    return rows, keys


def _cuda_rollout_case(
    device: torch.device, quick: bool, compile_: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One model step of 50,000 rows, 7 members, hidden 200: full and elite-gathered forwards."""
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
    members = torch.arange(elites, device=device)[torch.randint(0, elites, (n,), device=device)]
    full_ref = lambda: ref.gaussian_ensemble_forward_ref(x, weights, biases, max_lv, min_lv)
    full_eor = lambda: ops.gaussian_ensemble_forward(x, weights, biases, max_lv, min_lv)
    gathered = lambda: ops.gaussian_ensemble_forward(
        x, weights, biases, max_lv, min_lv, members=members
    )
    providers: dict[str, _Provider] = {
        "ref full 7 members": (full_ref, None),
        "eor full triton": (full_eor, "triton"),
        "eor full torch": (full_eor, "torch"),
        "eor gathered triton": (gathered, "triton"),
        "eor gathered torch": (gathered, "torch"),
    }
    compiled_name = None
    if compile_:
        compiled_name = "ref full torch.compile"
        providers[compiled_name] = (torch.compile(full_ref), None)
    t = _time_providers(providers, device, quick)
    per_row = 2.0 * sum(fi * fo for fi, fo in zip(dims[:-1], dims[1:], strict=True))
    flops = {name: per_row * n * (1 if "gathered" in name else e) for name in t}
    shape = f"N={n} E={e} {s + a}->4x{h} silu->{2 * d}"
    rows = _provider_rows("rollout_step", shape, t, "ref full 7 members", flops)
    keys = _speedup_keys(
        "rollout_step", t, "eor gathered triton", "ref full 7 members", compiled_name,
        "eor gathered torch",
    )  # fmt: skip
    return rows, keys


def _cuda_critic_case(
    key: str, n: int, with_td: bool, device: torch.device, quick: bool, compile_: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The critic loss (or the diversity term alone) with every weight gradient, as
    benchmarks/ensemble_critic.py times it on CPU: batch 256, hidden 256."""
    from benchmarks import ensemble_critic as ec

    torch.manual_seed(0)
    obs = torch.randn(ec.BATCH, ec.OBS_DIM, device=device)
    act = torch.rand(ec.BATCH, ec.ACT_DIM, device=device) * 2 - 1
    target = torch.randn(ec.BATCH, device=device)
    weights, biases = ec._critics(n)
    weights = [w.detach().to(device).requires_grad_(True) for w in weights]
    biases = [b.detach().to(device).requires_grad_(True) for b in biases]
    params = weights + biases
    eta = 1.0

    def zero() -> None:
        for p in params:
            p.grad = None

    def ref_loss() -> Any:
        if with_td:
            return ref.critic_loss_ref(obs, act, target, weights, biases, eta)
        return ref.diversity_loss_ref(obs, act, weights, biases)

    def reference() -> None:
        zero()
        ref_loss().backward()

    def fused() -> None:
        zero()
        if with_td:
            ops.critic_loss(obs, act, target, weights, biases, eta).loss.backward()
        else:
            ops.diversity_loss(obs, act, weights, biases).backward()

    providers: dict[str, _Provider] = {
        "ref": (reference, None),
        "eor triton": (fused, "triton"),
        "eor torch": (fused, "torch"),
    }
    compiled_name = None
    if compile_:
        compiled_name = "ref torch.compile"
        compiled_loss = torch.compile(ref_loss)

        def compiled() -> None:
            zero()
            compiled_loss().backward()

        providers[compiled_name] = (compiled, None)
    t = _time_providers(providers, device, quick)
    flops = ec._flops(n, with_td)
    shape = f"N={n} B={ec.BATCH} H={ec.HIDDEN}"
    rows = _provider_rows(key, shape, t, "ref", {"eor triton": flops, "eor torch": flops})
    keys = _speedup_keys(key, t, "eor triton", "ref", compiled_name, "eor torch")
    return rows, keys


def run_cuda(
    device: torch.device, quick: bool, compile_: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every --device cuda case: (rows, speedups). Runs on any device (tests use the CPU, where
    the Triton providers are error rows unless TRITON_INTERPRET=1)."""
    rows: list[dict[str, Any]] = []
    speedups: dict[str, float] = {}
    linear = [  # key, E, shared x, in, out, activation, with torch.compile
        ("linear_vs_loop", 7, False, 200, 200, "silu", True),
        ("linear_vs_repeated_n2", 2, True, 23, 256, "relu", False),
        ("linear_vs_repeated", 10, True, 23, 256, "relu", True),
        ("linear_vs_repeated_n50", 50, True, 23, 256, "relu", False),
    ]
    for key, e, shared, i, o, act, with_compile in linear:
        print(f"{key} ...", flush=True)
        r, k = _cuda_linear_case(
            key, e, shared, i, o, act, device, quick, compile_ and with_compile
        )
        rows += r
        speedups.update(k)
    print("rollout_step ...", flush=True)
    r, k = _cuda_rollout_case(device, quick, compile_)
    rows += r
    speedups.update(k)
    critic = [  # key, N, with the TD term, with torch.compile
        ("critic_update_n2", 2, True, False),
        ("critic_update_n10", 10, True, True),
        ("critic_update_n50", 50, True, False),
        ("diversity_n10", 10, False, False),
    ]
    for key, n, with_td, with_compile in critic:
        print(f"{key} ...", flush=True)
        r, k = _cuda_critic_case(key, n, with_td, device, quick, compile_ and with_compile)
        rows += r
        speedups.update(k)
    return rows, speedups


def main_cuda(quick: bool, out: Path | None, *, compile_: bool = True) -> tuple[Path, list[str]]:
    """--device cuda: every case on the GPU, written to results/gpu/ensemble.json (or `out`).
    Returns the path and the failed providers ("case / provider: error")."""
    device = torch.device("cuda")
    backend = ops.backend_report(device)
    print(f"device {device} ({torch.cuda.get_device_name(0)}); backends: {backend}")
    peak = matmul_peak_gflops(device, 1024 if quick else 4096)
    print(f"peak float32 matmul: {peak:.1f} GFLOP/s")
    rows, speedups = run_cuda(device, quick, compile_)
    print()
    table = print_table(rows, CUDA_COLUMNS)
    print()
    for key, value in speedups.items():
        print(f"{key:<32} {value:6.2f}x")
    errors = [f"{r['case']} / {r['provider']}: {r['error']}" for r in rows if "error" in r]
    path = write_results(
        "ensemble",
        rows,
        speedups,
        out=out or GPU_OUT,
        extra={
            "peak_matmul_gflops": peak,
            "device": str(device),
            "backends": backend,
            "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "quick": quick,
            "torch_compile": compile_,
            "errors": errors,
            "table": table,
        },
    )
    print(f"wrote {path}")
    return path, errors


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv, device=True, options=_cuda_options)
    device = torch.device(args.device)
    if device.type == "cuda":
        _, errors = main_cuda(args.quick, args.out, compile_=not args.no_compile)
        # An eor path that cannot run fails the run; a reference that fails to compile does not.
        broken = [e for e in errors if " / eor " in e]
        if broken:
            print("eor providers that failed:\n  " + "\n  ".join(broken), file=sys.stderr)
            raise SystemExit(1)
        return
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
