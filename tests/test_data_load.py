"""eor.data loading: docs/algorithm.md §1 Q-learning form, validation errors, resolution order, buffer."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from eor.data import DatasetError, load_dataset, qlearning_arrays, read_raw, sources, validate_raw
from eor.envs import get_env

S, A = 11, 3  # hopper


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Never touch the real home: every dataset folder points into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "eor"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


def _tiny_raw(with_next: bool, obs_dim: int = 2, act_dim: int = 1) -> dict[str, np.ndarray]:
    """7 hand-made rows: row i has obs = [i, 10 + i, ...], act = 100 + i, rew = 1000 + i.

    Episode layout: rows 0-2 end in a terminal at 2; rows 3-4 end in a timeout at 4; rows
    5-6 are a trailing unfinished episode. next_observations (when present) = obs + 0.5.
    """
    n = 7
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0] = np.arange(n)
    obs[:, 1] = 10 + np.arange(n)
    raw = {
        "observations": obs,
        "actions": np.tile((100 + np.arange(n, dtype=np.float32))[:, None], (1, act_dim)),
        "rewards": 1000 + np.arange(n, dtype=np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 0, 0], bool),
        "timeouts": np.array([0, 0, 0, 0, 1, 0, 0], bool),
    }
    if with_next:
        raw["next_observations"] = obs + 0.5
    return raw


def _check_transitions(q, raw, expected):
    """expected: list of (row i, next-state array, terminal)."""
    assert len(q["rewards"]) == len(expected)
    for t, (i, nxt, term) in enumerate(expected):
        np.testing.assert_array_equal(q["observations"][t], raw["observations"][i])
        np.testing.assert_array_equal(q["actions"][t], raw["actions"][i])
        assert q["rewards"][t] == raw["rewards"][i]
        np.testing.assert_array_equal(q["next_observations"][t], nxt)
        assert q["terminals"][t] == term
    for key, arr in q.items():
        assert arr.dtype == np.float32 and arr.flags.c_contiguous, key


def test_qlearning_without_next_observations():
    raw = _tiny_raw(with_next=False)
    obs = raw["observations"]
    q = qlearning_arrays(raw)
    # Row 4 is a timeout (dropped: obs[5] starts a new episode); row 6 has no obs[7] (dropped).
    # The terminal row 2 keeps obs[3] as its next state (D4RL's qlearning_dataset; done=1 masks it).
    expected = [
        (0, obs[1], 0.0),
        (1, obs[2], 0.0),
        (2, obs[3], 1.0),
        (3, obs[4], 0.0),
        (5, obs[6], 0.0),
    ]
    _check_transitions(q, raw, expected)


def test_qlearning_with_next_observations():
    raw = _tiny_raw(with_next=True)
    nxt = raw["next_observations"]
    q = qlearning_arrays(raw)
    # No index shift: next state i is next_observations[i]; the last row is kept (not a timeout).
    expected = [(i, nxt[i], float(i == 2)) for i in (0, 1, 2, 3, 5, 6)]
    _check_transitions(q, raw, expected)


def test_timeout_is_never_terminal():
    raw = _tiny_raw(with_next=True)
    raw["terminals"][4] = True  # a row flagged both terminal and timeout is still dropped
    q = qlearning_arrays(raw)
    assert 4.0 not in q["observations"][:, 0]
    assert q["terminals"].sum() == 1.0


def test_qlearning_rewards_column_and_no_timeouts_key():
    raw = _tiny_raw(with_next=True)
    del raw["timeouts"]
    raw["rewards"] = raw["rewards"][:, None]  # some files store [N, 1]
    q = qlearning_arrays(raw)
    np.testing.assert_array_equal(q["rewards"], 1000 + np.arange(7, dtype=np.float32))
    assert q["rewards"].shape == (7,)


def _hopper_raw(n: int = 50, with_next: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = {
        "observations": rng.standard_normal((n, S)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, A)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    raw["terminals"][[7, 30]] = True
    raw["timeouts"][[19, n - 1]] = True
    if with_next:
        raw["next_observations"] = rng.standard_normal((n, S)).astype(np.float32)
    return raw


def _write_h5(path: Path, raw: dict[str, np.ndarray], **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in raw.items():
            f.create_dataset(k, data=v)
        f.create_dataset("infos/qpos", data=np.zeros((len(raw["rewards"]), 2)))
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


@pytest.mark.parametrize("with_next", [True, False])
def test_load_file_hdf5_and_npz_agree(tmp_path, with_next):
    raw = _hopper_raw(with_next=with_next)
    h5 = _write_h5(tmp_path / "hopper_medium-v2.hdf5", raw)
    npz = tmp_path / "hopper-medium-v2.npz"
    np.savez(npz, **raw)
    a = load_dataset(h5)
    b = load_dataset(str(npz))
    expected = qlearning_arrays(raw)
    for ds in (a, b):
        assert ds.name == "hopper-medium-v2" and ds.env is get_env("hopper")
        np.testing.assert_array_equal(ds.observations, expected["observations"])
        np.testing.assert_array_equal(ds.next_observations, expected["next_observations"])
        np.testing.assert_array_equal(ds.terminals, expected["terminals"])
    # timeouts at 19 and 49 dropped (and, without next_observations, 49 is the last row anyway)
    assert len(a) == 48
    assert a.checksum is not None and len(a.checksum) == 64
    assert a.checksum == load_dataset(h5).checksum


def test_file_env_from_attribute_or_argument(tmp_path):
    raw = _hopper_raw()
    p = _write_h5(tmp_path / "mine.hdf5", raw, dataset="hopper-random-v2")
    assert load_dataset(p).env.name == "hopper"
    q = _write_h5(tmp_path / "other.hdf5", raw)
    with pytest.raises(DatasetError, match="pass env="):
        load_dataset(q)
    assert load_dataset(q, env="hopper").name == "other"


# ----------------------------------------------------------------------------- bad input


def test_missing_key(tmp_path):
    raw = _hopper_raw()
    del raw["actions"]
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with pytest.raises(DatasetError, match="missing key.*'actions'"):
        load_dataset(p)


def test_missing_timeouts_without_next_observations(tmp_path):
    raw = _hopper_raw(with_next=False)
    del raw["timeouts"]
    with pytest.raises(DatasetError, match="'timeouts'"):
        validate_raw(raw, get_env("hopper"))


def test_length_mismatch(tmp_path):
    raw = _hopper_raw(n=50)
    raw["rewards"] = raw["rewards"][:49]
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with pytest.raises(DatasetError, match="differ in length") as err:
        load_dataset(p)
    assert "rewards=49" in str(err.value) and "observations=50" in str(err.value)


@pytest.mark.parametrize(
    "key, shape, msg",
    [
        ("observations", (50, 12), r"observations has shape \(50, 12\).*\[N, 11\]"),
        ("next_observations", (50, 17), r"next_observations has shape \(50, 17\)"),
        ("actions", (50, 6), r"actions has shape \(50, 6\).*\[N, 3\]"),
        ("actions", (50,), r"actions has shape \(50,\)"),
        ("rewards", (50, 2), r"rewards has shape \(50, 2\), expected \[N\]"),
    ],
)
def test_dims_must_match_env(tmp_path, key, shape, msg):
    raw = _hopper_raw()
    raw[key] = np.zeros(shape, np.float32)
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with pytest.raises(DatasetError, match=msg):
        load_dataset(p)


def test_wrong_env_given(tmp_path):
    p = _write_h5(tmp_path / "x.hdf5", _hopper_raw())
    with pytest.raises(DatasetError, match="halfcheetah"):
        load_dataset(p, env="halfcheetah")


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "next_observations"])
def test_nonfinite_rows(tmp_path, key):
    raw = _hopper_raw()
    raw[key] = raw[key].copy()
    raw[key][3] = np.nan
    raw[key][11] = -np.inf
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with pytest.raises(
        DatasetError, match=rf"{key} has NaN or inf in 2 of 50 rows \(first at row 3\)"
    ):
        load_dataset(p)


def test_non_numeric_array(tmp_path):
    raw = _hopper_raw()
    raw["rewards"] = np.array(["x"] * 50)
    with pytest.raises(DatasetError, match="rewards has dtype <U1, expected a numeric array"):
        validate_raw(raw, get_env("hopper"))


def test_key_that_is_a_group(tmp_path):
    raw = _hopper_raw()
    del raw["actions"]
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with h5py.File(p, "a") as f:
        f.create_group("actions").create_dataset("x", data=np.zeros(3))
    with pytest.raises(DatasetError, match="cannot read HDF5"):
        load_dataset(p)


def test_empty_dataset(tmp_path):
    raw = {k: v[:0] for k, v in _hopper_raw().items()}
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", raw)
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(p)


def test_truncated_hdf5(tmp_path):
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", _hopper_raw(n=2000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset(p)


def test_not_hdf5(tmp_path):
    p = tmp_path / "hopper_random-v2.hdf5"
    p.write_text("<html>404 not found</html>")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        load_dataset(p)


def test_truncated_npz(tmp_path):
    p = tmp_path / "hopper_random-v2.npz"
    np.savez(p, **_hopper_raw(n=2000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="npz"):
        load_dataset(p)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nope.hdf5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("some/dir/hopper_random-v2.hdf5")


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="Did you mean 'halfcheetah-medium-v2'"):
        load_dataset("halfchetah-medium-v2")


def test_env_argument_must_match_name(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        load_dataset("hopper-random-v2", env="walker2d")


# ----------------------------------------------------------------------------- resolution


def test_default_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("D4RL_DATASET_DIR")
    monkeypatch.delenv("EOR_DATA_DIR")
    home = tmp_path / "home"
    assert sources.d4rl_dir() == home / ".d4rl" / "datasets"
    assert sources.eor_data_dir() == home / ".cache" / "eor" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.eor_data_dir() == tmp_path / "xdg" / "eor" / "datasets"


def test_resolution_order_and_logging(tmp_path, caplog):
    name = "hopper-medium-replay-v2"
    d4rl_file = _write_h5(tmp_path / "d4rl" / "hopper_medium_replay-v2.hdf5", _hopper_raw(seed=1))
    eor_file = _write_h5(tmp_path / "eor" / "hopper_medium_replay-v2.hdf5", _hopper_raw(seed=2))
    with caplog.at_level(logging.INFO, logger="eor.data"):
        ds = load_dataset(name)
    assert ds.source == f"D4RL cache:{d4rl_file}" and ds.name == name
    assert any("D4RL cache" in r.getMessage() and r.name == "eor.data" for r in caplog.records)
    expected = qlearning_arrays(_hopper_raw(seed=1))
    np.testing.assert_array_equal(ds.observations, expected["observations"])

    d4rl_file.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eor.data"):
        ds = load_dataset(name)
    assert ds.source == f"eor store:{eor_file}"
    assert any("eor store" in r.getMessage() for r in caplog.records)


def test_not_found_lists_places_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("walker2d-random-v2")
    msg = str(err.value)
    assert str(tmp_path / "d4rl" / "walker2d_random-v2.hdf5") in msg
    assert str(tmp_path / "eor" / "walker2d_random-v2.hdf5") in msg
    assert "Minari" in msg
    assert "eor collect walker2d-random-v2" in msg
    with pytest.raises(FileNotFoundError, match="--policy CHECKPOINT"):
        load_dataset("walker2d-medium-v2")


def test_minari_installed():
    minari = pytest.importorskip(
        "minari", reason="minari (optional extra eor[minari]) is not installed"
    )
    assert callable(minari.list_local_datasets) and callable(minari.load_dataset)
    assert isinstance(sources.minari_local_ids(), list)


def test_read_raw_ignores_infos(tmp_path):
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", _hopper_raw(), dataset="hopper-random-v2")
    raw, attrs = read_raw(p)
    assert set(raw) == {
        "observations",
        "actions",
        "rewards",
        "terminals",
        "timeouts",
        "next_observations",
    }
    assert attrs["dataset"] == "hopper-random-v2"


# ----------------------------------------------------------------------------- buffer


def test_to_buffer_holds_exactly_the_dataset(tmp_path):
    p = _write_h5(tmp_path / "hopper_random-v2.hdf5", _hopper_raw(n=64))
    ds = load_dataset(p)
    buf = ds.to_buffer(seed=3)
    assert len(buf) == len(ds) == buf.capacity
    assert (buf.obs_dim, buf.act_dim) == (S, A)
    batch = buf.sample(len(ds))  # distinct rows: every transition once, in random order
    order = np.argsort(batch["rew"])
    ref = np.argsort(ds.rewards)
    np.testing.assert_array_equal(batch["obs"][order], ds.observations[ref])
    np.testing.assert_array_equal(batch["act"][order], ds.actions[ref])
    np.testing.assert_array_equal(batch["next_obs"][order], ds.next_observations[ref])
    np.testing.assert_array_equal(batch["done"][order], ds.terminals[ref])


@pytest.mark.parametrize("with_next", [True, False])
def test_qlearning_matches_row_loop_reference(with_next):
    """Random episode layouts (terminals and timeouts anywhere, including the last row)."""
    from eor.ref.data import qlearning_loop_ref

    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 200):
        raw = {k: v[:n].copy() for k, v in _hopper_raw(200, with_next, seed=n).items()}
        raw["terminals"] = rng.random(n) < 0.1
        raw["timeouts"] = (rng.random(n) < 0.1) & ~raw["terminals"]
        raw["timeouts"][-1] = rng.random() < 0.5
        got, ref = qlearning_arrays(raw), qlearning_loop_ref(raw)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{key} n={n}")


def test_qlearning_copy_semantics():
    raw = _hopper_raw(n=40)
    raw["timeouts"][:] = False
    q = qlearning_arrays(raw)  # default: never shares memory with the input
    assert not any(np.shares_memory(q[k], raw[k]) for k in ("observations", "actions"))
    shared = qlearning_arrays(raw, copy=False)  # nothing dropped, already float32: no copy
    assert np.shares_memory(shared["observations"], raw["observations"])
    raw64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in raw.items()}
    q64 = qlearning_arrays(raw64, copy=False)
    assert q64["observations"].dtype == np.float32
    np.testing.assert_array_equal(q64["observations"], raw["observations"])
