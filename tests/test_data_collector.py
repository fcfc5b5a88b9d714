"""eor.data.collect and the `eor collect` / `eor datasets` commands, on the real simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import eor
import eor.data.collector as collect_mod
from eor.cli import main
from eor.data import collect, load_dataset, read_raw
from eor.envs import get_env


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "eor"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


def _check_episode_structure(raw: dict[str, np.ndarray], env: str) -> None:
    """Invariants of D4RL-format data recorded from the real simulator."""
    obs, nxt = raw["observations"], raw["next_observations"]
    term, tout = raw["terminals"], raw["timeouts"]
    ends = term | tout
    assert not (term & tout).any(), "a timeout is never a terminal"
    # Inside an episode, each row's next state is the following row's state (contiguous
    # episodes); after an episode end the next row is a fresh reset state.
    inside = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(nxt[inside], obs[inside + 1])
    after = np.flatnonzero(ends[:-1])
    assert not np.any(np.all(nxt[after] == obs[after + 1], axis=1))
    # Timeouts fall exactly at the 1000-step limit.
    last = np.flatnonzero(ends)
    lengths = np.diff(np.concatenate([[-1], last]))
    assert lengths.max() <= 1000
    np.testing.assert_array_equal(lengths[tout[last]], 1000)
    # The terminal flags the simulator gave agree with docs/algorithm.md §3's termination function.
    done = get_env(env).termination_fn(torch.from_numpy(nxt)).numpy()
    np.testing.assert_array_equal(done, term)
    assert np.isfinite(obs).all() and np.isfinite(raw["rewards"]).all()
    assert (np.abs(raw["actions"]) <= 1.0).all()


def test_collect_random_hopper_file_and_metadata(tmp_path):
    path = collect("hopper-random-v2", steps=1500, seed=0)
    assert path == tmp_path / "eor" / "hopper_random-v2.hdf5"
    raw, attrs = read_raw(path)
    assert set(raw) == {
        "observations",
        "actions",
        "rewards",
        "terminals",
        "timeouts",
        "next_observations",
    }
    assert raw["observations"].shape == (1500, 11) and raw["actions"].shape == (1500, 3)
    assert raw["observations"].dtype == np.float32 and raw["terminals"].dtype == bool
    assert raw["terminals"].sum() > 20  # random hopper falls within ~20 steps
    _check_episode_structure(raw, "hopper")
    import gymnasium
    import mujoco

    assert attrs["env_id"] == "Hopper-v4" and attrs["env_version"] == "v4"
    assert attrs["gymnasium_version"] == gymnasium.__version__
    assert attrs["mujoco_version"] == mujoco.__version__
    assert attrs["eor_version"] == eor.__version__
    assert (attrs["policy"], attrs["seed"], attrs["steps"]) == ("random", 0, 1500)
    assert not list((tmp_path / "eor").glob("*.part"))
    # The loader finds it by name in eor's store.
    ds = load_dataset("hopper-random-v2")
    assert ds.source.startswith("eor store") and len(ds) == 1500


def test_collect_halfcheetah_timeouts_at_1000(tmp_path):
    path = collect("halfcheetah-random-v2", steps=2000, seed=1, out=tmp_path / "hc.hdf5")
    raw, _ = read_raw(path)
    np.testing.assert_array_equal(np.flatnonzero(raw["timeouts"]), [999, 1999])
    assert not raw["terminals"].any()
    _check_episode_structure(raw, "halfcheetah")
    assert len(load_dataset(path)) == 1998  # both timeout rows dropped (docs/algorithm.md §1)


def test_collect_walker2d_two_vector_envs(tmp_path):
    """SyncVectorEnv with SAME_STEP autoreset: no transition crosses an episode boundary."""
    path = collect("walker2d-random-v2", steps=1200, seed=2, num_envs=2, out=tmp_path / "w.hdf5")
    raw, attrs = read_raw(path)
    assert attrs["num_envs"] == 2
    assert raw["terminals"].sum() > 10
    _check_episode_structure(raw, "walker2d")


def test_collect_ant_111_dims(tmp_path):
    path = collect("ant-random-v2", steps=300, seed=0, out=tmp_path / "a.hdf5")
    raw, attrs = read_raw(path)
    assert raw["observations"].shape == (300, 111)
    assert attrs["env_kwargs"] == '{"use_contact_forces": true}'
    _check_episode_structure(raw, "ant")


def test_vector_and_plain_envs_give_identical_data():
    spec = get_env("hopper")
    a = collect_mod._run(spec, 800, 5, None, 0.0, 1, False, vector=False)
    b = collect_mod._run(spec, 800, 5, None, 0.0, 1, False, vector=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_collect_is_deterministic(tmp_path):
    p1 = collect("hopper-random-v2", steps=400, seed=7, out=tmp_path / "1.hdf5")
    p2 = collect("hopper-random-v2", steps=400, seed=7, out=tmp_path / "2.hdf5")
    p3 = collect("hopper-random-v2", steps=400, seed=8, out=tmp_path / "3.hdf5")
    r1, r2, r3 = (read_raw(p)[0] for p in (p1, p2, p3))
    for key in r1:
        np.testing.assert_array_equal(r1[key], r2[key])
    assert not np.array_equal(r1["actions"], r3["actions"])


def test_interrupted_collect_leaves_no_file(tmp_path):
    out = tmp_path / "eor" / "hopper_random-v2.hdf5"
    calls = {"n": 0}

    def flaky_policy(obs):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return np.zeros((obs.shape[0], 3), np.float32)

    with pytest.raises(KeyboardInterrupt):
        collect("hopper-medium-v2", steps=500, policy=flaky_policy, out=out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
    with pytest.raises(FileNotFoundError):
        load_dataset("hopper-random-v2")


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    out = collect("hopper-random-v2", steps=200, seed=0)
    before = out.read_bytes()
    real_write = collect_mod._write_hdf5

    def write_then_die(path, arrays, attrs):
        real_write(path, {"observations": arrays["observations"]}, {})  # half a file
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_mod, "_write_hdf5", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        collect("hopper-random-v2", steps=300, seed=1, overwrite=True)
    assert out.read_bytes() == before  # the old dataset is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left


def _tiny_checkpoint(tmp_path, obs_dim=11, act_dim=3):
    from eor.agent import Actor, RAVLConfig

    torch.manual_seed(0)
    config = RAVLConfig(obs_dim=obs_dim, act_dim=act_dim, hidden_dim=8)
    actor = Actor(obs_dim, act_dim, 8, 1.0)
    path = tmp_path / "actor.pt"
    torch.save({"config": config.to_dict(), "actor": actor.state_dict()}, path)
    return path, actor.eval()


def test_collect_with_policy_checkpoint(tmp_path):
    ckpt, actor = _tiny_checkpoint(tmp_path)
    path = collect(
        "hopper-medium-v2", steps=300, seed=0, policy=ckpt, deterministic=True, num_envs=2
    )
    raw, attrs = read_raw(path)
    assert attrs["policy"] == f"checkpoint:{ckpt.resolve()}"
    with torch.no_grad():
        expected = actor.act(torch.from_numpy(raw["observations"]), True).numpy()
    np.testing.assert_allclose(raw["actions"], expected, rtol=1e-5, atol=1e-6)
    _check_episode_structure(raw, "hopper")

    noisy = collect("hopper-expert-v2", steps=300, seed=0, policy=ckpt, noise=0.3)
    raw, attrs = read_raw(noisy)
    assert attrs["noise"] == 0.3
    with torch.no_grad():
        mean = actor.act(torch.from_numpy(raw["observations"]), True).numpy()
    diff = raw["actions"] - mean
    unclipped = np.abs(raw["actions"]) < 1.0
    assert 0.2 < diff[unclipped].std() < 0.4
    assert (np.abs(raw["actions"]) <= 1.0).all()


def test_collect_with_stochastic_policy_is_seeded(tmp_path):
    ckpt, _ = _tiny_checkpoint(tmp_path)
    a = collect("hopper-medium-v2", steps=200, seed=3, policy=ckpt, out=tmp_path / "a.hdf5")
    b = collect("hopper-medium-v2", steps=200, seed=3, policy=ckpt, out=tmp_path / "b.hdf5")
    np.testing.assert_array_equal(read_raw(a)[0]["actions"], read_raw(b)[0]["actions"])


def test_collect_with_callable_policy(tmp_path):
    def policy(obs):
        return np.tanh(obs[:, :3]).astype(np.float32)

    raw, attrs = read_raw(collect("hopper-medium-v2", steps=200, policy=policy))
    np.testing.assert_allclose(raw["actions"], np.tanh(raw["observations"][:, :3]), rtol=1e-6)
    assert attrs["policy"] == "callable:policy"


def test_collect_bad_input(tmp_path):
    with pytest.raises(ValueError, match="needs a behaviour policy"):
        collect("hopper-medium-v2", steps=10)
    with pytest.raises(ValueError, match="noise"):
        collect("hopper-random-v2", steps=10, noise=0.1)
    with pytest.raises(ValueError, match="steps"):
        collect("hopper-random-v2", steps=0)
    with pytest.raises(ValueError, match="num_envs"):
        collect("hopper-random-v2", steps=10, num_envs=0)
    with pytest.raises(ValueError, match="noise must be"):
        collect("hopper-medium-v2", steps=10, policy=lambda o: o, noise=-1.0)
    with pytest.raises(ValueError, match="Did you mean"):
        collect("hoper-random-v2", steps=10)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        collect("hopper-medium-v2", steps=10, policy=tmp_path / "none.pt")
    with pytest.raises(ValueError, match=r"expected finite \[4, 3\]"):
        collect("hopper-medium-v2", steps=10, policy=lambda o: np.zeros((1, 6)))
    ckpt, _ = _tiny_checkpoint(tmp_path, obs_dim=17, act_dim=6)
    with pytest.raises(ValueError, match="obs_dim=17"):
        collect("hopper-medium-v2", steps=10, policy=ckpt)
    out = collect("hopper-random-v2", steps=10)
    with pytest.raises(FileExistsError, match="overwrite"):
        collect("hopper-random-v2", steps=10)
    assert out.exists()


def test_cli_collect_and_datasets(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["collect", "hopper-random-v2", "--steps", "600", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "hopper_random-v2.hdf5" in res.output
    res = runner.invoke(main, ["datasets"])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "eor") in res.output and "hopper-random-v2" in res.output
    assert "600 rows" in res.output

    res = runner.invoke(main, ["datasets", "info", "hopper-random-v2"])
    assert res.exit_code == 0, res.output
    raw, _ = read_raw(tmp_path / "eor" / "hopper_random-v2.hdf5")
    ends = np.flatnonzero(raw["terminals"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    returns = np.array(
        [
            raw["rewards"][s : e + 1].astype(np.float64).sum()
            for s, e in zip(starts, ends, strict=True)
        ]
    )
    assert f"episodes     {len(returns)} complete" in res.output
    assert f"return       mean {returns.mean():.2f}" in res.output
    score = get_env("hopper").normalized_score(returns).mean()
    assert f"norm. score  mean {score:.2f}" in res.output

    res = runner.invoke(main, ["collect", "hopper-random-v2", "--steps", "10"])
    assert res.exit_code != 0 and "overwrite" in res.output
    res = runner.invoke(main, ["collect", "halfchetah-random-v2"])
    assert res.exit_code == 2 and "halfcheetah-random-v2" in res.output
    res = runner.invoke(main, ["collect", "hopper-random-v2", "--steps", "0"])
    assert res.exit_code == 2 and "--steps" in res.output
    res = runner.invoke(main, ["datasets", "info", "walker2d-random-v2"])
    assert res.exit_code == 1 and "eor collect walker2d-random-v2" in res.output
    res = runner.invoke(main, ["datasets", "info", str(tmp_path / "missing.hdf5")])
    assert res.exit_code == 2 and "does not exist" in res.output

    # A file in D4RL's cache is listed under it, and `info` takes a path as well.
    d4rl = tmp_path / "d4rl" / "hopper_medium-v2.hdf5"
    d4rl.parent.mkdir()
    d4rl.write_bytes((tmp_path / "eor" / "hopper_random-v2.hdf5").read_bytes())
    res = runner.invoke(main, ["datasets", "list"])
    assert res.exit_code == 0, res.output
    d4rl_part = res.output.split("eor store")[0]
    assert str(tmp_path / "d4rl") in d4rl_part and "hopper_medium-v2.hdf5" in d4rl_part
    res = runner.invoke(main, ["datasets", "info", str(d4rl)])
    assert res.exit_code == 0 and f"episodes     {len(returns)} complete" in res.output


def test_cli_collect_policy_checkpoint(tmp_path):
    ckpt, _ = _tiny_checkpoint(tmp_path)
    out = tmp_path / "m.hdf5"
    res = CliRunner().invoke(
        main,
        [
            "collect",
            "hopper-medium-v2",
            "--steps",
            "100",
            "--policy",
            str(ckpt),
            "--noise",
            "0.1",
            "--num_envs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    raw, attrs = read_raw(out)
    assert attrs["noise"] == 0.1 and attrs["num_envs"] == 2 and len(raw["rewards"]) == 100
