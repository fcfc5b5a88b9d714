"""`eor plot`: learning curves of one or more runs, seeds of a config drawn as mean ± std.

Three panels share the x axis (gradient updates):

1. the D4RL normalised evaluation score;
2. the Q-value statistics: Q(s, π(s)) mean over critics and batch, with a band of
   ± q_policy_std (the std across the critic ensemble, averaged over the batch), and
   q_random_std (the same std at uniform random actions). The edge-of-reach failure shows as
   Q values blowing up; RAVL's ensemble penalty keeps them bounded;
3. the critic loss (log scale when all positive and spanning more than a decade).

When the runs span several datasets, each dataset gets its own column of the three panels.

Seeds are aligned on the update count: at each update count the mean and the population std
(ddof = 0) are taken over the seeds that logged it, so a shorter (interrupted) seed simply stops
contributing.

`eor plot` also draws the edge-of-reach diagnostics, Q by rollout step and overestimation, in a
second figure (`eor.results.reach`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eor.results.runs import Group, Run, differing_fields, group_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FIGSIZE = (10.0, 11.0)  # inches
MULTI_COL_WIDTH = 6.0  # inches per dataset column when the runs span several datasets
DPI = 100  # -> a 1000 x 1100 pixel PNG
SCORE_NOTE = (
    "D4RL normalised score = 100 · (return − random-policy return) / "
    "(expert return − random-policy return). Lines: mean over seeds; score band: ± population "
    "std over seeds; Q band: ± q_policy_std."
)


def aligned(
    runs: Sequence[Run], kind: str, key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Align one metric of several runs on their update counts.

    Returns (updates [T], mean [T], std [T], n [T]): at each update count logged by at least
    one run, the mean and population std (ddof=0) over the runs that logged a finite value
    there. Non-finite values (a diverged run) are left out rather than drawn.
    """
    by_x: dict[float, list[float]] = {}
    for run in runs:
        records = {"train": run.train, "eval": run.evals, "rollout": run.rollout}[kind]
        for rec in records:
            v = rec.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                by_x.setdefault(float(rec["updates"]), []).append(float(v))
    xs = sorted(by_x)
    mean = np.array([np.mean(by_x[x]) for x in xs], dtype=np.float64)
    std = np.array([np.std(by_x[x]) for x in xs], dtype=np.float64)  # ddof=0
    n = np.array([len(by_x[x]) for x in xs], dtype=np.int64)
    return np.asarray(xs, dtype=np.float64), mean, std, n


def _seeds_text(group: Group) -> str:
    """The seeds for a legend: "seed 0", "seeds 0, 1, 2" (up to three named), else "5 seeds"."""
    seeds = [str(s) for s in group.seeds]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) <= 3:
        return "seeds " + ", ".join(seeds)
    return f"{len(seeds)} seeds"


def _title(groups: Sequence[Group]) -> str:
    pairs: dict[str, None] = {}
    for g in groups:
        env = g.runs[0].env_id
        pairs.setdefault(f"{env} · {g.dataset}" if env else g.dataset, None)
    names = list(pairs)
    if len(names) > 3:
        names = names[:3] + [f"+{len(pairs) - 3} more"]
    # eor train-online runs (SAC: RAVL's learner with eta 0) have total_steps in their config.
    online = all("total_steps" in r.config for g in groups for r in g.runs)
    return ("SAC" if online else "RAVL") + " learning curves: " + "; ".join(names)


def plot_groups(groups: Sequence[Group], out: str | os.PathLike[str]) -> Path:
    """Draw the three panels for `groups` into `out` (format from its suffix). Returns the path."""
    # A bare Figure (no pyplot) renders with the Agg canvas, needs no display and leaves the
    # caller's pyplot backend and state alone.
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    fields = differing_fields(groups)
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    ncols = len(datasets)  # one column of panels per dataset; one column for one dataset
    fig = Figure(
        figsize=(FIGSIZE[0] if ncols == 1 else MULTI_COL_WIDTH * ncols, FIGSIZE[1]),
        dpi=DPI,
        # rect leaves the bottom strip for the note on the score
        layout=ConstrainedLayoutEngine(h_pad=0.08, rect=(0, 0.03, 1, 0.97)),
    )
    axes = fig.subplots(
        3,
        ncols,
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1.5, 1.1]},
    )
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, dataset in enumerate(datasets):
        _draw_panels(
            [(i, g) for i, g in enumerate(groups) if g.dataset == dataset],
            fields,
            colors,
            axes[0, col],
            axes[1, col],
            axes[2, col],
        )

    fig.text(0.5, 0.002, SCORE_NOTE, ha="center", va="bottom", fontsize=7.5, wrap=True)

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _draw_panels(
    indexed: Sequence[tuple[int, Group]],
    fields: Sequence[str],
    colors: Sequence[str],
    ax_s: Axes,
    ax_q: Axes,
    ax_l: Axes,
) -> None:
    """Draw the score, Q and loss panels of the (colour index, group) pairs on three axes."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    groups = [g for _, g in indexed]
    loss_positive = True
    any_loss = False
    any_eval = False
    q_scales: list[float] = []  # per group, the largest |Q statistic| drawn
    for i, g in indexed:
        c = colors[i % len(colors)]
        seeds = len(g.runs)
        label = f"{group_label(g, fields)} ({_seeds_text(g)})"

        x, m, s, _ = aligned(g.runs, "eval", "score_mean")
        if len(x):
            any_eval = True
            ax_s.plot(
                x,
                m,
                color=c,
                marker="o" if len(x) <= 60 else None,
                markersize=3.5,
                linewidth=1.8,
                label=label,
            )
            if seeds > 1:
                ax_s.fill_between(x, m - s, m + s, color=c, alpha=0.2, linewidth=0)
        else:  # still in the legend, so a run without evaluations is not silently missing
            ax_s.plot([], [], color=c, marker="o", label=f"{label}: no evaluation yet")

        x, m, _, _ = aligned(g.runs, "train", "q_policy_mean")
        xq, qs, _, _ = aligned(g.runs, "train", "q_policy_std")
        if len(x):
            ax_q.plot(x, m, color=c, linewidth=1.5)
            q_scales.append(float(np.max(np.abs(m))))
            if np.array_equal(x, xq):
                ax_q.fill_between(x, m - qs, m + qs, color=c, alpha=0.15, linewidth=0)
        x, m, _, _ = aligned(g.runs, "train", "q_random_std")
        if len(x):
            ax_q.plot(x, m, color=c, linewidth=1.3, linestyle="--")

        x, m, _, _ = aligned(g.runs, "train", "critic_loss")
        if len(x):
            any_loss = True
            loss_positive &= bool(np.all(m > 0))
            ax_l.plot(x, m, color=c, linewidth=1.5)

    ax_s.set_title(_title(groups), fontsize=13)
    if not any_eval:
        ax_s.text(0.5, 0.5, "no evaluation yet", transform=ax_s.transAxes, ha="center", color="0.4")
        ax_s.set_yticks([])
    ax_s.set_ylabel("normalised score\n(0 = random, 100 = expert)")
    ax_s.legend(
        loc="best", fontsize=9, title="dataset, config (seeds): mean ± std", title_fontsize=9
    )
    ax_s.grid(alpha=0.3)

    ax_q.set_ylabel("Q value")
    # One group blowing up (the failure this panel exists for) would flatten the others on a
    # linear axis: switch to symlog, linear up to the decade below the smallest group's scale.
    if len(q_scales) > 1 and min(q_scales) > 0 and max(q_scales) / min(q_scales) > 30:
        linthresh = 10.0 ** math.floor(math.log10(min(q_scales)))
        ax_q.set_yscale("symlog", linthresh=linthresh)
        ax_q.set_ylabel("Q value (symlog scale)")
    ax_q.set_title("Q-value statistics (edge-of-reach failure: Q blows up)", fontsize=10)
    ax_q.legend(
        handles=[
            Line2D(
                [],
                [],
                color="0.2",
                linewidth=1.5,
                label="Q(s, π(s)) mean, band ± q_policy_std (std across critics)",
            ),
            Line2D(
                [],
                [],
                color="0.2",
                linewidth=1.3,
                linestyle="--",
                label="q_random_std (std across critics at random actions)",
            ),
        ],
        loc="best",
        fontsize=8,
    )
    ax_q.grid(alpha=0.3)

    ax_l.set_ylabel("critic loss")
    ax_l.set_title("critic loss (TD + η · diversity), mean over seeds", fontsize=10)
    # Log scale where it helps: positive losses spanning more than a decade (a blow-up).
    # Within a decade, a log axis only gets hard-to-read minor-tick labels.
    lo, hi = ax_l.dataLim.intervaly
    if any_loss and loss_positive and hi > 10 * lo:
        ax_l.set_yscale("log")
        ax_l.set_ylabel("critic loss (log scale)")
    ax_l.grid(alpha=0.3)
    ax_l.set_xlim(left=0)
    ax_l.set_xlabel("gradient updates")
    ax_l.xaxis.set_major_formatter(EngFormatter(sep=""))


def default_out(run_dirs: Sequence[Path]) -> Path:
    """RUN_DIR/learning_curve.png for one run, ./learning_curves.png for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "learning_curve.png"
    return Path("learning_curves.png")


def check_out(out: str | os.PathLike[str]) -> Path:
    """Validate an --out path: a file name ending in .png, .pdf or .svg."""
    p = Path(out)
    if p.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--out must end in .png, .pdf or .svg; got {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"--out must be a file name, not the directory {str(p)!r}")
    return p
