"""eor.fileio's crash-safe writes give the modes open() and mkdir() would (umask applied), not
tempfile's private 0600 / 0700: datasets, model folders and run files stay readable by the group
on shared storage."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eor.data import collect, load_dataset
from eor.data.collector import write_hdf5_atomic
from eor.dynamics import DynamicsConfig, train_to_dir
from eor.fileio import atomic_write_json, umask_mode


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_mode_applies_the_umask(umask_027: None) -> None:
    assert umask_mode() == 0o640 and umask_mode(0o777) == 0o750
    assert os.umask(0o027) == 0o027  # reading it left it as it was


def test_json_and_hdf5_files_get_the_umask_mode(tmp_path: Path, umask_027: None) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    write_hdf5_atomic(tmp_path / "b.hdf5", {"x": np.zeros(3)}, {"k": 1})
    assert _mode(tmp_path / "a.json") == 0o640
    assert _mode(tmp_path / "b.hdf5") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.hdf5"]  # no temp left


def test_a_model_folder_gets_the_umask_mode(tmp_path: Path, umask_027: None) -> None:
    data = collect("hopper-random-v2", steps=300, seed=0, out=tmp_path / "d.hdf5", progress=False)
    assert _mode(data) == 0o640
    config = DynamicsConfig(
        env_name="hopper-random-v2", num_models=2, num_elites=1, hidden_dim=8, epochs=1,
        min_epochs=0, batch_size=64,
    )  # fmt: skip
    model = tmp_path / "model"
    train_to_dir(config, load_dataset(data), model, checkpoint_interval=0)
    assert _mode(model) == 0o750
    assert {p.name: _mode(p) for p in model.iterdir()} == {
        name: 0o640 for name in ("config.json", "meta.json", "metrics.jsonl", "weights-000001.pt")
    }
