"""`eor sweep` (eor.sweep) and the --threads / OMP_WAIT_POLICY settings it relies on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from eor.agent.config import TrainAgentConfig
from eor.cli import main
from eor.runtime import torch_threads
from eor.sweep import SpecError, load_spec

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- threads
def test_import_eor_sets_passive_openmp_before_torch() -> None:
    code = (
        "import os, sys; import eor; "
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["ACTIVE", "False"], out.stderr


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_agent_trainer_runs_with_config_threads() -> None:
    from eor.agent.trainer import Trainer

    seen: list[int] = []

    def fake(threads: int | None, deterministic: bool) -> int:
        config = TrainAgentConfig(threads=threads, deterministic=deterministic)
        obj = types.SimpleNamespace(
            config=config, _status="completed", _train=lambda: seen.append(torch.get_num_threads())
        )
        Trainer.train(obj)  # type: ignore[arg-type]
        return seen[-1]

    assert fake(2, False) == 2
    assert fake(2, True) == 1  # --deterministic: one thread wins
    assert torch.get_num_threads() == 1  # restored (the one_thread fixture's count)


def test_threads_is_validated() -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        TrainAgentConfig(threads=0, load_model_dir="m").validate()
    runner = CliRunner()
    result = runner.invoke(main, ["train-agent", "--threads", "0", "--load_model_dir", "m"])
    assert result.exit_code == 2 and "--threads" in result.output, result.output
    result = runner.invoke(main, ["train-model", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output, result.output


def test_train_model_threads_reach_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import eor.dynamics.run as run

    seen: list[int] = []
    monkeypatch.setattr(run, "train_to_dir", lambda *a, **k: seen.append(torch.get_num_threads()))
    data = _collect(tmp_path, "hopper-random-v2", 300)
    args = ["train-model", "--env_name", "hopper-random-v2", "--dataset", str(data),
            "--save_path", str(tmp_path / "m"), "--threads", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == [2] and torch.get_num_threads() == 1


def _collect(root: Path, name: str, steps: int) -> Path:
    from eor.data import collect

    return Path(collect(name, steps=steps, seed=0, out=root / f"{name}.hdf5", progress=False))


# ----------------------------------------------------------------------------- spec
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


GRID = """
[sweep]
datasets = ["halfcheetah-random-v2", "hopper-random-v2"]
seeds = [0, 1]
[resources]
cpus = 1
[train-model]
epochs = 2
[train-agent]
eta = [0.5, 1.0]
epochs = 1
"""


def test_example_spec_is_valid() -> None:
    spec = load_spec(Path(__file__).parent.parent / "examples" / "sweep.toml")
    assert len(spec.trials()) == 12


def test_grid_is_a_dag_of_shared_models(tmp_path: Path) -> None:
    trials = load_spec(_write(tmp_path, GRID)).trials()
    models = [t for t in trials if t.kind == "model"]
    agents = [t for t in trials if t.kind == "agent"]
    assert len(models) == 4 and len(agents) == 8  # 2 datasets x 2 seeds (x 2 eta for agents)
    assert {t.depends_on for t in agents} == {m.name for m in models}
    assert trials[:4] == models  # every model before every agent
    a = next(t for t in agents if t.name == "runs/hopper-random-v2/eta1.0-s1")
    assert a.depends_on == "models/hopper-random-v2/default-s1" and a.options["eta"] == 1.0
    argv = a.argv(Path("D"), 3)
    assert argv[argv.index("--threads") + 1] == "3"
    assert argv[argv.index("--load_model_dir") + 1] == "D/models/hopper-random-v2/default-s1"


def test_shared_model_seed(tmp_path: Path) -> None:
    text = GRID.replace("seeds = [0, 1]", "seeds = [0, 1]\nmodel_seeds = [7]")
    trials = load_spec(_write(tmp_path, text)).trials()
    models = [t for t in trials if t.kind == "model"]
    assert [m.seed for m in models] == [7, 7]
    assert {t.depends_on for t in trials if t.kind == "agent"} == {m.name for m in models}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("eta = [0.5, 1.0]", 'eta = "x"'), "Invalid value for '--eta': 'x' is not a valid float"),
        # click words it "No such option '--etaa'" (8.2) or "No such option: --etaa" (8.1).
        (("eta = [0.5, 1.0]", "etaa = 1"), ("No such option", "--etaa")),
        (("eta = [0.5, 1.0]", "num_critics = [2, 0]"), "num_critics must be a positive integer"),
        (("epochs = 2", "num_elites = 9"), "num_elites must be <= num_models"),
        (("eta = [0.5, 1.0]", "seed = 1"), "[train-agent] seed: set by the sweep"),
        (("eta = [0.5, 1.0]", "threads = 1"), "[train-agent] threads: set by the sweep"),
        (("cpus = 1", "cpus = 0"), "[resources] cpus must be a number >= 1"),
        (("seeds = [0, 1]", "seeds = []"), "seeds must be a non-empty list of integers"),
        (("[resources]", "[resource]"), "unknown table [resource]"),
        (('"hopper-random-v2"]', '"hopper-nope-v2"]'), "--env_name"),
        (("eta = [0.5, 1.0]", "eta = []"), "empty list"),
    ],
)
def test_bad_spec_names_the_problem(
    tmp_path: Path, change: tuple[str, str], message: str | tuple[str, ...]
) -> None:
    assert change[0] in GRID
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, GRID.replace(*change)))
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(info.value)


def test_dry_run_prints_trials_and_runs_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["sweep", str(_write(tmp_path, GRID)), "--sweep_dir", str(tmp_path / "s"), "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(x.startswith("[new] eor train-model") for x in lines) == 4
    assert sum(x.startswith("[new] eor train-agent") for x in lines) == 8
    assert "12 trials: 4 models, 8 agents" in lines[-1]
    assert not (tmp_path / "s").exists()
    bad = CliRunner().invoke(main, ["sweep", str(tmp_path / "none.toml"), "--dry-run"])
    assert bad.exit_code == 2 and "no such sweep file" in bad.output
    spec = str(_write(tmp_path, GRID))
    bad = CliRunner().invoke(main, ["sweep", spec, "--local", "--address", "auto"])
    assert bad.exit_code == 2 and "--address" in bad.output and "without Ray" in bad.output
    bad = CliRunner().invoke(main, ["sweep", spec, "--max_retries", "-1"])
    assert bad.exit_code == 2 and "--max_retries" in bad.output


# ----------------------------------------------------------------------------- local runs
TINY = """
[sweep]
datasets = ["halfcheetah-random-v2", "hopper-random-v2"]
seeds = [0, 1]
[train-model]
epochs = 2
min_epochs = 0
hidden_dim = 16
num_models = 3
num_elites = 2
device = "cpu"
quiet = true
[train-agent]
eta = [0.5, 1.0]
epochs = 1
updates_per_epoch = 5
hidden_dim = 32
num_critics = 2
batch_size = 32
rollouts_per_epoch = 50
steps_k = 2
eval_episodes = 1
eval_max_steps = 5
device = "cpu"
deterministic = true
quiet = true
"""


def test_local_sweep_runs_skips_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("EOR_DATA_DIR", str(store))
    from eor.data import collect

    collect("halfcheetah-random-v2", steps=600, seed=0, progress=False)
    collect("hopper-random-v2", steps=600, seed=0, progress=False)
    spec_path = _write(tmp_path, TINY)
    out = tmp_path / "s"
    result = CliRunner().invoke(
        main, ["sweep", str(spec_path), "--sweep_dir", str(out), "--local"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "12 done, 0 failed, 0 skipped" in result.output
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("summary.json"))
    assert len(runs) == 8 and "runs/hopper-random-v2/eta1.0-s1" in runs
    summary = json.loads((out / "runs/hopper-random-v2/eta1.0-s1/summary.json").read_text())
    assert summary["status"] == "completed"
    config = json.loads((out / "runs/hopper-random-v2/eta1.0-s1/config.json").read_text())
    assert config["eta"] == 1.0 and config["seed"] == 1 and config["threads"] == 1
    assert config["load_model_dir"].endswith("models/hopper-random-v2/default-s1")

    # `eor report SWEEP_DIR`: the agent runs only (not the models/), one row per dataset and
    # setting over both seeds (each seed has its own model and thread count is not a setting).
    report = CliRunner().invoke(main, ["report", str(out), "--format", "json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)["groups"]
    assert len(rows) == 4 and all(r["seeds"] == [0, 1] for r in rows), rows
    assert sorted((r["dataset"], r["config"]["eta"]) for r in rows) == [
        ("halfcheetah-random-v2", 0.5), ("halfcheetah-random-v2", 1.0),
        ("hopper-random-v2", 0.5), ("hopper-random-v2", 1.0),
    ]  # fmt: skip

    # A rerun starts nothing; a failed trial is rerun up to --max_retries.
    from eor.sweep import local

    spec = load_spec(spec_path)
    calls: list[str] = []
    assert set(local.run_local(spec, out, runner=lambda t, a: calls.append(t.name)).values()) == {
        "done"
    }
    assert calls == []
    victim = out / "runs/hopper-random-v2/eta1.0-s1"
    (victim / "summary.json").unlink()
    (victim / "checkpoints" / "latest.pt").unlink()

    def flaky(trial, argv):  # fails once, then runs the real command
        calls.append(trial.name)
        if len(calls) == 1:
            raise RuntimeError("boom")
        local._run_command(trial, argv)

    import shutil

    shutil.rmtree(victim)
    status = local.run_local(spec, out, max_retries=1, runner=flaky)
    assert calls == ["runs/hopper-random-v2/eta1.0-s1"] * 2
    assert status["runs/hopper-random-v2/eta1.0-s1"] == "done"
    calls.clear()
    shutil.rmtree(victim)
    status = local.run_local(
        spec, out, max_retries=0, runner=lambda t, a: calls.append("x") or 1 / 0
    )
    assert status["runs/hopper-random-v2/eta1.0-s1"] == "failed" and calls == ["x"]


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real local Ray (2 CPUs) whose workers find two generated datasets by name."""
    ray = pytest.importorskip("ray")
    from eor.data import collect

    store = tmp_path_factory.mktemp("store")
    old = os.environ.get("EOR_DATA_DIR")
    os.environ["EOR_DATA_DIR"] = str(store)
    collect("halfcheetah-random-v2", steps=600, seed=0, progress=False)
    collect("hopper-random-v2", steps=600, seed=0, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield store
    finally:
        ray.shutdown()
        if old is None:
            del os.environ["EOR_DATA_DIR"]
        else:
            os.environ["EOR_DATA_DIR"] = old


@pytest.mark.slow
def test_ray_sweep_runs_the_grid(ray_store: Path, tmp_path: Path) -> None:
    from eor.sweep.ray_runner import run_ray

    spec = load_spec(_write(tmp_path, TINY))
    log = io.StringIO()
    status = run_ray(spec, tmp_path / "s", out=log, poll_s=0.5)
    lines = log.getvalue().splitlines()
    assert "\x1b" not in log.getvalue()  # not a terminal: appended, no cursor moves
    assert set(status.values()) == {"done"} and len(status) == 12, lines
    assert lines[-1] == "12 done, 0 failed, 0 skipped"
    assert "pending 0  running 0  done 12  failed 0  skipped 0" in lines[-2]
    for trial in spec.trials():
        if trial.kind == "agent":
            summary = json.loads((tmp_path / "s" / trial.name / "summary.json").read_text())
            assert summary["status"] == "completed" and summary["total_updates"] == 5
    # Nothing left to do: a rerun finishes at once.
    assert set(run_ray(spec, tmp_path / "s", out=io.StringIO()).values()) == {"done"}


KILL = TINY.replace(
    'datasets = ["halfcheetah-random-v2", "hopper-random-v2"]\nseeds = [0, 1]',
    'datasets = ["hopper-random-v2"]\nseeds = [0]',
).replace(
    "eta = [0.5, 1.0]\nepochs = 1\nupdates_per_epoch = 5",
    "eta = 1.0\nepochs = 8\nupdates_per_epoch = 150",
)


@pytest.mark.slow
def test_killed_trial_is_resumed_bit_for_bit(ray_store: Path, tmp_path: Path) -> None:
    import signal
    import threading
    import time

    from eor.sweep.ray_runner import run_ray

    assert "epochs = 8" in KILL and "seeds = [0]\n" in KILL
    spec = load_spec(_write(tmp_path, KILL))
    out = tmp_path / "s"
    agent = next(t for t in spec.trials() if t.kind == "agent")
    run = out / agent.name
    killed: list[bool] = []

    def killer() -> None:  # SIGKILL the agent's worker once it has a checkpoint
        pid_file = out / ".pids" / f"{agent.name.replace('/', '__')}.pid"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if pid_file.exists() and (run / "checkpoints" / "latest.pt").exists():
                unfinished = not (run / "summary.json").exists()
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                killed.append(unfinished)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    log = io.StringIO()
    status = run_ray(spec, out, max_retries=2, out=log, poll_s=0.5)
    thread.join()
    assert killed == [True], "the trial finished before it could be killed"
    assert set(status.values()) == {"done"}, log.getvalue()

    # The same trial, uninterrupted, on the same model.
    ref = tmp_path / "ref"
    args = ["train-agent", *agent.argv(out, spec.threads)]
    args[args.index("--run_dir") + 1] = str(ref)
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    want = torch.load(ref / "checkpoints" / "latest.pt", weights_only=False)
    assert got["counters"]["total_updates"] == want["counters"]["total_updates"] == 1200
    for key, tensor in want["learner"]["actor"].items():
        assert torch.equal(got["learner"]["actor"][key], tensor), key
    assert _flat(got["learner"]) == _flat(want["learner"])


def _flat(state: object, prefix: str = "") -> dict[str, object]:
    """Every tensor of a nested state as bytes (for an exact comparison)."""
    out: dict[str, object] = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flat(v, f"{prefix}/{i}"))
    elif isinstance(state, torch.Tensor):
        out[prefix] = state.detach().cpu().numpy().tobytes()
    else:
        out[prefix] = state
    return out


def test_a_failed_sweep_says_how_to_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "empty-store"))  # no dataset: models fail
    spec_path = _write(tmp_path, TINY)
    out = tmp_path / "s"
    result = CliRunner().invoke(main, ["sweep", str(spec_path), "--sweep_dir", str(out), "--local"])
    assert result.exit_code == 1, result.output
    assert f"rerun to retry: eor sweep {spec_path} --sweep_dir {out}" in result.output
