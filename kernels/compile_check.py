"""Ahead-of-time compile of every kernel launch eor makes, for real GPUs, on a machine without one.

    python -m eor.kernels.compile_check                  # sm_80 and sm_90, every launch
    python -m eor.kernels.compile_check --targets 90 --only critic_gemm --json report.json
    python -m eor.kernels.compile_check --list           # the launches, without compiling

How: the real launchers (`eor.kernels.ensemble_linear`, `.ensemble_mlp`, `.diversity`) run on
CPU tensors of the realistic shapes below inside `eor.kernels.launch.recording()`, which records
each launch (kernel, argument types, constexprs, warps, stages, grid) instead of running it. So
the check compiles what the launchers choose, with no second list of configurations to drift.
Each distinct launch is compiled with `triton.compile` for an explicit `GPUTarget` (Triton's
bundled ptxas; no GPU, no CUDA driver) with the precision policy off (IEEE) and on (TF32
allowed), and its cubin's resource usage is read with the bundled `cuobjdump`.

Shapes (issue 15): critic ensembles N ∈ {2, 10, 50}, batch 256, hidden 256, (obs, act) ∈
{(17, 6), (11, 3), (111, 8)}: the critic loss (`critic_loss_grads_triton`, η > 0 and η = 0),
the critic forward and backward of the actor step (`ensemble_linear`), the target's min over
members (`ensemble_mlp`, at batch 256 and at 4,096 rows, where the min is fused); dynamics ensembles of 7 members, hidden 200 × 4 (SiLU), batch 256
(training, `ensemble_linear` forward and backward) and 50,000-row rollouts
(`gaussian_ensemble_fwd`, gathered by member) and 2,048-row holdout chunks (`ensemble_mlp`).

It fails (exit 1) on: a compile error; register spills (local memory or stack frame > 0); shared
memory over the target's per-block limit; a dot lowered to CUDA-core FMA where the precision
policy asks for TF32 tensor cores; a compile slower than `--max-seconds` (30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .launch import RecordedLaunch, recording

TARGETS = {80: "sm_80 (A100)", 90: "sm_90 (H100/H200)"}
# Opt-in shared memory per block (CUDA programming guide, compute capabilities table).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
CRITIC_SHAPES = [(17, 6), (11, 3), (111, 8)]
CRITIC_SIZES = (2, 10, 50)
CRITIC_BATCH, CRITIC_HIDDEN = 256, 256
DYN_MEMBERS, DYN_HIDDEN, DYN_LAYERS = 7, 200, 4
DYN_BATCH, DYN_ROLLOUT_ROWS, DYN_HOLDOUT_CHUNK = 256, 50_000, 2048


# ----------------------------------------------------------------------------- the launches


def _mlp_params(e: int, dims: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    ws = [torch.zeros(e, i, o) for i, o in zip(dims[:-1], dims[1:], strict=True)]
    return ws, [torch.zeros(e, o) for o in dims[1:]]


def _critic_scenarios() -> Iterator[tuple[str, Callable[[], None]]]:
    from . import diversity, ensemble_linear, ensemble_mlp

    for n in CRITIC_SIZES:
        for obs_dim, act_dim in CRITIC_SHAPES:
            d, h, b = obs_dim + act_dim, CRITIC_HIDDEN, CRITIC_BATCH
            ws, bs = _mlp_params(n, [d, h, h, h, 1])
            obs, act, target = torch.zeros(b, obs_dim), torch.zeros(b, act_dim), torch.zeros(b)
            where = f"critic N={n} obs={obs_dim} act={act_dim}"

            def loss(eta: float = 1.0, ws=ws, bs=bs, obs=obs, act=act, target=target) -> None:
                diversity.critic_loss_grads_triton(obs, act, target, ws, bs, eta)

            def actor_step(ws=ws, bs=bs, obs=obs, act=act) -> None:
                x: torch.Tensor = torch.cat([obs, act], 1)
                for layer, (w, bias) in enumerate(zip(ws, bs, strict=True)):
                    activation = "none" if layer == len(ws) - 1 else "relu"
                    y, saved = ensemble_linear.ensemble_linear_fwd(x, w, bias, activation)
                    # The actor step needs dx only; a full backward covers everything else.
                    for needs in ((True, False, False), (True, True, True)):
                        ensemble_linear.ensemble_linear_bwd(y, x, w, y, saved, activation, needs)
                    x = y

            def target_min(ws=ws, bs=bs, obs=obs, act=act) -> None:
                ensemble_mlp.ensemble_mlp_fwd(torch.cat([obs, act], 1), ws, bs, reduce="min")

            def fused_min(ws=ws, bs=bs, d=d, h=h) -> None:  # enough row blocks for the fused min
                rows = ensemble_mlp.mlp_blocks(h)[0] * ensemble_mlp.MIN_ROW_BLOCKS_FOR_FUSED_MIN
                ensemble_mlp.ensemble_mlp_fwd(torch.zeros(rows, d), ws, bs, reduce="min")

            yield f"{where}: critic loss η=1", loss
            yield f"{where}: critic loss η=0", lambda loss=loss: loss(0.0)
            yield f"{where}: actor-step critic forward/backward", actor_step
            yield f"{where}: target min over members", target_min
            yield f"{where}: min over members, 4,096 rows (fused)", fused_min


def _dynamics_scenarios() -> Iterator[tuple[str, Callable[[], None]]]:
    from . import ensemble_linear, ensemble_mlp

    for obs_dim, act_dim in CRITIC_SHAPES:
        e, h, d_in, d_out = DYN_MEMBERS, DYN_HIDDEN, obs_dim + act_dim, 2 * (obs_dim + 1)
        ws, bs = _mlp_params(e, [d_in] + [h] * DYN_LAYERS + [d_out])
        where = f"dynamics E={e} obs={obs_dim} act={act_dim}"

        def train_step(ws=ws, bs=bs, d_in=d_in, e=e) -> None:
            x = torch.zeros(e, DYN_BATCH, d_in)
            for layer, (w, bias) in enumerate(zip(ws, bs, strict=True)):
                activation = "none" if layer == len(ws) - 1 else "silu"
                y, saved = ensemble_linear.ensemble_linear_fwd(x, w, bias, activation)
                ensemble_linear.ensemble_linear_bwd(y, x, w, y, saved, activation)
                x = y

        def rollout(ws=ws, bs=bs, d_in=d_in, d_out=d_out, e=e) -> None:
            x = torch.zeros(DYN_ROLLOUT_ROWS, d_in)
            members = torch.arange(DYN_ROLLOUT_ROWS) % e
            lv = torch.zeros(d_out // 2)
            ensemble_mlp.gaussian_ensemble_fwd(x, ws, bs, lv, lv, members=members)

        def holdout(ws=ws, bs=bs, d_in=d_in) -> None:
            ensemble_mlp.ensemble_mlp_fwd(torch.zeros(DYN_HOLDOUT_CHUNK, d_in), ws, bs, "silu")

        yield f"{where}: training step", train_step
        yield f"{where}: rollout step ({DYN_ROLLOUT_ROWS} rows)", rollout
        yield f"{where}: holdout chunk ({DYN_HOLDOUT_CHUNK} rows)", holdout


@contextlib.contextmanager
def _allow_tf32(allowed: bool) -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@dataclass
class Launch:
    """A distinct launch and the shapes that led to it."""

    recorded: RecordedLaunch
    wheres: list[str]
    programs: list[int]


def collect_launches() -> list[Launch]:
    """Every distinct launch of the launchers over the realistic shapes, TF32 off and on."""
    distinct: dict[RecordedLaunch, Launch] = {}
    with torch.no_grad():
        for tf32 in (False, True):
            with _allow_tf32(tf32):
                for where, run in [*_critic_scenarios(), *_dynamics_scenarios()]:
                    with recording(where) as launches:
                        run()
                    for r in launches:
                        entry = distinct.setdefault(r, Launch(r, [], []))
                        entry.wheres.append(where)
                        entry.programs.append(r.programs)
    return list(distinct.values())


# ----------------------------------------------------------------------------- compiling


@dataclass
class Result:
    kernel: str
    config: str
    target: int
    seconds: float
    registers: int | None
    spill_bytes: int | None  # local memory + stack frame per thread
    shared_bytes: int | None
    dot: str  # "tensor core" | "FMA" | "-" (no dot)
    asks_tensor_cores: bool
    programs_min: int
    programs_max: int
    example: str
    error: str | None = None
    problems: tuple[str, ...] = ()


def _bin(name: str) -> str:
    import triton.backends.nvidia as nvidia

    return str(Path(nvidia.__file__).parent / "bin" / name)


def _resources(cubin: bytes, kernel: str) -> tuple[int, int]:
    """(registers, local + stack bytes) of `kernel` in a cubin, by cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [_bin("cuobjdump"), "--dump-resource-usage", f.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(
        rf"Function {re.escape(kernel)}:\s*\n\s*REG:(\d+) STACK:(\d+).*?LOCAL:(\d+)", text
    )
    if match is None:
        raise RuntimeError(f"no resource usage for {kernel} in cuobjdump output:\n{text}")
    regs, stack, local = (int(g) for g in match.groups())
    return regs, stack + local


def _compile_one(launch: RecordedLaunch, target: int, cache_dir: str) -> dict[str, Any]:
    """Compile in this (child) process; returns the measurements as a dict."""
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # a fresh cache: real compile times
    warnings.filterwarnings("ignore")
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # Compiled, not interpreted: a process that ran the kernels under TRITON_INTERPRET=1 (the
    # tests) holds interpreter-decorated modules; re-import them (ensemble_linear first: the
    # others import its jit helpers).
    os.environ.pop("TRITON_INTERPRET", None)
    module = importlib.import_module(f"{__package__}.{launch.module}")
    if getattr(module, "INTERPRETED", False):
        importlib.reload(importlib.import_module(f"{__package__}.ensemble_linear"))
        module = importlib.reload(module)
    fn = getattr(module, launch.kernel)
    constexprs = dict(launch.constexprs)
    signature = dict(launch.signature) | {k: "constexpr" for k in constexprs}
    start = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn, signature, constexprs),
        target=GPUTarget("cuda", target, 32),
        options={"num_warps": launch.num_warps, "num_stages": launch.num_stages},
    )
    seconds = time.perf_counter() - start
    regs, spill = _resources(compiled.asm["cubin"], launch.kernel)
    ptx, ttir = compiled.asm["ptx"], compiled.asm["ttir"]
    if "tt.dot" not in ttir:
        dot = "-"
    elif "mma" in ptx:  # mma.sync (sm_80) or wgmma (sm_90)
        dot = "tensor core"
    else:
        dot = "FMA"
    return {
        "seconds": seconds,
        "registers": regs,
        "spill_bytes": spill,
        "shared_bytes": int(compiled.metadata.shared),
        "dot": dot,
    }


def _child(launch: RecordedLaunch, target: int, cache_dir: str, queue: Any) -> None:
    try:
        queue.put(_compile_one(launch, target, cache_dir))
    except BaseException as exc:  # noqa: BLE001 - reported, not raised
        queue.put({"error": f"{type(exc).__name__}: {exc}"[:2000]})


def compile_all(
    launches: list[Launch], targets: list[int], jobs: int, timeout: float, max_seconds: float
) -> list[Result]:
    """Compile every launch for every target, `jobs` processes at a time (forked, so the
    recorded launches need no pickling of kernels), each killed after `timeout` seconds."""
    ctx = mp.get_context("fork")
    tasks = [(launch, t) for launch in launches for t in targets]
    results: list[Result | None] = [None] * len(tasks)
    running: dict[int, tuple[Any, Any, float]] = {}
    next_task = 0
    with tempfile.TemporaryDirectory(prefix="eor-compile-check-") as cache_dir:
        while next_task < len(tasks) or running:
            while next_task < len(tasks) and len(running) < jobs:
                launch, target = tasks[next_task]
                queue = ctx.Queue()
                proc = ctx.Process(target=_child, args=(launch.recorded, target, cache_dir, queue))
                proc.start()
                running[next_task] = (proc, queue, time.monotonic())
                next_task += 1
            time.sleep(0.05)
            for i, (proc, queue, started) in list(running.items()):
                out: dict[str, Any] | None = None
                with contextlib.suppress(Exception):
                    out = queue.get_nowait()
                if out is None and proc.is_alive() and time.monotonic() - started < timeout:
                    continue
                if out is None:
                    proc.kill()
                    out = {"error": f"no result within {timeout:.0f} s (killed)"}
                proc.join()
                del running[i]
                launch, target = tasks[i]
                results[i] = _result(launch, target, out, max_seconds)
                print(_row(results[i]), flush=True)
    return [r for r in results if r is not None]


def _result(launch: Launch, target: int, out: dict[str, Any], max_seconds: float) -> Result:
    r = launch.recorded
    asks = dict(r.constexprs).get("INPUT_PRECISION") == "tf32"
    res = Result(
        kernel=r.kernel,
        config=r.config(),
        target=target,
        seconds=float(out.get("seconds", float("nan"))),
        registers=out.get("registers"),
        spill_bytes=out.get("spill_bytes"),
        shared_bytes=out.get("shared_bytes"),
        dot=str(out.get("dot", "?")),
        asks_tensor_cores=asks,
        programs_min=min(launch.programs),
        programs_max=max(launch.programs),
        example=launch.wheres[0],
        error=out.get("error"),
    )
    problems = []
    if res.error:
        problems.append(f"compile failed: {res.error}")
    else:
        if res.spill_bytes:
            problems.append(f"spills {res.spill_bytes} bytes per thread")
        if res.shared_bytes is not None and res.shared_bytes > SHARED_LIMIT[target]:
            problems.append(f"shared memory {res.shared_bytes} B > {SHARED_LIMIT[target]} B")
        if asks and res.dot == "FMA":
            problems.append("TF32 asked for, but the dot lowers to FMA")
        if res.seconds > max_seconds:
            problems.append(f"compile took {res.seconds:.1f} s > {max_seconds:.0f} s")
    res.problems = tuple(problems)
    return res


# ----------------------------------------------------------------------------- report


def _row(r: Result) -> str:
    status = "FAIL " + "; ".join(r.problems) if r.problems else "ok"
    regs = "-" if r.registers is None else str(r.registers)
    spill = "-" if r.spill_bytes is None else str(r.spill_bytes)
    smem = "-" if r.shared_bytes is None else f"{r.shared_bytes // 1024}K"
    progs = (
        str(r.programs_min)
        if r.programs_min == r.programs_max
        else f"{r.programs_min}-{r.programs_max}"
    )
    return (
        f"{r.kernel:<32} sm_{r.target} {r.seconds:6.1f}s regs {regs:>3} spill {spill:>5} "
        f"smem {smem:>5} dot {r.dot:<11} programs {progs:<9} {status}\n    {r.config}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eor.kernels.compile_check",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every launch passes, 1 otherwise.",
    )
    parser.add_argument("--targets", default="80,90", help="compute capabilities, e.g. 80,90")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default=None, help="regex on kernel name and config")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="slowest compile allowed")
    parser.add_argument("--timeout", type=float, default=120.0, help="kill a compile after this")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--list", action="store_true", help="list the launches, compile nothing")
    args = parser.parse_args(argv)
    try:
        targets = [int(t.strip().removeprefix("sm_")) for t in args.targets.split(",")]
    except ValueError:
        parser.error(f"--targets must be compute capabilities like 80,90, got {args.targets!r}")
    for t in targets:
        if t not in SHARED_LIMIT:
            parser.error(f"--targets: {t} is not one of {sorted(SHARED_LIMIT)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")

    launches = collect_launches()
    if args.only:
        pattern = re.compile(args.only)
        launches = [
            x for x in launches if pattern.search(f"{x.recorded.kernel} {x.recorded.config()}")
        ]
    print(f"{len(launches)} distinct launches x {len(targets)} targets", flush=True)
    if args.list:
        for x in launches:
            print(f"{x.recorded.kernel:<32} {x.recorded.config()}\n    e.g. {x.wheres[0]}")
        return 0
    start = time.perf_counter()
    results = compile_all(launches, targets, args.jobs, args.timeout, args.max_seconds)
    failed = [r for r in results if r.problems]
    slowest = max((r.seconds for r in results if r.error is None), default=0.0)
    print(
        f"\n{len(results)} compilations in {time.perf_counter() - start:.0f} s "
        f"(slowest {slowest:.1f} s): {len(failed)} failed",
        flush=True,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(results))
    return 1 if failed else 0


def markdown_table(results: list[Result]) -> str:
    """The results as a markdown table, one row per launch and target."""
    lines = [
        "| kernel | config | target | compile s | registers | spill B | smem KB | dot | programs "
        "| status |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in sorted(results, key=lambda r: (r.kernel, r.config, r.target)):
        status = "; ".join(r.problems) if r.problems else "ok"
        smem = "-" if r.shared_bytes is None else f"{r.shared_bytes / 1024:.0f}"
        progs = (
            str(r.programs_min)
            if r.programs_min == r.programs_max
            else f"{r.programs_min}-{r.programs_max}"
        )
        config = r.config.replace("INPUT_PRECISION=", "")
        lines.append(
            f"| `{r.kernel}` | {config} | sm_{r.target} | {r.seconds:.1f} | {r.registers} "
            f"| {r.spill_bytes} | {smem} | {r.dot} | {progs} | {status} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
