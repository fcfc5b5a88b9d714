"""`eor plot`'s second figure: the edge-of-reach diagnostics (docs/algorithm.md §3.8).

Six panels, from the train records' `reach/*` keys and the eval records' Q-versus-return keys
(`eor.agent.diagnostics`):

1. Q ensemble mean by rollout step t over updates (a line per t, t = 0: dataset states,
   t = k: the last next-states, reachable only at the last step);
2. the ensemble std by rollout step over updates (RAVL's penalty is high where it is high);
3. the profile over t at the last log: mean ± ensemble std;
4. the largest |Q| on the probe over updates;
5. overestimation over training: Q(s_0, μ(s_0)) − the discounted return, evaluation start states;
6. the two terms of 5, and the Q at the probe's dataset states.

Seeds of a config are averaged at each update count (`eor.results.plot.aligned`): every line
drawn is a `reach_series` entry, which a test compares with the metrics.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eor.results.plot import aligned
from eor.results.runs import Group, Run, differing_fields, group_label

FIGSIZE = (12.0, 11.0)  # inches
DPI = 100  # -> a 1200 x 1100 pixel PNG
EVAL_KEYS: tuple[str, ...] = (
    "overestimation",
    "q_start_mean",
    "return_discounted_mean",
    "q_data_mean",
)
_STEP_KEY = re.compile(r"^reach/q_mean_t(\d+)$")
_LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.")  # matplotlib wants Literal styles

Series = tuple[np.ndarray, np.ndarray]
"""(updates [T], mean over seeds [T])."""


def steps_logged(runs: Sequence[Run]) -> int | None:
    """The largest rollout step t with a `reach/q_mean_t{t}` key in the runs' train records
    (k of a run that logged its diagnostics), or None when no run logged any."""
    found = [
        int(m.group(1))
        for run in runs
        for rec in run.train
        for key in rec
        if (m := _STEP_KEY.match(key))
    ]
    return max(found) if found else None


def reach_series(group: Group) -> dict[str, Series]:
    """Every series the reach figure draws for one group, by metrics key.

    Train keys `reach/q_mean_t{t}`, `reach/q_std_t{t}` (t = 0..k) and `reach/q_abs_max`, and
    the eval keys `EVAL_KEYS`, each as (updates, mean over the seeds that logged it); keys that
    no run logged are left out.
    """
    out: dict[str, Series] = {}
    k = steps_logged(group.runs)
    keys: list[tuple[str, str]] = []
    if k is not None:
        keys += [("train", f"reach/q_mean_t{t}") for t in range(k + 1)]
        keys += [("train", f"reach/q_std_t{t}") for t in range(k + 1)]
        keys.append(("train", "reach/q_abs_max"))
    keys += [("eval", key) for key in EVAL_KEYS]
    for kind, key in keys:
        x, m, _, _ = aligned(group.runs, kind, key)
        if len(x):
            out[key] = (x, m)
    return out


def last_profile(series: dict[str, Series]) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(updates, q_mean [k+1], q_std [k+1]) at the last update count where every step's mean
    and std were logged (finite), from `reach_series`; None when there is none."""
    ts = sorted(int(m.group(1)) for key in series if (m := _STEP_KEY.match(key)))
    if not ts:
        return None
    names = [f"reach/q_mean_t{t}" for t in ts] + [f"reach/q_std_t{t}" for t in ts]
    if any(n not in series for n in names):
        return None
    common = set(series[names[0]][0].tolist())
    for n in names[1:]:
        common &= set(series[n][0].tolist())
    if not common:
        return None
    x = max(common)

    def at(name: str) -> float:
        xs, ms = series[name]
        return float(ms[int(np.flatnonzero(xs == x)[0])])

    mean = np.array([at(f"reach/q_mean_t{t}") for t in ts])
    std = np.array([at(f"reach/q_std_t{t}") for t in ts])
    return x, mean, std


def has_reach_data(groups: Sequence[Group]) -> bool:
    """Whether any run logged a diagnostics key (runs from before them have none)."""
    return any(reach_series(g) for g in groups)


def draw_reach(groups: Sequence[Group]) -> Any:
    """The reach figure of `groups` (a matplotlib Figure, not yet saved)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    fields = differing_fields(groups)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout=ConstrainedLayoutEngine(h_pad=0.08))
    axes = fig.subplots(3, 2)
    ax_mean, ax_std = axes[0]
    ax_prof, ax_max = axes[1]
    ax_over, ax_terms = axes[2]
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    cmap = matplotlib.colormaps["viridis"]
    group_handles = []
    step_handles: dict[int, Any] = {}
    max_positive, any_max = True, False
    for i, g in enumerate(groups):
        c = colors[i % len(colors)]
        style = _LINESTYLES[i % len(_LINESTYLES)]
        label = group_label(g, fields)
        group_handles.append(Line2D([], [], color=c, linestyle=style, label=label))
        series = reach_series(g)
        k = steps_logged(g.runs)
        if k is not None:
            for t in range(k + 1):
                tc = cmap(t / max(k, 1) * 0.9)
                for ax, name in ((ax_mean, "reach/q_mean_t"), (ax_std, "reach/q_std_t")):
                    if f"{name}{t}" in series:
                        x, m = series[f"{name}{t}"]
                        ax.plot(x, m, color=tc, linestyle=style, linewidth=1.4)
                what = "dataset states" if t == 0 else ("edge of reach" if t == k else "")
                step_handles.setdefault(
                    t,
                    Line2D([], [], color=tc, label=f"t = {t}" + (f" ({what})" if what else "")),
                )
        prof = last_profile(series)
        if prof is not None:
            _, pm, ps = prof
            ts = np.arange(len(pm))
            ax_prof.plot(ts, pm, color=c, linestyle=style, marker="o", markersize=4)
            ax_prof.fill_between(ts, pm - ps, pm + ps, color=c, alpha=0.15, linewidth=0)
        if "reach/q_abs_max" in series:
            x, m = series["reach/q_abs_max"]
            any_max = True
            max_positive &= bool(np.all(m > 0))
            ax_max.plot(x, m, color=c, linestyle=style, linewidth=1.5)
        if "overestimation" in series:
            x, m = series["overestimation"]
            ax_over.plot(x, m, color=c, linestyle=style, marker="o", markersize=3.5)
        for key, ls in (
            ("q_start_mean", "-"),
            ("return_discounted_mean", "--"),
            ("q_data_mean", ":"),
        ):
            if key in series:
                x, m = series[key]
                ax_terms.plot(x, m, color=c, linestyle=ls, linewidth=1.4, marker=".")

    for ax, title in (
        (ax_mean, "Q ensemble mean on the probe, by rollout step t"),
        (ax_std, "Q ensemble std on the probe, by rollout step t"),
    ):
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("Q" if ax is ax_mean else "std across critics")
        if step_handles:
            ax.legend(handles=list(step_handles.values()), fontsize=8, loc="best")
    ax_prof.set_title("at the last log: Q mean ± ensemble std by rollout step", fontsize=10)
    ax_prof.set_xlabel("rollout step t (0: dataset states, k: last next-states)")
    ax_prof.set_ylabel("Q")
    ax_prof.legend(handles=group_handles, fontsize=8, loc="best")
    ax_max.set_title("largest |Q| on the probe (all critics, steps)", fontsize=10)
    lo, hi = ax_max.dataLim.intervaly
    if any_max and max_positive and hi > 10 * lo:
        ax_max.set_yscale("log")
    ax_over.set_title(
        "overestimation: Q(s₀, μ(s₀)) − discounted return, evaluation start states", fontsize=10
    )
    ax_over.axhline(0.0, color="0.5", linewidth=0.8)
    ax_terms.set_title("its terms, and Q at the probe's dataset states", fontsize=10)
    ax_terms.legend(
        handles=[
            Line2D([], [], color="0.2", linestyle="-", label="Q(s₀, μ(s₀)), evaluation starts"),
            Line2D([], [], color="0.2", linestyle="--", label="discounted return Σ γᵗ rₜ"),
            Line2D([], [], color="0.2", linestyle=":", label="Q(s, μ(s)), dataset states"),
        ],
        fontsize=8,
        loc="best",
    )
    for ax in (ax_mean, ax_std, ax_max, ax_over, ax_terms):
        ax.set_xlabel("gradient updates")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle("Edge-of-reach diagnostics (mean over seeds)", fontsize=13)
    return fig


def plot_reach(groups: Sequence[Group], out: str | os.PathLike[str]) -> Path:
    """Draw `draw_reach(groups)` into `out` (format from its suffix). Returns the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_reach(groups).savefig(path, dpi=DPI)
    return path


def reach_out(out: str | os.PathLike[str]) -> Path:
    """The reach figure's path beside the learning curves' `out`: NAME_reach.SUFFIX."""
    p = Path(out)
    return p.with_name(f"{p.stem}_reach{p.suffix}")
