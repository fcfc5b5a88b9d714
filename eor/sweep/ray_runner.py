"""Run a sweep on Ray: each trial a Ray task with the spec's resources, on this machine (no
address: a local Ray) or a cluster (`address`: "auto" or "ray://HOST:10001").

A trial's task runs the command's own click entry in the worker process
(`eor.sweep.local.run_trial`), so the options, checks and run directories are those of
`eor train-model` / `eor train-agent`. An agent task takes its model task's result as an
argument: Ray starts it when the model is done, and it skips itself if the model failed.
A task whose worker dies (killed, out of memory) is retried by Ray up to `max_retries` times,
and one that raises is retried too; each attempt resumes the trial from its checkpoint.
The workers get OMP_WAIT_POLICY=PASSIVE in their environment (eor.runtime.passive_openmp).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, TextIO

from eor.sweep.live import LiveTable
from eor.sweep.local import progress_of, run_trial, trial_state
from eor.sweep.spec import SweepSpec, Trial


def _task(trial: Trial, spec: SweepSpec, sweep_dir: str, model_status: str | None) -> str:
    """The body of one trial's Ray task: "done", or "skipped" when its model failed."""
    if model_status is not None and model_status != "done":
        return "skipped"
    pids = Path(sweep_dir) / ".pids"  # which worker runs which trial (to find or kill it)
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"{trial.name.replace('/', '__')}.pid").write_text(str(os.getpid()))
    run_trial(trial, spec, Path(sweep_dir))
    state = trial_state(trial, Path(sweep_dir))
    if state != "done":
        raise RuntimeError(f"{trial.name} ended {state}, not done")
    return "done"


def run_ray(
    spec: SweepSpec,
    sweep_dir: Path,
    *,
    address: str | None = None,
    max_retries: int = 0,
    out: TextIO | None = None,
    poll_s: float = 5.0,
) -> dict[str, str]:
    """Run every trial as a Ray task; returns trial name -> "done" / "failed" / "skipped".
    Uses the Ray session already started in this process if there is one. Progress goes to
    `out` (default stdout) as a LiveTable: redrawn in place on a terminal."""
    import ray

    sweep_dir = Path(sweep_dir).resolve()
    if not ray.is_initialized():
        ray.init(
            address=address,
            runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
            log_to_driver=False,
        )
    res = spec.resources
    options: dict[str, Any] = {
        "num_cpus": res["cpus"],
        "num_gpus": res["gpus"],
        "max_retries": max_retries,
        "retry_exceptions": True,
    }
    if res["memory_gb"] > 0:
        options["memory"] = int(res["memory_gb"] * 2**30)
    remote = ray.remote(_task).options(**options)
    refs: dict[str, Any] = {}
    trials = {t.name: t for t in spec.trials()}
    for trial in trials.values():
        if trial_state(trial, sweep_dir) == "done":
            refs[trial.name] = "done"
            continue
        dep = refs.get(trial.depends_on) if trial.depends_on else None
        refs[trial.name] = remote.remote(trial, spec, str(sweep_dir), dep)
    status: dict[str, str] = {n: "done" for n, r in refs.items() if isinstance(r, str)}
    pending = {r: n for n, r in refs.items() if not isinstance(r, str)}
    live = LiveTable(out)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        for ref in ready:
            name = pending.pop(ref)
            try:
                status[name] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a failed trial, reported, not raised
                status[name] = "failed"
                reason = str(exc).splitlines()[-1][:200]
                live.note(f"failed  {name}: {type(exc).__name__}: {reason}")
        live.show(progress_table(trials, status, sweep_dir))
    counts = {s: sum(v == s for v in status.values()) for s in ("done", "failed", "skipped")}
    live.end(", ".join(f"{n} {s}" for s, n in counts.items()))
    return status


def progress_table(trials: dict[str, Trial], status: dict[str, str], sweep_dir: Path) -> str:
    """One line per state count, then one per started, unfinished trial with its epoch and
    latest score (from its metrics.jsonl)."""
    states: dict[str, str] = {}
    for name in trials:
        if name in status:
            states[name] = status[name]
        elif (sweep_dir / name).exists():
            states[name] = "running"
        else:
            states[name] = "pending"
    counts = "  ".join(
        f"{s} {sum(v == s for v in states.values())}"
        for s in ("pending", "running", "done", "failed", "skipped")
    )
    lines = [f"[{time.strftime('%H:%M:%S')}] {counts}"]
    for name, state in states.items():
        if state == "running":
            epoch, score = progress_of(trials[name], sweep_dir)
            where = f"epoch {epoch}" if epoch is not None else "started"
            lines.append(f"  running {name}: {where}, score {score if score is not None else '-'}")
    return "\n".join(lines)


__all__ = ["progress_table", "run_ray"]
