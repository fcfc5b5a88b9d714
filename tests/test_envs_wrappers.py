"""Ant is evaluated on what its data showed it: zeroed contact forces iff the data had none.

D4RL's ant data (mujoco-py 2) holds zeros in observation columns 27:111, gymnasium's Ant-v4
reports real contact forces there. The datasets here are made by eor's collector from the real
simulator (real forces), and a copy with those columns zeroed is written by the test in D4RL's
file layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import eor.dynamics
from eor.agent.config import TrainAgentConfig
from eor.agent.evaluate import decide_zero_contact_forces, make_eval_envs
from eor.agent.setup import build_components
from eor.agent.trainer import Trainer
from eor.data import collect, contact_forces_missing, load_dataset, read_raw
from eor.dynamics import DynamicsEnsemble
from eor.envs import get_env, make_env

pytestmark = pytest.mark.usefixtures("one_thread")

ANT = get_env("ant")
START, STOP = 27, 111
LOG_TEXT = "the evaluation envs zero them too (zero_contact_forces=true"


@pytest.fixture(scope="module")
def ant_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """real: 400 steps collected by eor for ant; zeroed: the same with columns 27:111 zeroed,
    in D4RL's layout and file name; partial: zeroed in the first half of the rows only."""
    folder = tmp_path_factory.mktemp("ant")
    real = collect("ant-random-v2", steps=400, seed=0, out=folder / "collected.hdf5")
    raw, _ = read_raw(real)
    files = {"real": real}
    for name, rows in (("zeroed", slice(None)), ("partial", slice(None, 200))):
        path = folder / name / "ant_random-v2.hdf5"
        path.parent.mkdir()
        with h5py.File(path, "w") as f:
            for key, arr in raw.items():
                arr = arr.copy()
                if key in ("observations", "next_observations"):
                    arr[rows, START:STOP] = 0.0
                f.create_dataset(key, data=arr)
        files[name] = path
    return files


def _steps(env: Any, n: int, seed: int) -> list[np.ndarray]:
    """Observations of n steps under a fixed random action sequence, from reset(seed)."""
    rng = np.random.default_rng(seed)
    obs = [env.reset(seed=seed)[0]]
    for _ in range(n):
        obs.append(env.step(rng.uniform(-1, 1, 8))[0])
    return obs


def _decision_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "zero_contact_forces" in r.getMessage()]


# ----------------------------------------------------------------------------- detection
def test_collected_data_keeps_real_forces(
    ant_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ds = load_dataset(ant_files["real"])
    block = ds.observations[:, START:STOP]
    assert np.count_nonzero(block) > 0
    assert (block == 0).all(axis=1).any(), "real data also has rows without any contact"
    assert ds.contact_forces_missing is False
    with caplog.at_level(logging.INFO, logger="eor"):
        assert decide_zero_contact_forces(ANT, detected=False, dataset=ds.name) is False
    assert _decision_logs(caplog) == []
    # The evaluation env of such a run reports the simulator's forces.
    env = make_eval_envs(ANT, 1, zero_contact_forces=False)[0]
    obs = np.stack(_steps(env, 40, seed=1))
    assert np.count_nonzero(obs[:, START:STOP]) > 0


def test_all_zero_columns_are_detected_and_logged(
    ant_files: dict[str, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_path = load_dataset(ant_files["zeroed"])
    # The same file found by name in D4RL's cache.
    monkeypatch.setenv("D4RL_DATASET_DIR", str(ant_files["zeroed"].parent))
    by_name = load_dataset("ant-random-v2")
    for ds in (by_path, by_name):
        assert ds.contact_forces_missing is True
    with caplog.at_level(logging.INFO, logger="eor"):
        assert decide_zero_contact_forces(ANT, detected=True, dataset=by_name.name) is True
    [line] = _decision_logs(caplog)
    assert line == (
        "ant: dataset ant-random-v2 has all-zero contact forces (observation columns 27:111, "
        "recorded without them); the evaluation envs zero them too (zero_contact_forces=true)"
    )


def test_zeros_in_some_rows_only_are_not_missing_forces(ant_files: dict[str, Path]) -> None:
    partial = load_dataset(ant_files["partial"])
    assert (partial.observations[:200, START:STOP] == 0).all()
    assert np.count_nonzero(partial.observations[200:, START:STOP]) > 0
    assert partial.contact_forces_missing is False
    # Zero observations but real next_observations: the recorder did report forces.
    ds = load_dataset(ant_files["zeroed"])
    real = load_dataset(ant_files["real"])
    assert contact_forces_missing(ds.observations, real.next_observations, ANT) is False
    assert contact_forces_missing(real.observations, ds.next_observations, ANT) is False
    assert contact_forces_missing(ds.observations, None, ANT) is True
    with pytest.raises(ValueError, match=r"observations must have shape \[N, >= 111\]"):
        contact_forces_missing(ds.observations[:, :50], None, ANT)


def test_other_envs_never_zero_and_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    hopper = get_env("hopper")
    zeros = np.zeros((5, hopper.obs_dim), np.float32)
    assert contact_forces_missing(zeros, zeros, hopper) is False
    with caplog.at_level(logging.DEBUG, logger="eor"):
        assert decide_zero_contact_forces(hopper, detected=True, recorded=True) is False
    assert caplog.records == []


# ----------------------------------------------------------------------------- the eval env
def test_zeroed_eval_env_matches_the_simulator_elsewhere() -> None:
    env = make_eval_envs(ANT, 1, zero_contact_forces=True)[0]
    plain = make_env(ANT)
    assert env.observation_space.shape == (111,) and env.spec.max_episode_steps == 1000
    zeroed, real = _steps(env, 40, seed=2), _steps(plain, 40, seed=2)
    forces_seen = 0
    for z, r in zip(zeroed, real, strict=True):
        assert z.shape == (111,)
        assert (z[START:STOP] == 0.0).all()
        np.testing.assert_array_equal(z[:START], r[:START])  # same simulation, bit for bit
        forces_seen += np.count_nonzero(r[START:STOP])
    assert forces_seen > 0, "the plain env should have reported some contact forces"
    # The rest of the observation is what the unwrapped env itself reports, now.
    inner = env.unwrapped._get_obs()
    np.testing.assert_array_equal(zeroed[-1][:START], inner[:START])
    np.testing.assert_array_equal(inner[START:STOP], env.unwrapped.contact_forces.flat)


# ----------------------------------------------------------------------------- a whole run
def _tiny_ant_model(*_: Any, **__: Any) -> DynamicsEnsemble:
    model = DynamicsEnsemble(
        ANT.obs_dim,
        ANT.act_dim,
        num_members=3,
        num_elites=2,
        hidden_dim=16,
        env_name="ant",
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        model.max_logvar.fill_(-4.0)
    return model


def _run_config(dataset: Path, model_dir: Path, run_dir: Path, **kw: Any) -> TrainAgentConfig:
    base: dict[str, Any] = dict(
        env_name="ant-random-v2",
        dataset=str(dataset),
        load_model_dir=str(model_dir),
        seed=0,
        device="cpu",
        run_dir=str(run_dir),
        epochs=1,
        updates_per_epoch=4,
        eval_every=1,
        eval_episodes=1,
        eval_max_steps=30,
        log_every=4,
        quiet=True,
        batch_size=16,
        dataset_ratio=0.5,
        rollouts_per_epoch=20,
        steps_k=1,
        buffer_retain_epochs=1,
        hidden_dim=16,
        num_critics=2,
    )
    base.update(kw)
    return TrainAgentConfig(**base)


class _EvalSpy:
    """Wraps the trainer's `evaluate`: records the contact-force block of every observation
    the evaluation envs return (stepped again after each evaluation with random actions)."""

    def __init__(self, real: Any) -> None:
        self.real, self.blocks = real, []

    def __call__(self, actor: Any, spec: Any, **kw: Any) -> dict[str, Any]:
        out = self.real(actor, spec, **kw)
        self.blocks += [o[START:STOP] for o in _steps(kw["envs"][0], 40, seed=4)]
        return out


@pytest.mark.parametrize("kind", ["real", "zeroed"])
def test_run_records_uses_and_resumes_the_decision(
    kind: str,
    ant_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import eor.agent.trainer as trainer_mod

    zero = kind == "zeroed"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    monkeypatch.setattr(eor.dynamics, "load", _tiny_ant_model)
    spy = _EvalSpy(trainer_mod.evaluate)
    monkeypatch.setattr(trainer_mod, "evaluate", spy)
    config = _run_config(ant_files[kind], model_dir, tmp_path / "run")
    components = build_components(config, torch.device("cpu"))
    assert components.contact_forces_missing is zero
    with caplog.at_level(logging.INFO, logger="eor"):
        trainer = Trainer(config, components=components)
    assert trainer.zero_contact_forces is zero
    assert len(_decision_logs(caplog)) == int(zero)
    trainer.train()
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["zero_contact_forces"] is zero
    assert json.loads((run / "summary.json").read_text())["zero_contact_forces"] is zero
    blocks = np.stack(spy.blocks)
    assert bool(np.count_nonzero(blocks) == 0) is zero

    # Resume, with a dataset that now says the opposite: the recorded decision wins. It is read
    # from the checkpoint (config.json is only the fallback: take the key out of it here).
    record = json.loads((run / "config.json").read_text())
    del record["zero_contact_forces"]
    (run / "config.json").write_text(json.dumps(record))
    caplog.clear()
    components.contact_forces_missing = not zero
    with caplog.at_level(logging.INFO, logger="eor"):
        resumed = Trainer.resume(run, overrides={"epochs": 2}, components=components)
    assert resumed.zero_contact_forces is zero
    assert any(
        r.levelno == logging.WARNING and "keeping the recorded decision" in r.getMessage()
        for r in caplog.records
    )
    if zero:
        assert any("as recorded in config.json" in m for m in _decision_logs(caplog))
    spy.blocks = []
    resumed.train()
    assert bool(np.count_nonzero(np.stack(spy.blocks)) == 0) is zero
    assert json.loads((run / "config.json").read_text())["zero_contact_forces"] is zero


# ----------------------------------------------------------------------------- eor collect
def _ant_policy_checkpoint(path: Path, zero: bool | None) -> Any:
    from eor.agent import Actor, RAVLConfig

    torch.manual_seed(0)
    config = RAVLConfig(obs_dim=111, act_dim=8, hidden_dim=8)
    actor = Actor(111, 8, 8, 1.0)
    with torch.no_grad():  # make the forces matter: large weights on their columns
        actor.trunk[0].weight[:, START:STOP].normal_(0.0, 5.0)
    state: dict[str, Any] = {"config": config.to_dict(), "actor": actor.state_dict()}
    if zero is not None:
        state["zero_contact_forces"] = zero
    torch.save(state, path)
    return actor.eval()


@pytest.mark.parametrize("zero", [True, False, None])
def test_collect_with_a_run_policy_uses_its_decision(zero: bool | None, tmp_path: Path) -> None:
    ckpt = tmp_path / "policy.pt"
    actor = _ant_policy_checkpoint(ckpt, zero)
    out = collect(
        "ant-medium-v2",
        steps=150,
        seed=0,
        policy=ckpt,
        deterministic=True,
        num_envs=1,
        out=tmp_path / "data.hdf5",
    )
    raw, attrs = read_raw(out)
    obs = raw["observations"]
    assert np.count_nonzero(obs[:, START:STOP]) > 0, "the data keeps the simulator's forces"
    assert attrs["policy_zero_contact_forces"] == bool(zero)
    seen = obs.copy()
    if zero:
        seen[:, START:STOP] = 0.0
    with torch.no_grad():
        expected = actor.act(torch.from_numpy(seen), True).numpy()
        other = actor.act(torch.from_numpy(obs if zero else _zeroed(obs)), True).numpy()
    np.testing.assert_allclose(raw["actions"], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(raw["actions"] - other).max() > 1e-3  # the inputs did matter


def _zeroed(obs: np.ndarray) -> np.ndarray:
    out = obs.copy()
    out[:, START:STOP] = 0.0
    return out
