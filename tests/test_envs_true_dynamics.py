"""`SimulatorDynamics` (the true dynamics as a model) and `eor train-agent --true_dynamics`.

Two kinds of agreement are tested:

* from the same MuJoCo state (x = 0, qacc_warmstart = 0, as `SimulatorDynamics` sets it), one
  step equals gymnasium's `env.step` exactly: next observation, reward, termination;
* from a dataset row (`eor.data.collect`), one step reproduces the row's next observation and
  reward up to the float32 rounding of the stored observation, which the contact dynamics can
  amplify (see `test_one_step_reproduces_the_dataset` for the measured sizes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.agent.rollout import rollout_phase
from eor.cli import main
from eor.data import collect, load_dataset
from eor.envs import get_env, make_env
from eor.envs.true_dynamics import SIMULATED_ENVS, SimulatorDynamics

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = 5000


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5000-step random-policy dataset of each simulated env (real simulator, seed 0)."""
    root = tmp_path_factory.mktemp("true_dynamics")
    return {
        name: collect(
            f"{name}-random-v2", steps=ROWS, seed=0, out=root / f"{name}.hdf5", progress=False
        )
        for name in SIMULATED_ENVS
    }


@pytest.fixture(scope="module")
def sims() -> dict[str, SimulatorDynamics]:
    return {name: SimulatorDynamics(name, nthread=2) for name in SIMULATED_ENVS}


def _env_states(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n (qpos, qvel) pairs visited by random-policy episodes of the env, varied on purpose:
    a third with all joint velocities scaled x4 (beyond the observation's clip at 10 for
    hopper and walker2d), a few with |qvel| > 100 (hopper's healthy state range)."""
    env = make_env(name, seed=seed)
    u = env.unwrapped
    rng = np.random.default_rng(seed)
    qpos, qvel = [], []
    env.reset()
    for i in range(n):
        for _ in range(int(rng.integers(1, 8))):
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
        v = u.data.qvel.copy()
        if i % 3 == 1:
            v *= 4.0
        if i % 17 == 5:
            v[-1] = 150.0
        qpos.append(u.data.qpos.copy())
        qvel.append(v)
    env.close()
    return np.array(qpos), np.array(qvel)


# ----------------------------------------------------------------------------- against env.step
@pytest.mark.parametrize("name", SIMULATED_ENVS)
def test_step_equals_env_step_from_the_same_state(
    name: str, sims: dict[str, SimulatorDynamics]
) -> None:
    """Same state, same action: `SimulatorDynamics` gives gymnasium's next observation, reward
    and `terminated` bit for bit (its reward and health code reproduced, on the env's own
    parameters; its qvel clip in the observation; its frame_skip substeps)."""
    sim = sims[name]
    qpos, qvel = _env_states(name, 60, seed=1)
    qpos[:, 0] = 0.0  # SimulatorDynamics' x
    rng = np.random.default_rng(2)
    act = rng.uniform(-1, 1, (len(qpos), sim.act_dim)).astype(np.float32)
    env = make_env(name)
    env.reset(seed=0)
    u = env.unwrapped
    expected_obs, expected_rew, expected_done = [], [], []
    for i in range(len(qpos)):
        u.set_state(qpos[i], qvel[i])
        u.data.qacc_warmstart[:] = 0.0
        o, r, term, _, _ = env.step(act[i])
        expected_obs.append(o)
        expected_rew.append(r)
        expected_done.append(term)
    obs = np.concatenate([qpos[:, 1:], qvel], axis=1)  # the unclipped state
    next_obs, reward, done = sim.step_numpy(obs, act)
    np.testing.assert_array_equal(next_obs, np.array(expected_obs))
    # The reward is bit for bit with today's gymnasium/mujoco; at the floor versions
    # (gymnasium 1.1, mujoco 3.2.7) it differs at float32 rounding (measured: up to 1.8e-8
    # absolute, 3e-7 relative on halfcheetah, whose control cost the old env sums in float32),
    # so the check allows 1e-6 relative: far below any error of the formula.
    np.testing.assert_allclose(reward, np.array(expected_rew), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(done, np.array(expected_done))
    if name != "halfcheetah":  # the sample has both outcomes, and clipped velocities
        assert 0 < done.sum() < len(done)
        assert (np.abs(next_obs[:, sim.nq - 1 :]) == 10.0).any()


@pytest.mark.parametrize("name", SIMULATED_ENVS)
def test_x_position_does_not_matter(name: str, sims: dict[str, SimulatorDynamics]) -> None:
    """The env started at its real x (up to +-40) gives the same step as x = 0, up to the
    rounding of positions that differ by x: the x = 0 choice loses nothing."""
    sim = sims[name]
    qpos, qvel = _env_states(name, 40, seed=3)
    qpos[:, 0] = np.random.default_rng(4).uniform(-40, 40, len(qpos))
    act = np.random.default_rng(5).uniform(-1, 1, (len(qpos), sim.act_dim)).astype(np.float32)
    env = make_env(name)
    env.reset(seed=0)
    u = env.unwrapped
    rows = []
    for i in range(len(qpos)):
        u.set_state(qpos[i], qvel[i])
        u.data.qacc_warmstart[:] = 0.0
        o, r, term, _, _ = env.step(act[i])
        rows.append((o, r, term))
    next_obs, reward, done = sim.step_numpy(np.concatenate([qpos[:, 1:], qvel], axis=1), act)
    # Measured: at most ~1e-9 (x of 40 carries ~7e-15 absolute rounding into every position).
    np.testing.assert_allclose(next_obs, np.array([r[0] for r in rows]), rtol=0, atol=1e-7)
    np.testing.assert_allclose(reward, np.array([r[1] for r in rows]), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(done, np.array([r[2] for r in rows]))


# ----------------------------------------------------------------------------- against a dataset
# Tight tolerance on |sim - data| / (1 + |data|) (next observation, and reward), per env.
# The data was stepped from the float64 state and stored as float32; the simulator starts from
# the float32 observation (and from qacc_warmstart = 0 instead of the last step's: measured
# separately, that alone changes the next observation by < 1e-12 for halfcheetah and
# walker2d, < 5e-8 for hopper). On 100k random-policy rows per env the error's median is
# ~1e-7 (float32 rounding), its 99.9% quantile 3.3e-5 (halfcheetah), 7e-7 (hopper), 5e-6
# (walker2d). A few rows in 10^4 go further (up to 1e-2): there a one-ulp change of the float32
# input moves the result as much (a contact starts or not within the step), which the test
# checks for every such row.
TIGHT = {"halfcheetah": 5e-5, "hopper": 2e-6, "walker2d": 2e-5}


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b) / (1.0 + np.abs(b))


@pytest.mark.parametrize("name", SIMULATED_ENVS)
def test_one_step_reproduces_the_dataset(
    name: str, datasets: dict[str, Path], sims: dict[str, SimulatorDynamics]
) -> None:
    sim = sims[name]
    ds = load_dataset(str(datasets[name]), env=name)
    o, a = ds.observations, ds.actions
    e, r = ds.next_observations, ds.rewards
    # Hopper and walker2d observations clip qvel to [-10, 10]: a row with a clipped velocity
    # does not hold its state (random walker2d data: ~80% of rows), so only rows with every
    # velocity inside the clip are compared.
    keep = np.ones(len(o), bool)
    if sim.rules.qvel_clip is not None:
        keep = (np.abs(o[:, sim.nq - 1 :]) < sim.rules.qvel_clip).all(axis=1)
    assert keep.sum() > 500
    o, a, e, r = o[keep], a[keep], e[keep], r[keep]
    terminals = ds.terminals[keep].astype(bool)

    next_obs, reward, done = sim.step(torch.from_numpy(o), torch.from_numpy(a))
    assert next_obs.dtype == torch.float32 and reward.dtype == torch.float32
    assert done.dtype == torch.bool and done.shape == (len(o),)
    no, rw = next_obs.numpy(), reward.numpy()
    err_obs = _rel(no, e).max(axis=1)  # [N]
    err_rew = _rel(rw, r)  # [N]
    np.testing.assert_array_equal(done.numpy(), terminals)  # termination agrees with the env
    if name != "halfcheetah":
        assert terminals.any()
    assert np.median(err_obs) < 2e-7 and np.median(err_rew) < 2e-7  # float32 rounding
    tight = TIGHT[name]
    flagged = np.flatnonzero((err_obs > tight) | (err_rew > tight))
    assert len(flagged) <= 0.002 * len(o), f"{len(flagged)} rows beyond {tight:g}"
    rng = np.random.default_rng(0)
    for i in flagged:  # each one: within what a one-ulp change of the input can do
        perturbed = o[i].astype(np.float64) * (1 + rng.uniform(-1, 1, (32, o.shape[1])) * 2**-23)
        pn, pr, _ = sim.step_numpy(perturbed, np.repeat(a[i : i + 1], 32, axis=0))
        spread_obs = (np.abs(pn - no[i]) / (1 + np.abs(e[i]))).max()
        spread_rew = np.abs(pr - rw[i]).max() / (1 + abs(r[i]))
        assert err_obs[i] <= tight + 2 * spread_obs, (i, err_obs[i], spread_obs)
        assert err_rew[i] <= tight + 2 * spread_rew, (i, err_rew[i], spread_rew)


# ----------------------------------------------------------------------------- batches, devices
def test_mixed_batch_rows_are_independent(sims: dict[str, SimulatorDynamics]) -> None:
    """One batch mixing healthy and falling rows, clipped velocities, a non-finite row and a
    diverging row: each row's result is the one it gets alone, in one thread or two; the
    non-finite and the diverging rows come back NaN (dropped by `rollout_phase`)."""
    sim = sims["hopper"]
    qpos, qvel = _env_states("hopper", 12, seed=6)
    obs = np.concatenate([qpos[:, 1:], np.clip(qvel, -10, 10)], axis=1)
    obs[3, 4] = np.nan  # a non-finite input
    obs[7, 6:] = 1e12  # MuJoCo's divergence check resets this state
    obs[5, 0] = 0.3  # fallen: below the healthy height
    obs[9, 1] = 0.6  # tilted beyond the healthy angle
    act = np.random.default_rng(7).uniform(-1, 1, (len(obs), 3)).astype(np.float32)
    next_obs, reward, done = sim.step(torch.from_numpy(obs), torch.from_numpy(act))
    assert torch.isnan(next_obs[3]).all() and torch.isnan(reward[3])
    assert torch.isnan(next_obs[7]).all() and torch.isnan(reward[7])
    others = [i for i in range(len(obs)) if i not in (3, 7)]
    assert torch.isfinite(next_obs[others]).all() and torch.isfinite(reward[others]).all()
    assert bool(done[5]) and bool(done[9]) and int(done[others].sum()) < len(others) - 2
    single = SimulatorDynamics("hopper", nthread=0)
    for i in range(len(obs)):
        alone = single.step(torch.from_numpy(obs[i : i + 1]), torch.from_numpy(act[i : i + 1]))
        torch.testing.assert_close(alone[0][0], next_obs[i], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(alone[1][0], reward[i], rtol=0, atol=0, equal_nan=True)
        assert bool(alone[2][0]) == bool(done[i])
    single.close()


def test_dtype_empty_batch_and_generator(sims: dict[str, SimulatorDynamics]) -> None:
    sim = sims["walker2d"]
    obs = torch.zeros(4, 17, dtype=torch.float64)
    obs[:, 0] = 1.25  # standing height
    act = torch.full((4, 6), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n1, r1, d1 = sim.step(obs, act, g)
    n2, r2, d2 = sim.step(obs, act, None)
    assert n1.dtype == torch.float64 and r1.dtype == torch.float64 and d1.dtype == torch.bool
    assert torch.equal(n1, n2) and torch.equal(r1, r2) and torch.equal(d1, d2)
    assert torch.equal(n1[0], n1[3]) and not d1.any()
    e = sim.step(torch.zeros(0, 17), torch.zeros(0, 6))
    assert e[0].shape == (0, 17) and e[1].shape == (0,) and e[2].shape == (0,)


def test_rollout_phase_with_the_simulator(sims: dict[str, SimulatorDynamics]) -> None:
    """`rollout_phase` runs on SimulatorDynamics unchanged: every stored transition is the
    simulator's step of its stored (obs, act), and terminated rollouts stop."""
    import eor

    sim = sims["hopper"]
    qpos, qvel = _env_states("hopper", 64, seed=8)
    starts = np.concatenate([qpos[:, 1:], np.clip(qvel, -10, 10)], axis=1).astype(np.float32)
    real = eor.ReplayBuffer(64, 11, 3, seed=0)
    real.add(starts, np.zeros((64, 3), np.float32), np.zeros(64, np.float32), starts,
             np.zeros(64, np.float32))  # fmt: skip
    model_buffer = eor.ReplayBuffer(1000, 11, 3, seed=1)

    class RandomPolicy:
        def act(self, obs: Any, deterministic: bool = True, generator: Any = None) -> Any:
            return torch.rand(obs.shape[0], 3, generator=generator) * 2 - 1

    stats = rollout_phase(
        RandomPolicy(), sim, real, model_buffer, num_rollouts=64, steps_k=4,
        generator=torch.Generator().manual_seed(0), device="cpu",
    )  # fmt: skip
    n = len(model_buffer)
    assert n == stats.transitions_added and 64 <= n <= 256 and stats.nonfinite == 0
    rows = model_buffer.fields()
    o, a, r, no, d = (np.array(rows[k]) for k in ("obs", "act", "rew", "next_obs", "done"))
    next_obs, reward, done = sim.step(torch.from_numpy(o), torch.from_numpy(a))
    np.testing.assert_array_equal(next_obs.numpy(), no)
    np.testing.assert_array_equal(reward.numpy(), r)
    np.testing.assert_array_equal(done.numpy().astype(np.float32), d)
    assert stats.terminals == int(d.sum()) and stats.terminals > 0


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused(sims: dict[str, SimulatorDynamics]) -> None:
    sim = sims["halfcheetah"]
    with pytest.raises(ValueError, match=r"obs must have shape \[R, 17\], got \(4, 11\)"):
        sim.step(torch.zeros(4, 11), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"act must have shape \[4, 6\], got \(4, 3\)"):
        sim.step(torch.zeros(4, 17), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"act must have shape \[4, 6\], got \(5, 6\)"):
        sim.step(torch.zeros(4, 17), torch.zeros(5, 6))
    with pytest.raises(ValueError, match=r"obs must have shape"):
        sim.step(torch.zeros(17), torch.zeros(6))
    with pytest.raises(TypeError, match="must be torch tensors"):
        sim.step(np.zeros((4, 17)), torch.zeros(4, 6))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating point"):
        sim.step(torch.zeros(4, 17, dtype=torch.int64), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"env ant \(Ant-v4\) is not simulated.*contact"):
        SimulatorDynamics("ant-medium-v2")
    with pytest.raises(ValueError, match="unknown env or dataset name 'pendulum'"):
        SimulatorDynamics("pendulum")
    with pytest.raises(ValueError, match="nthread must be a non-negative int"):
        SimulatorDynamics("hopper", nthread=-1)
    assert get_env("ant").name not in SIMULATED_ENVS


# ----------------------------------------------------------------------------- eor train-agent
def _invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["train-agent", *args], catch_exceptions=False)


def _tiny(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "--env_name", "hopper-random-v2", "--dataset", str(data), "--true_dynamics",
        "--run_dir", str(run), "--epochs", "2", "--updates_per_epoch", "10",
        "--hidden_dim", "32", "--num_critics", "2", "--batch_size", "32",
        "--rollouts_per_epoch", "100", "--steps_k", "2", "--eval_episodes", "2",
        "--eval_max_steps", "5", "--log_every", "5", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def test_train_agent_true_dynamics_end_to_end(datasets: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _invoke(*_tiny(datasets["hopper"], run))
    assert result.exit_code == 0, result.output
    assert "completed: 2 epochs, 20 updates" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["true_dynamics"] is True and config["load_model_dir"] is None
    assert config["model"]["format"] == "simulator" and config["model"]["env_id"] == "Hopper-v4"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rollouts = [r for r in records if r["kind"] == "rollout"]
    assert len(rollouts) == 2 and all(r["transitions_added"] >= 100 for r in rollouts)
    assert all(r["nonfinite"] == 0 for r in rollouts)

    # Resume: the simulator is rebuilt from the saved config; --true_dynamics stays as it was.
    result = _invoke("--resume", str(run), "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["total_updates"] == 30
    bad = _invoke("--resume", str(run), "--no-true-dynamics", "--load_model_dir", str(tmp_path))
    assert bad.exit_code == 2 and "cannot change when resuming" in bad.output


def test_resume_uses_the_recorded_dataset_and_refuses_other_data(
    datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that found its data by name resumes from the recorded file when the name no longer
    finds it (EOR_DATA_DIR unset or moved), and refuses data with another sha256."""
    import shutil

    from eor.data.sources import d4rl_file_name

    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    shutil.copy(datasets["hopper"], store / d4rl_file_name("hopper-random-v2"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no-d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(store))
    run = tmp_path / "run"
    args = _tiny(datasets["hopper"], run)
    del args[args.index("--dataset") : args.index("--dataset") + 2]  # found by name, in the store
    assert _invoke(*args).exit_code == 0

    monkeypatch.setenv("EOR_DATA_DIR", str(elsewhere))  # the name finds nothing now
    result = CliRunner().invoke(
        main, ["train-agent", "--resume", str(run), "--epochs", "3", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "is not found by name now" in result.output and str(store) in result.output
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3

    other = collect("hopper-random-v2", steps=300, seed=1, out=elsewhere / "x.hdf5", progress=False)
    other.rename(elsewhere / d4rl_file_name("hopper-random-v2"))  # same name, other data
    bad = _invoke("--resume", str(run), "--epochs", "4", "--quiet")
    assert bad.exit_code == 2, bad.output
    assert "resuming would mix two datasets" in bad.output and "EOR_DATA_DIR" in bad.output
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3

    (store / d4rl_file_name("hopper-random-v2")).unlink()  # the recorded file is gone too
    (elsewhere / d4rl_file_name("hopper-random-v2")).unlink()
    gone = _invoke("--resume", str(run), "--epochs", "4", "--quiet")
    assert gone.exit_code == 2 and "cannot load 'hopper-random-v2'" in gone.output


def test_train_agent_true_dynamics_bad_input(datasets: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    both = _invoke(*_tiny(datasets["hopper"], run, "--load_model_dir", str(tmp_path)))
    assert both.exit_code == 2 and "--true_dynamics" in both.output
    assert "not both" in both.output
    neither = _invoke("--env_name", "hopper-random-v2", "--run_dir", str(run), "--quiet")
    assert neither.exit_code == 2 and "load_model_dir must be given" in neither.output
    assert "--true_dynamics" in neither.output
    ant = _invoke("--env_name", "ant-random-v2", "--true_dynamics", "--run_dir", str(run))
    assert ant.exit_code == 2 and "--true_dynamics" in ant.output
    assert "ant (Ant-v4) is not simulated" in ant.output
    assert not run.exists()
