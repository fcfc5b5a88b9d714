"""The bookkeeping of benchmarks/gpu_check.sh: part records, per-part JSON and the summary.

    python benchmarks/gpu_summary.py start  --dir DIR --cuda yes|no [--clean] [--reason TEXT] ...
    python benchmarks/gpu_summary.py part   --dir DIR --name NAME --status STATUS ...
    python benchmarks/gpu_summary.py finish --dir DIR --seconds S --budget S

`start` writes DIR/summary.json (keys machine, git_sha, results, speedups, as every
benchmarks/results file, plus the run's settings); with --clean it first removes the files a
previous run left in DIR, so that nothing stale is reported. `part` appends one part's record
to summary.json's results and, with --json NAME, to DIR/NAME (created with the same four keys);
it reads pytest's JUnit XML (--junit), a train-agent run directory (--run-dir) and a part's
own JSON report (--attach) into the record. `finish` merges the speedups of the benchmark JSON the parts wrote (--result) into
summary.json and writes DIR/summary.md; its exit status is 1 if a part failed, timed out or
was not run for want of budget.

Standard library only (torch and triton are read if importable), so that it runs with any
Python, also where eor cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# not_run: a part the budget left no time for (an incomplete check fails, like a failed part).
STATUSES = ("passed", "failed", "timeout", "skipped", "not_run")
FAILING = ("failed", "timeout", "not_run")
# Every file a run writes in DIR (logs/ aside): `start --clean` removes them.
OUTPUTS = (
    "summary.md",
    "summary.json",
    "compile_check.json",
    "pytest_gpu.json",
    "ensemble.json",
    "agent.json",
    "train_agent.json",
    "logs.tar.gz",
)
LOG_TAIL_LINES = 40


def machine_info() -> dict[str, Any]:
    """benchmarks.common.machine_info's fields that need no eor, plus the GPU and triton."""
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
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # no torch in this Python: the summary still gets written
        info["torch"] = None
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


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


def _doc() -> dict[str, Any]:
    return {"machine": machine_info(), "git_sha": git_sha(), "results": [], "speedups": {}}


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


# ------------------------------------------------------------------------------ readers


def read_junit(path: Path) -> dict[str, Any]:
    """Counts (passed, failed, errors, skipped) and the failing tests of a JUnit XML file."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[str] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            node = case.find("failure")
        elif case.find("error") is not None:
            counts["errors"] += 1
            node = case.find("error")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            continue
        else:
            counts["passed"] += 1
            continue
        message = (node.get("message") or "").splitlines()[0][:200] if node is not None else ""
        failures.append(f"{name}: {message}")
    return {"tests": counts, "failures": failures}


def read_run_dir(path: Path) -> dict[str, Any]:
    """What a train-agent run measured: updates/s of its train records, rollout phase times,
    wall time and the last score (from metrics.jsonl and summary.json)."""
    out: dict[str, Any] = {}
    metrics = path / "metrics.jsonl"
    if metrics.exists():
        ups, rollout = [], []
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("kind") == "train" and "updates_per_s" in rec:
                ups.append(float(rec["updates_per_s"]))
            elif rec.get("kind") == "rollout" and "rollout_time" in rec:
                rollout.append(float(rec["rollout_time"]))
        if ups:
            out["updates_per_s"] = ups
            # The first window holds the warm-up (kernel compilation, graph capture).
            later = sorted(ups[1:] or ups)
            out["updates_per_s_median_after_first"] = later[len(later) // 2]
        if rollout:
            out["rollout_time_s"] = rollout
    summary = path / "summary.json"
    if summary.exists():
        s = _read(summary)
        for key in ("status", "total_updates", "wall_time_s", "last_score", "best_score"):
            if key in s:
                out[key] = s[key]
    return out


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ------------------------------------------------------------------------------ commands


def cmd_start(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.clean:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for log in (out / "logs").glob("*.log"):
            log.unlink()
    doc = _doc()
    doc.update(
        cuda_visible=args.cuda == "yes",
        reason=args.reason,
        python=args.python,
        budget_s=args.budget,
        quick=bool(args.quick),
        started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    )
    _write(out / "summary.json", doc)
    return 0


def cmd_part(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        print(f"gpu_summary.py part: {summary_path} is missing; run `start` first", file=sys.stderr)
        return 2
    record: dict[str, Any] = {
        "part": args.name,
        "status": args.status,
        "rc": args.rc,
        "seconds": round(args.seconds, 2),
        "command": args.command,
    }
    if args.detail:
        record["detail"] = args.detail
    if args.log:
        record["log"] = f"logs/{Path(args.log).name}"
        if args.status in ("failed", "timeout"):
            record["log_tail"] = log_tail(Path(args.log))
    if args.junit and Path(args.junit).exists():
        record.update(read_junit(Path(args.junit)))
    if args.run_dir and Path(args.run_dir).is_dir():
        record["run"] = read_run_dir(Path(args.run_dir))
    if args.result:
        record["result"] = args.result
    if args.attach and Path(args.attach).exists():
        try:
            record["report"] = _read(Path(args.attach))
        except (OSError, json.JSONDecodeError) as exc:
            record["report_error"] = f"{args.attach}: {exc}"
    summary = _read(summary_path)
    summary["results"].append(record)
    _write(summary_path, summary)
    if args.json:
        path = out / args.json
        if path.exists():
            doc = _read(path)
        else:  # the run's machine and commit, as summary.json has them
            doc = {k: summary[k] for k in ("machine", "git_sha")} | {"results": [], "speedups": {}}
        doc["results"].append(record)
        _write(path, doc)
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return lines


def _part_detail(rec: dict[str, Any]) -> str:
    bits = []
    if rec.get("detail"):
        bits.append(rec["detail"])
    tests = rec.get("tests")
    if tests:
        bits.append(", ".join(f"{v} {k}" for k, v in tests.items() if v))
    for failure in rec.get("failures", [])[:5]:
        bits.append(failure)
    run = rec.get("run")
    if run:
        if "updates_per_s_median_after_first" in run:
            bits.append(f"{run['updates_per_s_median_after_first']:.1f} updates/s")
        if run.get("rollout_time_s"):
            bits.append(f"rollout phase {run['rollout_time_s'][-1]:.2f} s")
        if run.get("last_score") is not None:
            bits.append(f"score {run['last_score']:.2f}")
    if rec.get("status") in ("failed", "timeout") and rec.get("log_tail"):
        bits.append(f"last line: {rec['log_tail'][-1][:160]}")
    return "; ".join(bits)


def _status_cell(rec: dict[str, Any]) -> str:
    status = rec["status"]
    if status == "failed":
        return f"**FAILED** (rc {rec['rc']})"
    if status == "timeout":
        return f"**TIMEOUT** (rc {rec['rc']})"
    if status == "not_run":
        return "**NOT RUN**"
    return status


def cmd_finish(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    summary = _read(out / "summary.json")
    parts = summary["results"]
    # Benchmark JSON written by a part of this run (never a stale one: `start --clean`).
    bench: dict[str, dict[str, Any]] = {}
    for rec in parts:
        name = rec.get("result")
        if name and rec["status"] not in ("skipped", "not_run") and (out / name).exists():
            bench[rec["part"]] = _read(out / name)
            for key, value in bench[rec["part"]].get("speedups", {}).items():
                summary["speedups"][f"{rec['part']}.{key}"] = value
    failed = [r["part"] for r in parts if r["status"] in FAILING]
    ran = [r["part"] for r in parts if r["status"] not in ("skipped", "not_run")]
    summary.update(finished_s=args.seconds, failed=failed, ran=ran)
    _write(out / "summary.json", summary)

    machine = summary["machine"]
    lines = ["# GPU check (benchmarks/gpu_check.sh)", ""]
    where = machine.get("gpu") or "no GPU"
    lines.append(
        f"Run {summary.get('started_utc', '?')} UTC on {where}, {machine.get('cores')} CPU cores; "
        f"python {machine.get('python')}, torch {machine.get('torch')}, "
        f"triton {machine.get('triton')}; git {summary['git_sha']}; "
        f"{args.seconds} s of the {args.budget} s budget"
        + ("; --quick sizes" if summary.get("quick") else "")
        + "."
    )
    lines.append("")
    if not summary.get("cuda_visible"):
        lines += [f"**No CUDA device visible: nothing ran.** {summary.get('reason', '')}", ""]
    else:
        lines += [
            f"Parts run: {', '.join(ran) or 'none'}. "
            + (f"**Failed or not run: {', '.join(failed)}.**" if failed else "None failed."),
            "",
        ]
    rows = [
        {
            "part": r["part"],
            "status": _status_cell(r),
            "seconds": r["seconds"] if r["status"] not in ("skipped", "not_run") else None,
            "detail": _part_detail(r),
        }
        for r in parts
    ]
    lines += _table(rows, ["part", "status", "seconds", "detail"]) + [""]
    if summary["speedups"]:
        lines += ["## Speedups", ""]
        lines += _table(
            [{"key": k, "value": v} for k, v in summary["speedups"].items()], ["key", "value"]
        )
        lines.append("")
    if "ensemble" in bench:
        doc = bench["ensemble"]
        lines += [
            "## Ensemble ops (ensemble.json)",
            "",
            f"Peak float32 matmul {_fmt(doc.get('peak_matmul_gflops'))} GFLOP/s, "
            f"allow_tf32 {doc.get('allow_tf32')}.",
            "",
        ]
        lines += _table(
            doc["results"],
            [
                "case",
                "shape",
                "provider",
                "median_ms",
                "first_call_ms",
                "gflops",
                "speedup",
                "error",
            ],
        )
        lines.append("")
    if "agent" in bench:
        lines += ["## Agent (agent.json)", ""]
        lines += _table(
            bench["agent"]["results"],
            ["case", "impl", "median_ms", "updates_per_s", "gflops", "vs_ref"],
        )
        note = bench["agent"].get("phases_note")
        lines += ["", f"Note: {note}"] if note else []
        backends = bench["agent"].get("ops_backends") or {}
        if backends:  # after the run: an automatic Triton choice that failed says so here
            lines += [
                "",
                "Backends after the run: " + ", ".join(f"{k} {v}" for k, v in backends.items()),
            ]
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="begin a run: summary.json with the machine")
    start.add_argument("--dir", required=True)
    start.add_argument("--cuda", choices=("yes", "no"), required=True)
    start.add_argument("--clean", action="store_true", help="remove a previous run's files")
    start.add_argument("--reason", default="")
    start.add_argument("--python", default="")
    start.add_argument("--budget", type=int, default=0)
    start.add_argument("--quick", type=int, default=0)
    part = sub.add_parser("part", help="record one part")
    part.add_argument("--dir", required=True)
    part.add_argument("--name", required=True)
    part.add_argument("--status", choices=STATUSES, required=True)
    part.add_argument("--rc", type=int, default=0)
    part.add_argument("--seconds", type=float, default=0.0)
    part.add_argument("--command", default="")
    part.add_argument("--log", default="")
    part.add_argument("--detail", default="")
    part.add_argument("--json", default="", help="also append the record to DIR/JSON")
    part.add_argument("--junit", default="", help="pytest's JUnit XML")
    part.add_argument("--run-dir", default="", help="a train-agent run directory")
    part.add_argument("--result", default="", help="the benchmark JSON the part wrote in DIR")
    part.add_argument("--attach", default="", help="a JSON report to keep in the record")
    finish = sub.add_parser("finish", help="write summary.md; exit 1 if a part failed")
    finish.add_argument("--dir", required=True)
    finish.add_argument("--seconds", type=int, default=0)
    finish.add_argument("--budget", type=int, default=0)
    args = parser.parse_args(argv)
    return {"start": cmd_start, "part": cmd_part, "finish": cmd_finish}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
