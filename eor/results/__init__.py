"""Looking at results: read `eor train-agent` run directories, plot them, tabulate them.

runs = load_runs(["runs/"])          # run directories at or below the paths
groups = group_runs(runs)            # seeds of one config together
plot_groups(groups, "curves.png")    # `eor plot`
print(render(summarise(groups), "markdown"))   # `eor report`
"""

from __future__ import annotations

from eor.results.plot import plot_groups
from eor.results.report import GroupStats, render, summarise
from eor.results.runs import Group, Run, RunDirError, group_runs, load_run, load_runs

__all__ = [
    "Group",
    "GroupStats",
    "Run",
    "RunDirError",
    "group_runs",
    "load_run",
    "load_runs",
    "plot_groups",
    "render",
    "summarise",
]
