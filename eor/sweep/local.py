"""Run a sweep's trials in this process, one after another, models before their agents.

Each trial runs the command's own click entry in-process (`train_model.main(argv)`,
`train_agent.main(argv)`): the same code and checks as on the command line. A finished trial
is skipped (a model directory whose meta.json says complete; a run whose summary.json says
completed), an interrupted one is resumed from its checkpoint, and a failed one is retried up to
`max_retries` times; the agents of a model that failed are not started.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from eor.sweep.spec import SweepSpec, Trial


def trial_state(trial: Trial, sweep_dir: Path) -> str:
    """ "done", "interrupted" (a checkpoint to resume from) or "new"."""
    run = sweep_dir / trial.name
    if trial.kind == "model":
        meta = run / "meta.json"
        if not meta.exists():
            return "new"
        return "done" if json.loads(meta.read_text()).get("complete") else "interrupted"
    summary = run / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") == "completed":
        return "done"
    return "interrupted" if (run / "checkpoints" / "latest.pt").exists() else "new"


def trial_argv(trial: Trial, spec: SweepSpec, sweep_dir: Path, state: str) -> list[str]:
    """The argv that starts (`state` "new") or resumes ("interrupted") the trial."""
    if trial.kind == "model":
        argv = trial.argv(sweep_dir, spec.threads)
        return [*argv, "--resume"] if state == "interrupted" else argv
    if state == "interrupted":
        return ["--resume", str(sweep_dir / trial.name), "--threads", str(spec.threads)]
    return trial.argv(sweep_dir, spec.threads)


def progress_of(trial: Trial, sweep_dir: Path) -> tuple[int | None, float | None]:
    """The latest (epoch, score) of a started trial: an agent's last eval record, a model's
    checkpointed epoch (no score)."""
    run = sweep_dir / trial.name
    if trial.kind == "model":
        meta = run / "meta.json"
        try:
            return json.loads(meta.read_text()).get("epoch"), None
        except (OSError, ValueError):
            return None, None
    epoch: int | None = None
    score: float | None = None
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a line being written
            continue
        epoch = rec.get("epoch", epoch)
        if rec.get("kind") == "eval":
            score = rec.get("score_mean")
    return epoch, None if score is None else round(float(score), 2)


def run_trial(trial: Trial, spec: SweepSpec, sweep_dir: Path) -> None:
    """Start, resume or skip one trial (by its state), in this process."""
    state = trial_state(trial, sweep_dir)
    if state == "done":
        return
    try:
        _run_command(trial, trial_argv(trial, spec, sweep_dir, state))
    except SystemExit as exc:  # e.g. 130: interrupted, with a checkpoint
        if exc.code not in (0, None):
            raise RuntimeError(f"{trial.name} exited with status {exc.code}") from None


def _run_command(trial: Trial, argv: list[str]) -> None:
    if trial.kind == "model":
        from eor.dynamics.cli import train_model as command
    else:
        from eor.agent.cli import train_agent as command
    command.main(argv, prog_name=f"eor {command.name}", standalone_mode=False)


def run_local(
    spec: SweepSpec,
    sweep_dir: Path,
    *,
    max_retries: int = 0,
    echo: Callable[[str], Any] = click.echo,
    runner: Callable[[Trial, list[str]], None] = _run_command,
) -> dict[str, str]:
    """Run every unfinished trial; returns trial name -> "done" / "failed" / "skipped"."""
    status: dict[str, str] = {}
    for trial in spec.trials():
        if trial.depends_on is not None and status.get(trial.depends_on) != "done":
            status[trial.name] = "skipped"
            echo(f"skipped {trial.name}: its model {trial.depends_on} did not finish")
            continue
        for attempt in range(max_retries + 1):
            state = trial_state(trial, sweep_dir)
            if state == "done":
                status[trial.name] = "done"
                if attempt == 0:
                    echo(f"done    {trial.name} (finished before)")
                break
            argv = trial_argv(trial, spec, sweep_dir, state)
            echo(f"{'resume' if state == 'interrupted' else 'start'}   {trial.name}")
            try:
                runner(trial, argv)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed trial, not a crash
                code = getattr(exc, "code", None)
                if isinstance(exc, SystemExit) and code in (0, None):
                    pass
                else:
                    echo(f"failed  {trial.name} (attempt {attempt + 1}): {exc!r}")
                    status[trial.name] = "failed"
                    continue
            status[trial.name] = "done" if trial_state(trial, sweep_dir) == "done" else "failed"
            if status[trial.name] == "done":
                break
        else:
            status.setdefault(trial.name, "failed")
    counts = {s: sum(v == s for v in status.values()) for s in ("done", "failed", "skipped")}
    echo(
        ", ".join(f"{n} {s}" for s, n in counts.items()),
    )
    return status
