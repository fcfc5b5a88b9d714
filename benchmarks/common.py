"""Shared helpers for benchmarks/bench_*.py: timing, machine description, result files.

Every benchmark times eor beside its baseline in one process, prints medians, spreads and
ratios, and writes benchmarks/results/<name>.json:
    {"machine": ..., "git_sha": ..., "results": [...], "speedups": {"<key>": baseline/eor}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eor.runtime import malloc_tuned, tune_malloc

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# Exit status of a benchmark asked for `--device cuda` where no CUDA device is visible: the run
# is skipped, not failed (the automake convention; benchmarks/gpu_check.sh reads it).
EXIT_SKIPPED = 77


def parse_args(
    description: str,
    argv: list[str] | None = None,
    *,
    device: bool = False,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The benchmarks' common options; device=True adds `--device {cpu,cuda}` (default cpu),
    `options` adds a benchmark's own.

    `--device cuda` without a visible CUDA device prints why and exits with EXIT_SKIPPED.
    """
    parser = argparse.ArgumentParser(description=description)
    if options is not None:
        options(parser)
    if device:
        parser.add_argument(
            "--device",
            choices=("cpu", "cuda"),
            default="cpu",
            help="cpu (default) or cuda: the Triton path timed with triton.testing.do_bench, "
            f"results under results/gpu/; without a visible CUDA device: exit {EXIT_SKIPPED}",
        )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute, same keys")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default benchmarks/results/<name>.json)",
    )
    parser.add_argument(
        "--malloc-tuning",
        action="store_true",
        help="apply eor.runtime.tune_malloc() first, as eor's training commands do; the "
        "baseline, timed in the same process, gets it too (default: glibc's defaults for both)",
    )
    args = parser.parse_args(argv)
    if device and args.device == "cuda":
        require_cuda(parser.prog)
    if args.malloc_tuning:
        tune_malloc()
    return args


def require_cuda(prog: str) -> None:
    """Exit with EXIT_SKIPPED and a one-line reason unless torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    why = (
        f"torch {torch.__version__} is built without CUDA"
        if torch.version.cuda is None
        else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
    )
    print(
        f"{prog}: skipped: --device cuda asked for, but no CUDA device is visible ({why})",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_SKIPPED)


def timeit(
    fn: Callable[[], Any],
    *,
    repeats: int = 10,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run fn `warmup` times, then time `repeats` calls. Seconds: median, min, max, iqr-ish spread."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    q1 = times[len(times) // 4]
    q3 = times[(3 * len(times)) // 4]
    return {
        "median_s": statistics.median(times),
        "min_s": times[0],
        "max_s": times[-1],
        "spread_s": q3 - q1,
        "repeats": repeats,
    }


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "malloc_tuned": malloc_tuned(),  # eor.runtime.tune_malloc() applied to both sides
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def eor_command() -> list[str]:
    """The argv prefix that runs the `eor` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("eor")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "eor"]


def git_sha() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            text=True,
            stderr=subprocess.DEVNULL,
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(
    name: str,
    results: list[dict[str, Any]],
    speedups: dict[str, float],
    *,
    out: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the result JSON and return its path."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "machine": machine_info(),
        "git_sha": git_sha(),
        "results": results,
        "speedups": {k: round(float(v), 3) for k, v in speedups.items()},
    }
    if extra:
        doc.update(extra)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Print rows as a markdown table and return the text."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
    text = "\n".join(lines)
    print(text)
    return text
