"""Checkpoint helpers: atomic writes, lookup and validation, buffer bytes, RNG round trips."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import eor
from eor.agent.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    buffer_from_bytes,
    buffer_to_bytes,
    capture_rng,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
)


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "latest.pt"
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "x": 1}, path)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "x": 2}, path)
    assert load_checkpoint(path)["x"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "x": 1}, path)

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "x": Unpicklable()}, path)
    assert load_checkpoint(path)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_resolve_and_validate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resolve_checkpoint(run)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(run / "x.pt")
    atomic_torch_save({"format": CHECKPOINT_FORMAT}, run / "checkpoints" / "latest.pt")
    assert resolve_checkpoint(run) == run / "checkpoints" / "latest.pt"
    assert resolve_checkpoint(run / "checkpoints") == run / "checkpoints" / "latest.pt"
    torch.save({"something": "else"}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an eor agent checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "corrupt.pt")


def test_buffer_bytes_round_trip() -> None:
    buf = eor.ReplayBuffer(8, 3, 2, seed=4)
    rng = np.random.default_rng(0)
    n = 11  # wraps around the FIFO
    buf.add(
        rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=n),
        rng.normal(size=(n, 3)), np.zeros(n),
    )  # fmt: skip
    buf.sample(3)  # advance the generator
    copy = buffer_from_bytes(buffer_to_bytes(buf))
    assert len(copy) == len(buf) == 8 and copy.capacity == 8
    for key, value in buf.fields().items():
        np.testing.assert_array_equal(copy.fields()[key], value)
    drawn, drawn_copy = buf.sample(5), copy.sample(5)  # same generator state -> same draws
    for key, value in drawn.items():
        np.testing.assert_array_equal(drawn_copy[key], value)


def test_rng_round_trip() -> None:
    gen = torch.Generator().manual_seed(3)
    state = capture_rng(gen)
    a = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))  # noqa: NPY002
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    random.seed(99)
    gen.manual_seed(99)
    restore_rng(state, gen)
    b = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert torch.equal(a[3], b[3])
