"""SAC learning curves of `eor train-online` runs: evaluated return over env steps.

Reads each run directory's metrics.jsonl (the evaluation records: env_steps, return_mean,
return_std over the evaluation episodes) and draws one panel per env, one line per run, with
a band of ± the std over its evaluation episodes. Prints the return at every `--every` env steps
(the last evaluation at or before each mark; blank past the run's last evaluation) as a markdown
table. Works on a run that is still going (and on the SAC run of an `eor make-dataset` recipe,
`<store>/recipes/ENV-sSEED/sac`).

Beside each env's runs it draws a published SAC curve, mean ± std over seeds, up to the runs'
last step: by default Tianshou's MuJoCo benchmark (benchmarks/reference/tianshou_sac_mujoco.csv,
whose header says where the numbers come from and how they were made); `--reference none` leaves
it out. The table gets a row per env for it.

    python benchmarks/sac_curves.py RUN_DIR [RUN_DIR ...] --out docs/results/sac_online.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).with_name("reference") / "tianshou_sac_mujoco.csv"
REFERENCE_LABEL = "Tianshou SAC (-v3, 10 seeds)"
REFERENCE_COLUMNS = ["env", "env_step", "mean", "std"]

# env name -> [(env_step, mean, std)] in step order
Reference = dict[str, list[tuple[int, float, float]]]


def read_reference(path: Path) -> Reference:
    """A published-curve CSV: '#' comment lines, then the header env,env_step,mean,std."""
    if not path.is_file():
        raise SystemExit(f"--reference {path}: no such file")
    rows = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not rows or rows[0].split(",") != REFERENCE_COLUMNS:
        raise SystemExit(f"--reference {path}: expected the header {','.join(REFERENCE_COLUMNS)}")
    ref: Reference = {}
    for n, row in enumerate(rows[1:], start=2):
        cells = row.split(",")
        try:
            env, step, mean, std = cells[0], int(cells[1]), float(cells[2]), float(cells[3])
        except (IndexError, ValueError):
            raise SystemExit(
                f"--reference {path}: data row {n - 1} is not env,int,float,float: {row!r}"
            ) from None
        if len(cells) != 4 or std < 0:
            raise SystemExit(
                f"--reference {path}: data row {n - 1} needs 4 cells and std >= 0: {row!r}"
            )
        points = ref.setdefault(env, [])
        if points and step <= points[-1][0]:
            raise SystemExit(
                f"--reference {path}: {env}'s env_step must increase (data row {n - 1})"
            )
        points.append((step, mean, std))
    return ref


def read_evals(run_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """(env name, evaluation records in order) of one train-online run."""
    from eor.results.runs import read_metrics

    config = json.loads((run_dir / "config.json").read_text())
    if "total_steps" not in config:
        raise SystemExit(f"{run_dir}: not an eor train-online run (config.json has no total_steps)")
    evals = [e for e in read_metrics(run_dir / "metrics.jsonl")["eval"] if "env_steps" in e]
    return str(config["env_name"]), evals


def _name(run_dir: Path) -> str:
    """A run's short name: its folder and the one above (a recipe's SAC run is ENV-sSEED/sac)."""
    return f"{run_dir.resolve().parent.name}/{run_dir.name}"


def table(runs: dict[Path, tuple[str, list[dict[str, Any]]]], every: int, ref: Reference) -> str:
    last = max((e["env_steps"] for _, evals in runs.values() for e in evals), default=0)
    marks = list(range(every, last + 1, every))
    lines = [
        "| run | " + " | ".join(f"{m // 1000}k" for m in marks) + " |",
        "|---|" + "---:|" * len(marks),
    ]
    for run_dir, (env, evals) in runs.items():
        cells = []
        for m in marks:
            before = [e for e in evals if e["env_steps"] <= m]
            reached = bool(evals) and evals[-1]["env_steps"] >= m  # blank past the run's end
            cells.append(f"{before[-1]['return_mean']:.0f}" if before and reached else "")
        lines.append(f"| {env} ({_name(run_dir)}) | " + " | ".join(cells) + " |")
    for env in dict.fromkeys(env for env, _ in runs.values()):
        points = ref.get(env, [])
        if points:
            cells = []
            for m in marks:
                published = [p for p in points if p[0] <= m]
                cells.append(
                    f"{published[-1][1]:.0f} ± {published[-1][2]:.0f}" if published else ""
                )
            lines.append(f"| {env} ({REFERENCE_LABEL}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[Path, tuple[str, list[dict[str, Any]]]], out: Path, ref: Reference) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    envs = list(dict.fromkeys(env for env, _ in runs.values()))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for col, env in enumerate(envs):
        ax = axes[0][col]
        last = max(
            (e["env_steps"] for r_env, ev in runs.values() if r_env == env for e in ev), default=0
        )
        points = [p for p in ref.get(env, []) if p[0] <= last]
        if points:
            x = [p[0] for p in points]
            y = [p[1] for p in points]
            lo = [p[1] - p[2] for p in points]
            hi = [p[1] + p[2] for p in points]
            ax.plot(
                x,
                y,
                color="0.35",
                linestyle="--",
                label=f"{REFERENCE_LABEL}, mean ± std over seeds",
            )
            ax.fill_between(x, lo, hi, color="0.6", alpha=0.2)
        for run_dir, (run_env, evals) in runs.items():
            if run_env != env or not evals:
                continue
            x = [e["env_steps"] for e in evals]
            y = [e["return_mean"] for e in evals]
            s = [e.get("return_std", 0.0) for e in evals]
            (line,) = ax.plot(x, y, label=f"eor SAC ({_name(run_dir)}), mean ± std over episodes")
            lo = [a - b for a, b in zip(y, s, strict=True)]
            hi = [a + b for a, b in zip(y, s, strict=True)]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_title(f"{env}: evaluated return")
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run_dirs", type=Path, nargs="+", help="eor train-online run directories")
    p.add_argument("--out", type=Path, required=True, help="figure file (.png, .pdf, .svg)")
    p.add_argument("--every", type=int, default=50_000, help="table column spacing, env steps")
    p.add_argument(
        "--reference",
        default=str(REFERENCE),
        help="published SAC curves to draw beside the runs (CSV env,env_step,mean,std); 'none' to omit",
    )
    args = p.parse_args(argv)
    ref = {} if args.reference == "none" else read_reference(Path(args.reference))
    runs = {}
    for d in args.run_dirs:
        if not (d / "metrics.jsonl").is_file() or not (d / "config.json").is_file():
            p.error(f"{d}: no config.json and metrics.jsonl (not a run directory)")
        runs[d] = read_evals(d)
    print(table(runs, args.every, ref))
    plot(runs, args.out, ref)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
