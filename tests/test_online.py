"""`eor train-online`: online SAC end to end through the CLI on tiny runs (small networks, a few
hundred env steps): the run directory, exact resume after an interruption, terminated vs
truncated in the stored done flags, random actions before start_steps, and bad input."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.agent.checkpoint import load_checkpoint
from eor.agent.networks import Actor
from eor.agent.ravl import RAVL, NonFiniteLossError, actor_from_state
from eor.cli import main
from eor.envs import get_env
from eor.online import read_policies, read_replay
from eor.results.runs import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "--env_name": "hopper",
    "--total_steps": "400",
    "--start_steps": "100",
    "--update_after": "64",
    "--batch_size": "32",
    "--hidden_dim": "16",
    "--buffer_size": "1000",
    "--eval_every": "100",
    "--eval_episodes": "2",
    "--eval_max_steps": "20",
    "--checkpoint_every": "150",
    "--log_every": "50",
    "--max_episode_steps": "20",
    "--device": "cpu",
    "--seed": "3",
}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["train-online", *args], catch_exceptions=False)


def flat(options: dict[str, str]) -> list[str]:
    return [x for kv in options.items() for x in kv]


def run(run_dir: Path, **changes: str) -> Any:
    options = {**TINY, **{f"--{k}": v for k, v in changes.items()}, "--run_dir": str(run_dir)}
    return invoke(*flat(options))


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without their timings (the only fields a resumed run may change)."""
    drop = {"time", "eval_time", "steps_per_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


# ----------------------------------------------------------------------------- a whole run
def test_help_lists_the_options() -> None:
    out = invoke("--help").output
    for name in ("--total_steps", "--start_steps", "--update_after", "--resume", "--num_critics"):
        assert name in out
    assert "train-online" in CliRunner().invoke(main, ["--help"]).output


def test_run_writes_the_run_directory(tmp_path: Path) -> None:
    d = tmp_path / "run"
    result = run(d)
    assert result.exit_code == 0, result.output
    assert "completed: 400 env steps, 337 updates" in result.output

    config = json.loads((d / "config.json").read_text())
    assert (config["env_name"], config["num_critics"], config["eta"]) == ("hopper", 2, 0.0)
    assert config["env_id"] == "Hopper-v4" and config["obs_dim"] == 11

    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (summary["env_steps"], summary["total_updates"]) == (400, 400 - 64 + 1)

    records = metrics(d)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["env_steps"] for r in evals] == [100, 200, 300, 400]
    assert [r["updates"] for r in evals] == [37, 137, 237, 337]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["updates"] for r in train] == [50, 100, 150, 200, 250, 300]
    assert {"critic_loss", "q_policy_mean", "alpha", "steps_per_s"} <= set(train[0])
    episodes = [r for r in records if r["kind"] == "episode"]
    assert sum(r["length"] for r in episodes) <= 400 and len(episodes) == summary["episodes"]

    # eor plot / eor report read it like a train-agent run.
    loaded = load_run(d)
    assert loaded.finished and loaded.total_updates == 337 and len(loaded.evals) == 4
    plot = CliRunner().invoke(main, ["plot", str(d), "--out", str(tmp_path / "p.png")])
    assert plot.exit_code == 0, plot.output
    assert (tmp_path / "p.png").stat().st_size > 0

    # Policy snapshots: listed with their returns, each file loadable as an actor.
    policies = read_policies(d)
    assert [p["env_steps"] for p in policies] == [100, 200, 300, 400]
    for p, e in zip(policies, evals, strict=True):
        assert p["return_mean"] == e["return_mean"] and p["path"] == e["policy"]
        snap = torch.load(d / p["path"], weights_only=False)
        assert isinstance(actor_from_state(snap), Actor)
        assert snap["eval"]["env_steps"] == p["env_steps"]
    last = torch.load(d / policies[-1]["path"], weights_only=False)
    final = load_checkpoint(d)["learner"]["actor"]
    for k, v in final.items():
        torch.testing.assert_close(last["actor"][k], v, rtol=0, atol=0)

    # The replay buffer, in collection order, up to a snapshot's env step.
    full = read_replay(d)
    np.testing.assert_array_equal(full["env_step"], np.arange(400))
    upto = read_replay(d, before_step=policies[1]["env_steps"])
    np.testing.assert_array_equal(upto["env_step"], np.arange(200))
    np.testing.assert_array_equal(upto["observations"], full["observations"][:200])
    # Consecutive transitions chain: next_obs is the next obs unless the episode ended there.
    ended = full["terminals"] | full["timeouts"]
    np.testing.assert_array_equal(
        full["next_observations"][:-1][~ended[:-1]], full["observations"][1:][~ended[:-1]]
    )


def test_terminated_and_truncated_in_the_done_flags(tmp_path: Path) -> None:
    """Hopper under random actions falls (terminated) or reaches the 15-step time limit
    (truncated): done is the terminal flag only, and matches the env's termination rule."""
    d = tmp_path / "run"
    changes = {"total_steps": "300", "start_steps": "300", "update_after": "300"}
    result = run(d, max_episode_steps="15", **changes)
    assert result.exit_code == 0, result.output
    r = read_replay(d)
    terminals, timeouts = r["terminals"], r["timeouts"]
    assert terminals.any() and timeouts.any()  # both kinds of episode end happen
    # done == the env's terminated: Hopper's healthy rule on next_obs (docs/algorithm.md §3).
    rule = get_env("hopper").termination_fn(torch.from_numpy(r["next_observations"])).numpy()
    np.testing.assert_array_equal(terminals, rule)
    # Truncated transitions end 15-step episodes and are not terminal.
    _, lengths = np.unique(r["episode"], return_counts=True)
    assert np.all(lengths[:-1] <= 15)
    assert not (terminals & timeouts).any()
    ends = np.flatnonzero(timeouts)
    np.testing.assert_array_equal(r["env_step"][ends] - r["env_step"][ends - 14], 14)
    assert (r["episode"][ends] == r["episode"][ends - 14]).all()
    # The episode records agree with the stored flags.
    eps = [x for x in metrics(d) if x["kind"] == "episode"]
    assert sum(not e["terminated"] for e in eps) == int(timeouts.sum())
    assert sum(e["terminated"] for e in eps) == int(terminals.sum())


def test_random_actions_before_start_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps before start_steps never ask the policy; every later step stores its sample."""
    sampled: list[np.ndarray] = []
    real_act = Actor.act

    def act(self: Actor, obs: torch.Tensor, deterministic: bool = True, **kw: Any) -> Any:
        out = real_act(self, obs, deterministic, **kw)
        if not deterministic:  # evaluation is deterministic; exploration samples
            sampled.append(out.numpy().copy())
        return out

    monkeypatch.setattr(Actor, "act", act)
    d = tmp_path / "run"
    result = run(d, total_steps="250", start_steps="170")
    assert result.exit_code == 0, result.output
    assert len(sampled) == 250 - 170
    r = read_replay(d)
    np.testing.assert_array_equal(r["actions"][170:], np.stack(sampled))
    uniform = r["actions"][:170]
    assert uniform.min() >= -1 and uniform.max() <= 1
    assert abs(uniform.std() - 1 / np.sqrt(3)) < 0.08  # U[-1, 1], not the policy's tanh(mu)


# ----------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("straight") / "run"
    try:
        assert run(d).exit_code == 0
    finally:
        torch.set_num_threads(before)
    return d


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    for part in ("actor", "critic", "target_critic"):
        for k, v in sa["learner"][part].items():
            torch.testing.assert_close(sb["learner"][part][k], v, rtol=0, atol=0)
    for k in ("actor_optim", "critic_optim", "alpha_optim"):
        for idx, st in sa["learner"][k]["state"].items():
            for name, v in st.items():
                torch.testing.assert_close(sb["learner"][k]["state"][idx][name], v, rtol=0, atol=0)
    assert torch.equal(sa["learner"]["log_alpha"], sb["learner"]["log_alpha"])
    ra, rb = read_replay(a), read_replay(b)
    for k, v in ra.items():
        np.testing.assert_array_equal(rb[k], v, err_msg=k)
    np.testing.assert_array_equal(sa["env"]["mujoco"], sb["env"]["mujoco"])
    assert sa["counters"]["env_steps"] == sb["counters"]["env_steps"] == 400
    assert comparable(metrics(a)) == comparable(metrics(b))
    pa = [{k: v for k, v in p.items()} for p in read_policies(a)]
    assert pa == read_policies(b)


def test_resume_after_keyboard_interrupt_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, straight_run: Path
) -> None:
    """A KeyboardInterrupt mid-update (step 330) stops without saving; --resume continues
    from the last periodic checkpoint (step 300) and ends where an uninterrupted run ends."""
    real_update = RAVL.update

    def update(self: RAVL, batch: Any, **kw: Any) -> Any:
        if self.num_updates == 330 - 64:
            raise KeyboardInterrupt
        return real_update(self, batch, **kw)

    monkeypatch.setattr(RAVL, "update", update)
    d = tmp_path / "run"
    result = run(d)
    assert result.exit_code == 130
    assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(d)["counters"]["env_steps"] == 300
    monkeypatch.setattr(RAVL, "update", real_update)

    resumed = invoke("--resume", str(d))
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output and "completed: 400 env steps" in resumed.output
    assert_same_run(straight_run, d)


@pytest.mark.parametrize("step", [83, 222], ids=["random-phase", "policy-phase"])
def test_ctrl_c_checkpoints_the_exact_step_and_resume_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, straight_run: Path, step: int
) -> None:
    """A real SIGINT during the update of env step `step`: the run saves after that step and
    exits 130; --resume continues from there (mid-episode, between two periodic checkpoints,
    before or after start_steps) and ends where an uninterrupted run ends."""
    real_update = RAVL.update

    def update(self: RAVL, batch: Any, **kw: Any) -> Any:
        out = real_update(self, batch, **kw)
        if self.num_updates == step - 64 + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(RAVL, "update", update)
    d = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    result = run(d)
    assert result.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before
    ckpt = load_checkpoint(d)
    assert ckpt["counters"]["env_steps"] == step
    assert ckpt["learner"]["num_updates"] == step - 64 + 1
    assert ckpt["env"]["elapsed_steps"] > 0  # mid-episode
    monkeypatch.setattr(RAVL, "update", real_update)

    resumed = invoke("--resume", str(d))
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(straight_run, d)


def test_resume_may_extend_total_steps(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert run(d, total_steps="200").exit_code == 0
    result = invoke("--resume", str(d), "--total_steps", "300", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((d / "summary.json").read_text())
    assert (summary["env_steps"], summary["total_updates"]) == (300, 300 - 64 + 1)
    evals = [r["env_steps"] for r in metrics(d) if r["kind"] == "eval"]
    assert evals == [100, 200, 300]


def test_nan_loss_exits_1_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_update = RAVL.update

    def update(self: RAVL, batch: Any, **kw: Any) -> Any:
        if self.num_updates == 200 - 64:
            raise NonFiniteLossError("non-finite RAVL loss at update 137 (critic_loss=nan)")
        return real_update(self, batch, **kw)

    monkeypatch.setattr(RAVL, "update", update)
    d = tmp_path / "run"
    result = CliRunner().invoke(main, ["train-online", *flat(TINY), "--run_dir", str(d)])
    assert result.exit_code == 1
    assert "training stopped at env step 200" in result.output
    assert "The last checkpoint (env step 150) is kept" in " ".join(result.output.split())
    assert json.loads((d / "summary.json").read_text())["status"] == "failed_nonfinite"
    assert load_checkpoint(d)["counters"]["env_steps"] == 150


# ----------------------------------------------------------------------------- the buffer
def test_read_replay_refuses_a_range_a_wrapped_buffer_lost(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert run(d, total_steps="200", buffer_size="120").exit_code == 0
    kept = read_replay(d)
    np.testing.assert_array_equal(kept["env_step"], np.arange(80, 200))
    with pytest.raises(ValueError, match="wrapped.*80 oldest"):
        read_replay(d, before_step=100)
    ckpt_file = tmp_path / "foreign.pt"
    torch.save({"format": 1}, ckpt_file)
    with pytest.raises(ValueError, match="not an `eor train-online` checkpoint"):
        read_replay(ckpt_file)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("changes", "option", "message"),
    [
        ({"env_name": "cheetah"}, "--env_name", "unknown env or dataset name 'cheetah'"),
        ({"batch_size": "0"}, "--batch_size", "must be a positive integer"),
        ({"update_after": "10"}, "--update_after", "must be >= batch_size (32)"),
        ({"buffer_size": "16"}, "--buffer_size", "must be >= batch_size (32)"),
        ({"start_steps": "-1"}, "--start_steps", "must be a non-negative integer"),
        ({"tau": "2"}, "--tau", "must be in (0, 1]"),
        ({"device": "cuda:7"}, "--device", "CUDA is not available"),
    ],
)
def test_bad_settings_are_usage_errors(
    tmp_path: Path, changes: dict[str, str], option: str, message: str
) -> None:
    if "device" in changes and torch.cuda.is_available():
        pytest.skip("CUDA is visible: cuda:7 may exist")
    options = {**TINY, **{f"--{k}": v for k, v in changes.items()}}
    result = CliRunner().invoke(
        main, ["train-online", *flat(options), "--run_dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert option in result.output and message in " ".join(result.output.split())
    assert not (tmp_path / "r").exists()  # nothing written before the settings are checked


def test_resume_errors(tmp_path: Path) -> None:
    def err(*args: str) -> str:
        result = CliRunner().invoke(main, ["train-online", *args])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert "is not a directory" in err("--resume", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "has no checkpoint" in err("--resume", str(tmp_path / "empty"))
    foreign = tmp_path / "agent" / "checkpoints"
    foreign.mkdir(parents=True)
    torch.save({"format": 1, "counters": {}}, foreign / "latest.pt")
    assert "not an `eor train-online` checkpoint" in err("--resume", str(tmp_path / "agent"))

    d = tmp_path / "run"
    assert run(d, total_steps="100").exit_code == 0
    assert "already holds a run" in " ".join(run(d).output.split())
    out = err("--resume", str(d), "--batch_size", "64")
    assert "batch_size cannot change when resuming" in out
    assert "already made 100 env steps" in err("--resume", str(d), "--total_steps", "50")
