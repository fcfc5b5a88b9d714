"""eor.data.minari_io with the real `minari` package: the D4RL -> Minari name table, reading
(every step of every episode, docs/algorithm.md §1.2), export of eor's own data and the round
trip, bad input. Nothing is downloaded: Minari's store points into tmp_path."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from eor.cli import main
from eor.data import (
    DatasetError,
    collect,
    load_dataset,
    load_file,
    minari_io,
    qlearning_arrays,
    read_raw,
    sources,
)
from eor.data.export import export_dataset
from eor.envs import all_dataset_names, get_env

minari = pytest.importorskip(
    "minari", reason="minari (optional extra eor[minari], in the dev extras) is not installed"
)

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Every dataset folder, Minari's included, points into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "eor"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> dict[str, Path]:
    """Real simulator data made by `eor collect`: halfcheetah never terminates, so 2300 rows
    are two 1000-step episodes ending in timeouts plus an unfinished 300-row one; random
    hopper falls over, so its episodes end in terminals; 200 ant rows are one unfinished
    episode."""
    folder = tmp_path_factory.mktemp("collected")
    return {
        "halfcheetah": collect(
            "halfcheetah-random-v2", steps=2300, seed=0, out=folder / "halfcheetah_random-v2.hdf5"
        ),
        "hopper": collect(
            "hopper-random-v2", steps=400, seed=1, out=folder / "hopper_random-v2.hdf5"
        ),
        # 111 columns with real contact forces (Ant-v4, use_contact_forces=True).
        "ant": collect("ant-random-v2", steps=200, seed=2, out=folder / "ant_random-v2.hdf5"),
    }


def _rows(raw: dict[str, np.ndarray], keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The raw rows (or those where keep) as float32 arrays in Dataset's keys."""
    out = {k: np.asarray(raw[k], np.float32).reshape(len(raw["rewards"]), -1) for k in KEYS}
    out["rewards"] = out["rewards"].reshape(-1)
    out["terminals"] = out["terminals"].reshape(-1)
    return out if keep is None else {k: v[keep] for k, v in out.items()}


def _assert_same(ds, expected: dict[str, np.ndarray]) -> None:
    for key in KEYS:
        got = getattr(ds, key)
        assert got.dtype == np.float32 and got.flags.c_contiguous, key
        np.testing.assert_array_equal(got, expected[key], err_msg=key)


# ----------------------------------------------------------------------------- names


def test_minari_id_table():
    """Minari's MuJoCo suite (mujoco/{env}/{simple,medium,expert}-v0) matches D4RL's medium and
    expert only; every other D4RL kind has no Minari counterpart."""
    expected = {}
    for env in ("halfcheetah", "hopper", "walker2d", "ant"):
        for kind in ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay"):
            mid = f"mujoco/{env}/{kind}-v0" if kind in ("medium", "expert") else None
            expected[f"{env}-{kind}-v2"] = mid
    assert {n: sources.minari_id(n) for n in all_dataset_names()} == expected
    assert minari_io.is_minari_id("mujoco/hopper/medium-v0")
    assert minari_io.is_minari_id("eor/hopper/random-v0")
    for text in ("hopper-medium-v2", "data/hopper_medium-v2.hdf5", "mujoco/hopper/medium"):
        assert not minari_io.is_minari_id(text)


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("env", ["halfcheetah", "hopper", "ant"])
def test_round_trip_of_collected_data(collected, env):
    """eor collect -> export -> minari.load_dataset -> eor's loader: every row of the file, in
    order; eor's D4RL-layout loader gives the same rows minus those flagged `timeouts`."""
    path = collected[env]
    raw, _ = read_raw(path)
    n = len(raw["rewards"])
    spec = get_env(env)
    mds = export_dataset(path, f"eor/{env}/random-v0")

    # minari's own view of what was written.
    timeouts, terminals = raw["timeouts"].astype(bool), raw["terminals"].astype(bool)
    n_episodes = int(timeouts.sum() + terminals.sum()) + int(not (timeouts | terminals)[-1])
    again = minari.load_dataset(f"eor/{env}/random-v0")
    assert (again.total_steps, again.total_episodes) == (n, n_episodes)
    assert again.env_spec.id == spec.gym_id and again.env_spec.kwargs == spec.gym_kwargs
    assert (mds.total_steps, mds.total_episodes) == (n, n_episodes)
    start = 0
    for ep in again.iterate_episodes():
        t = len(ep.rewards)
        np.testing.assert_array_equal(ep.observations[:-1], raw["observations"][start : start + t])
        np.testing.assert_array_equal(ep.observations[-1], raw["next_observations"][start + t - 1])
        assert ep.terminations[:-1].sum() == 0 and ep.truncations[:-1].sum() == 0
        assert ep.terminations[-1] != ep.truncations[-1]  # every episode ends one way
        assert ep.terminations[-1] == terminals[start + t - 1]
        assert all(again.observation_space.contains(o) for o in ep.observations[:: max(1, t // 5)])
        assert all(again.action_space.contains(a) for a in ep.actions[:: max(1, t // 5)])
        start += t
    assert start == n
    returns = np.array([5.0, 3000.0])
    np.testing.assert_allclose(
        minari.get_normalized_score(again, returns) * 100, spec.normalized_score(returns)
    )

    exact = _rows(raw)
    ds = load_dataset(f"eor/{env}/random-v0")
    assert ds.source == f"minari:eor/{env}/random-v0" and ds.env.name == env and len(ds) == n
    _assert_same(ds, exact)
    assert ds.checksum is not None and ds.metadata["episodes"] == n_episodes

    d4rl = load_file(path)
    _assert_same(d4rl, _rows(raw, keep=~timeouts))
    assert len(d4rl) == n - int(timeouts.sum())
    if env == "halfcheetah":
        assert timeouts.sum() == 2 and terminals.sum() == 0  # the case the relation is about


def test_minari_episodes_give_every_step_unlike_qlearning_dataset():
    """Hand-made Minari episodes: a terminated one, a truncated one and one truncated after
    one step. Every step is a transition whose successor is the episode's next observation;
    the D4RL layout of the same steps (obs[i + 1] as next state, timeouts flags) loses the
    truncated steps."""
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    spec = get_env("hopper")
    lengths, ends = (4, 3, 1), ("term", "trunc", "trunc")
    buffers = []
    for i, (t, end) in enumerate(zip(lengths, ends, strict=True)):
        term = np.zeros(t, bool)
        trunc = np.zeros(t, bool)
        (term if end == "term" else trunc)[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=rng.standard_normal((t + 1, spec.obs_dim)),
                actions=rng.uniform(-1, 1, (t, spec.act_dim)).astype(np.float32),
                rewards=rng.standard_normal(t),
                terminations=term,
                truncations=trunc,
            )
        )
    with minari_io._quiet_minari():
        minari.create_dataset_from_buffers(
            "test/hopper/hand-v0", buffers, env=spec.gym_id, author="t", description="d"
        )
    ds = load_dataset("test/hopper/hand-v0")
    assert len(ds) == sum(lengths)
    j = 0
    for b in buffers:
        for t in range(len(b.rewards)):
            np.testing.assert_array_equal(ds.observations[j], b.observations[t].astype(np.float32))
            np.testing.assert_array_equal(
                ds.next_observations[j], b.observations[t + 1].astype(np.float32)
            )
            np.testing.assert_array_equal(ds.actions[j], b.actions[t])
            assert ds.rewards[j] == np.float32(b.rewards[t])
            assert ds.terminals[j] == float(b.terminations[t])  # never 1 at a truncation
            j += 1
    assert ds.terminals.tolist() == [0, 0, 0, 1, 0, 0, 0, 0]

    # The same steps in D4RL's layout, as qlearning_dataset sees them: rows without
    # next_observations, episodes back to back, truncations as timeouts.
    d4rl_raw = {
        "observations": np.concatenate([b.observations[:-1] for b in buffers]),
        "actions": np.concatenate([b.actions for b in buffers]),
        "rewards": np.concatenate([b.rewards for b in buffers]),
        "terminals": np.concatenate([b.terminations for b in buffers]),
        "timeouts": np.concatenate([b.truncations for b in buffers]),
    }
    q = qlearning_arrays(d4rl_raw)
    # Rows 6 and 7 (the truncated last steps) are dropped, and row 7 would be the last row
    # anyway; every kept row's next state agrees with Minari's except the terminal row 3,
    # whose obs[4] is the next episode's first state (masked by done = 1).
    kept = [0, 1, 2, 3, 4, 5]
    assert len(q["rewards"]) == len(kept)
    np.testing.assert_array_equal(q["observations"], ds.observations[kept])
    same_next = [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(
        q["next_observations"][[0, 1, 2, 4, 5]], ds.next_observations[same_next]
    )
    assert not np.array_equal(q["next_observations"][3], ds.next_observations[3])


def test_d4rl_name_resolves_to_minari(collected, tmp_path, caplog):
    """hopper-medium-v2 -> the local mujoco/hopper/medium-v0 (here eor's own data exported
    under that id); D4RL's cache still comes first; names without a Minari counterpart say so."""
    path = collected["hopper"]
    raw, _ = read_raw(path)
    export_dataset(path, "mujoco/hopper/medium-v0", env="hopper")
    with caplog.at_level(logging.INFO, logger="eor.data"):
        ds = load_dataset("hopper-medium-v2")
    assert ds.source == "minari:mujoco/hopper/medium-v0" and ds.name == "hopper-medium-v2"
    assert any("mujoco/hopper/medium-v0" in r.getMessage() for r in caplog.records)
    _assert_same(ds, _rows(raw))

    d4rl = tmp_path / "d4rl" / "hopper_medium-v2.hdf5"
    d4rl.parent.mkdir(parents=True)
    d4rl.write_bytes(path.read_bytes())
    assert load_dataset("hopper-medium-v2").source == f"D4RL cache:{d4rl}"

    with pytest.raises(FileNotFoundError, match="mujoco/hopper/expert-v0"):
        load_dataset("hopper-expert-v2")
    with pytest.raises(FileNotFoundError, match="Minari has no counterpart of hopper-random-v2"):
        load_dataset("hopper-random-v2")


def test_minari_dataset_folder_as_path(collected):
    raw, _ = read_raw(collected["hopper"])
    mds = export_dataset(collected["hopper"], "eor/hopper/random-v0")
    folder = minari_io.minari_dataset_path("eor/hopper/random-v0")
    for path in (folder, folder / "data", str(folder)):
        ds = load_dataset(path)
        assert ds.source == f"minari:{Path(path)}"
        _assert_same(ds, _rows(raw))
    assert mds.total_steps == len(raw["rewards"])


def test_export_splits_at_unflagged_boundaries(tmp_path):
    """A row whose next_observations is not the next row's observation ends an episode even
    without a flag; that episode ends truncated, and the round trip is still exact."""
    rng = np.random.default_rng(3)
    spec = get_env("hopper")
    n = 9
    obs = rng.standard_normal((n + 1, spec.obs_dim)).astype(np.float32)
    raw = {
        "observations": obs[:-1].copy(),
        "next_observations": obs[1:].copy(),
        "actions": rng.uniform(-1, 1, (n, spec.act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    raw["next_observations"][3] += 1.0  # a boundary after row 3 without a flag
    raw["terminals"][6] = True
    starts, stops = minari_io.episode_bounds(raw)
    assert starts.tolist() == [0, 4, 7] and stops.tolist() == [4, 7, 9]
    path = tmp_path / "hopper_random-v2.hdf5"
    with h5py.File(path, "w") as f:
        for k, v in raw.items():
            f.create_dataset(k, data=v)
    export_dataset(path, "eor/hopper/cut-v0")
    eps = list(minari.load_dataset("eor/hopper/cut-v0").iterate_episodes())
    assert [len(e.rewards) for e in eps] == [4, 3, 2]
    assert [(bool(e.terminations[-1]), bool(e.truncations[-1])) for e in eps] == [
        (False, True),
        (True, False),
        (False, True),
    ]
    _assert_same(load_dataset("eor/hopper/cut-v0"), _rows(raw))


# ----------------------------------------------------------------------------- command line


def test_cli_export_list_and_overwrite(collected):
    runner = CliRunner()
    path = str(collected["hopper"])
    args = ["datasets", "export", path, "--format", "minari", "--out", "eor/hopper/random-v0"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote Minari dataset eor/hopper/random-v0" in result.output
    assert "Hopper-v4" in result.output

    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    replaced = runner.invoke(main, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output

    listed = runner.invoke(main, ["datasets", "list"])
    assert listed.exit_code == 0 and "eor/hopper/random-v0" in listed.output

    bad = runner.invoke(main, ["datasets", "export", path, "--out", "not-an-id"])
    assert bad.exit_code != 0 and "--out" in bad.output and "not a Minari id" in bad.output
    fmt = runner.invoke(
        main, ["datasets", "export", path, "--format", "parquet", "--out", "a/b-v0"]
    )
    assert fmt.exit_code != 0 and "--format" in fmt.output


# ----------------------------------------------------------------------------- bad input


def test_unknown_minari_id_is_not_downloaded():
    with pytest.raises(FileNotFoundError, match=r"dataset_id 'mujoco/hopper/simple-v0'.*never"):
        load_dataset("mujoco/hopper/simple-v0")
    with pytest.raises(ValueError, match="dataset_id 'hopper' is not a Minari id"):
        minari_io.load_minari("hopper")


def test_non_mujoco_minari_dataset_is_refused():
    from minari.data_collector import EpisodeBuffer

    buf = EpisodeBuffer(
        id=0,
        observations=np.zeros((3, 4), np.float32),
        actions=np.zeros(2, np.int64),
        rewards=np.ones(2),
        terminations=np.array([False, True]),
        truncations=np.array([False, False]),
    )
    with minari_io._quiet_minari():
        minari.create_dataset_from_buffers(
            "test/cartpole/x-v0", [buf], env="CartPole-v1", author="t", description="d"
        )
    with pytest.raises(DatasetError, match="CartPole-v1, which is not one of eor's MuJoCo envs"):
        load_dataset("test/cartpole/x-v0")


def test_minari_ant_v5_width_is_refused():
    """Ant-v5 (Minari's ant datasets' env) reports 105 observation columns, eor's ant 111."""
    from minari.data_collector import EpisodeBuffer

    buf = EpisodeBuffer(
        id=0,
        observations=np.zeros((3, 105)),
        actions=np.zeros((2, 8), np.float32),
        rewards=np.ones(2),
        terminations=np.array([False, True]),
        truncations=np.array([False, False]),
    )
    with minari_io._quiet_minari():
        minari.create_dataset_from_buffers(
            "test/ant/x-v0", [buf], env="Ant-v5", author="t", description="d"
        )
    with pytest.raises(DatasetError, match=r"Ant-v5.*ant \(Ant-v4\) needs shape \(111,\)"):
        load_dataset("test/ant/x-v0")


def test_env_mismatch_and_missing_minari(collected, monkeypatch):
    export_dataset(collected["hopper"], "eor/hopper/random-v0")
    with pytest.raises(ValueError, match="env='walker2d' does not match"):
        load_dataset("eor/hopper/random-v0", env="walker2d")
    monkeypatch.setattr(sources, "minari_module", lambda: None)
    with pytest.raises(ImportError, match=r"pip install 'eor\[minari\]'"):
        load_dataset("eor/hopper/random-v0")
    with pytest.raises(ImportError, match=r"pip install 'eor\[minari\]'"):
        export_dataset(collected["hopper"], "eor/hopper/other-v0")


def test_corrupt_minari_folders(collected, tmp_path):
    export_dataset(collected["hopper"], "eor/hopper/random-v0")
    data = minari_io.minari_dataset_path("eor/hopper/random-v0") / "data"
    main_file = data / "main_data.hdf5"
    blob = main_file.read_bytes()
    main_file.write_bytes(blob[: len(blob) // 3])  # a truncated copy
    with pytest.raises(DatasetError, match=r"minari:eor/hopper/random-v0.*corrupt"):
        load_dataset("eor/hopper/random-v0")

    main_file.write_bytes(blob)
    meta = json.loads((data / "metadata.json").read_text())
    (data / "metadata.json").write_text(json.dumps(meta)[:40])  # cut mid-way
    with pytest.raises(DatasetError, match="corrupt or incomplete"):
        load_dataset("eor/hopper/random-v0")
    (data / "metadata.json").unlink()
    with pytest.raises(DatasetError, match="not a Minari dataset folder"):
        load_dataset(data.parent)

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(DatasetError, match=f"path '{plain}' is not a Minari dataset folder"):
        load_dataset(plain)


def test_export_bad_input(collected, tmp_path):
    with pytest.raises(ValueError, match="dataset_id 'nope' is not a Minari id"):
        export_dataset(collected["hopper"], "nope")
    with pytest.raises(FileNotFoundError, match="name_or_path: dataset file"):
        export_dataset(tmp_path / "missing.hdf5", "eor/hopper/x-v0")
    with pytest.raises(FileNotFoundError, match="eor collect walker2d-random-v2"):
        export_dataset("walker2d-random-v2", "eor/walker2d/x-v0")

    raw, _ = read_raw(collected["hopper"])
    del raw["next_observations"]
    old = tmp_path / "hopper_random-v2.hdf5"
    with h5py.File(old, "w") as f:
        for k, v in raw.items():
            f.create_dataset(k, data=v)
    with pytest.raises(DatasetError, match="has no next_observations"):
        export_dataset(old, "eor/hopper/x-v0")
    assert not minari_io.minari_dataset_path("eor/hopper/x-v0").exists()

    export_dataset(collected["hopper"], "mujoco/hopper/medium-v0")
    with pytest.raises(ValueError, match="already the Minari dataset mujoco/hopper/medium-v0"):
        export_dataset("hopper-medium-v2", "eor/hopper/y-v0")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_dataset(collected["hopper"], "mujoco/hopper/medium-v0")


def test_export_emits_no_warnings_of_its_own(collected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_dataset(collected["hopper"], "eor/hopper/quiet-v0")


@pytest.fixture
def interrupt_export(monkeypatch):
    """switch(): the next exports stop with KeyboardInterrupt right after minari wrote the
    dataset's folder (after create_dataset_from_buffers); switch(False) undoes it."""
    real = minari.create_dataset_from_buffers

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    def switch(on: bool = True) -> None:
        monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted if on else real)

    return switch


def test_interrupted_export_leaves_no_dataset(collected, interrupt_export):
    """An export stopped after minari wrote its folder removes that folder, so no half-written
    dataset is left."""
    interrupt_export()
    with pytest.raises(KeyboardInterrupt):
        export_dataset(collected["hopper"], "eor/hopper/cut-short-v0")
    assert not minari_io.minari_dataset_path("eor/hopper/cut-short-v0").exists()


def test_failed_overwrite_keeps_the_old_dataset(collected, interrupt_export):
    """--overwrite replaces a dataset only once the new one is written and checked: an export
    interrupted midway puts the old one back, whole."""
    export_dataset(collected["hopper"], "eor/hopper/keep-v0")
    folder = minari_io.minari_dataset_path("eor/hopper/keep-v0")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    interrupt_export()
    with pytest.raises(KeyboardInterrupt):
        # another author: the new dataset's metadata differ from the old one's
        export_dataset(collected["hopper"], "eor/hopper/keep-v0", overwrite=True, author="new")
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the backup went back
    interrupt_export(False)
    export_dataset(collected["hopper"], "eor/hopper/keep-v0", overwrite=True, author="new")
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
    assert minari.load_dataset("eor/hopper/keep-v0").storage.metadata["author"] == {"new"}


def test_export_by_d4rl_name(collected, tmp_path):
    """A D4RL name is resolved like load_dataset does (here: eor's store); env must agree."""
    store = tmp_path / "eor" / "hopper_random-v2.hdf5"
    store.parent.mkdir(parents=True)
    store.write_bytes(collected["hopper"].read_bytes())
    with pytest.raises(
        ValueError, match="env='walker2d' does not match dataset 'hopper-random-v2'"
    ):
        export_dataset("hopper-random-v2", "local/hopper/random-v0", env="walker2d")
    mds = export_dataset("hopper-random-v2", "local/hopper/random-v0")
    assert mds.env_spec.id == "Hopper-v4"
    raw, _ = read_raw(store)
    _assert_same(load_dataset("local/hopper/random-v0"), _rows(raw))
