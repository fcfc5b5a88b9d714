"""`eor sweep SPEC.toml`: the paper's grid of runs (eor.sweep)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--sweep_dir",
    "--sweep-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of the trials' run directories [default: sweeps/<SPEC name>].",
)
@click.option("--dry-run", "--dry_run", "dry_run", is_flag=True, help="Print the trials; run none.")
@click.option(
    "--max_retries",
    "--max-retries",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Rerun a failed trial up to N more times.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to run on: auto (the cluster this machine belongs to) or "
    "ray://HOST:10001 [default: start a local Ray].",
)
@click.option(
    "--local",
    "local",
    is_flag=True,
    help="No Ray: run the trials one after another in this process.",
)
def sweep(
    spec_path: Path,
    sweep_dir: Path | None,
    dry_run: bool,
    max_retries: int,
    address: str | None,
    local: bool,
) -> None:
    """Run a grid of train-model and train-agent trials described in SPEC.toml.

    \b
    Example (examples/sweep.toml explains the file):
      eor sweep examples/sweep.toml --dry-run
      eor sweep examples/sweep.toml --sweep_dir sweeps/paper
      eor sweep examples/sweep.toml --sweep_dir /shared/sweeps/paper --address auto
    Every option is checked by its command's own parser and validation before anything runs.
    One dynamics model per (dataset, model seed, model setting) is trained first and shared
    by the agent trials that need it. Each trial is a Ray task with the spec's [resources]
    (a local Ray, or the cluster at --address); --local runs them one after another in this
    process instead. Rerunning skips finished trials and resumes interrupted ones; a failed
    or killed trial is rerun (resumed) up to --max_retries times. While the trials run, a
    table of them (pending, running, done, failed; each running trial's epoch and latest
    score) is redrawn in place on a terminal, and written again on change in a log.
    """
    from eor.sweep.local import run_local, trial_state
    from eor.sweep.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="SPEC.toml") from None
    if sweep_dir is None:
        sweep_dir = Path("sweeps") / spec_path.stem
    trials = spec.trials()
    if dry_run:
        for trial in trials:
            state = trial_state(trial, sweep_dir)
            command = "train-model" if trial.kind == "model" else "train-agent"
            argv = " ".join(trial.argv(sweep_dir, spec.threads))
            click.echo(f"[{state}] eor {command} {argv}")
        n_models = sum(t.kind == "model" for t in trials)
        click.echo(
            f"{len(trials)} trials: {n_models} models, {len(trials) - n_models} agents; "
            f"resources per trial: {spec.resources}"
        )
        return
    if local:
        if address is not None:
            raise click.BadParameter(
                "--local runs without Ray; drop --address", param_hint="--address"
            )
        status = run_local(spec, sweep_dir, max_retries=max_retries)
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "Ray is not installed: pip install 'eor[ray]', or run with --local"
            ) from None
        from eor.sweep.ray_runner import run_ray

        status = run_ray(spec, sweep_dir, address=address, max_retries=max_retries)
    if any(s != "done" for s in status.values()):
        click.echo(f"rerun to retry: eor sweep {spec.path} --sweep_dir {sweep_dir}", err=True)
        raise SystemExit(1)
