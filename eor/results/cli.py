"""The `eor plot` and `eor report` commands."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from eor.logs import show_logs
from eor.results.report import FORMATS
from eor.results.runs import Group, RunDirError, find_run_dirs, group_runs, load_run

_RUN_DIRS = click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path)
)


def _load_groups(run_dirs: tuple[Path, ...]) -> tuple[list[Path], list[Group]]:
    """Run directories at or below the arguments, read and grouped; errors as BadParameter."""
    show_logs(logging.WARNING, "eor.results")
    try:
        dirs = find_run_dirs(run_dirs)
        runs = [load_run(d) for d in dirs]
    except RunDirError as exc:
        raise click.BadParameter(str(exc), param_hint="RUN_DIR") from None
    return dirs, group_runs(runs)


@click.command()
@_RUN_DIRS
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Image to write (.png, .pdf or .svg). Default: RUN_DIR/learning_curve.png for one "
    "run, ./learning_curves.png for several. The edge-of-reach diagnostics go beside it, "
    "as NAME_reach.SUFFIX.",
)
def plot(run_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Plot normalised score, Q-value statistics and critic loss against updates.

    Each RUN_DIR is a run directory written by `eor train-agent`, or a directory with run
    directories below it (e.g. `runs/`). Runs whose configs differ only in seed (and paths,
    device, wandb) are drawn as one line: the mean over seeds with a ± std band.

    A second figure, NAME_reach.SUFFIX beside the first, shows the edge-of-reach diagnostics
    (docs/algorithm.md §3.8): Q mean and ensemble std by rollout step, the largest |Q| on the
    probe and the overestimation over training (runs that logged them). Both paths are printed.
    """
    from eor.results.plot import check_out, default_out, plot_groups
    from eor.results.reach import has_reach_data, plot_reach, reach_out

    dirs, groups = _load_groups(run_dirs)
    try:
        path = check_out(out if out is not None else default_out(dirs))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    click.echo(str(plot_groups(groups, path)))
    if has_reach_data(groups):
        click.echo(str(plot_reach(groups, reach_out(path))))


@click.command()
@_RUN_DIRS
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="markdown",
    show_default=True,
    help="Table format.",
)
@click.option(
    "--paper",
    is_flag=True,
    help="Add the paper's RAVL score per dataset, from the packaged data file "
    "eor/results/paper_ravl.json (docs/algorithm.md §5): the means as eor's spec transcribes "
    "them, not yet checked against the paper's table, so shown as '≈78.7'; '—' where there is "
    "none.",
)
@click.option(
    "--paper_file",
    "--paper-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Like --paper, from this file of the same form (e.g. the table copied exactly from "
    "the paper, with 'checked': true).",
)
def report(run_dirs: tuple[Path, ...], fmt: str, paper: bool, paper_file: Path | None) -> None:
    """Tabulate runs grouped by dataset and config.

    Each RUN_DIR is a run directory written by `eor train-agent`, or a directory with run
    directories below it. Per group: the last and the best D4RL normalised score as mean ±
    std over seeds, the number of seeds, the mean number of updates and the mean wall time.
    The last score is a run's last evaluation; the best is its best evaluation (summary.json's
    values when it is there and current). Runs without one (still running, killed, or resumed
    and going on) are reported from their metrics.jsonl.

    The std is the population std over seeds (ddof=0): sqrt(mean((x - mean)^2)), 0 for a
    single seed. A score shown with (n=K) is over the K seeds evaluated so far.
    """
    from eor.results.report import PaperDataError, load_paper, render, summarise

    try:
        paper_doc = load_paper(paper_file) if (paper or paper_file) else None
    except PaperDataError as exc:
        raise click.UsageError(f"{'--paper_file' if paper_file else '--paper'}: {exc}") from None
    _, groups = _load_groups(run_dirs)
    click.echo(render(summarise(groups), fmt, paper_doc), nl=False)
