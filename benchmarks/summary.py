"""Print the speedup keys of every benchmarks/results/*.json as one markdown table.

    python benchmarks/summary.py          # paste into benchmarks/README.md and README.md
    python benchmarks/summary.py benchmarks/results/malloc_tuned   # the --malloc-tuning runs

Targets are the issues' (None where an issue names none); a speedup is baseline median time
over eor's median time, measured in one process by the bench_<name>.py that wrote the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# key -> target speedup on the 2-core CPU (from the issues); keys not listed have none.
TARGETS: dict[str, float] = {
    "mixed_vs_numpy": 20.0,
    "mixed_vs_reference": 20.0,
    "mixed_vs_gather_floor": 1 / 3,
    "critic_update_n10": 1.5,
    "critic_update_n50": 1.5,
    "diversity_n10": 2.0,
    "rollout_step": 4.0,
    "epoch_vs_ref": 2.0,
    "rollout_vs_ref": 8.0,
    "update_n10_vs_ref": 3.0,
    "update_n50_vs_ref": 3.0,
}


def main(argv: list[str] | None = None) -> None:
    """argv: an optional results folder (default benchmarks/results; the runs made with
    --malloc-tuning are kept in benchmarks/results/malloc_tuned)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else RESULTS
    print("| benchmark | key | speedup | target | met | git | machine |")
    print("|---|---|---:|---:|---|---|---|")
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        machine = doc.get("machine", {})
        where = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
        if machine.get("malloc_tuned"):
            where += ", malloc tuned"
        if machine.get("gpu"):
            where += f", {machine['gpu']}"
        for key, value in doc.get("speedups", {}).items():
            target = TARGETS.get(key)
            met = "" if target is None else ("yes" if value >= target else "**no**")
            tgt = "" if target is None else f"{target:.3g}x"
            print(
                f"| {path.stem} | `{key}` | {value:.2f}x | {tgt} | {met} | {doc.get('git_sha', '?')} | {where} |"
            )


if __name__ == "__main__":
    main()
