"""eor.ReplayBuffer: bad input, save/load (round trip, truncated and corrupt files) and threads."""

from __future__ import annotations

import copy
import gc
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import eor
from eor.buffer import FIELDS, BufferFileError


def filled(
    capacity: int = 50, n: int = 80, s: int = 3, a: int = 2, seed: int = 0
) -> eor.ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = eor.ReplayBuffer(capacity, s, a, seed=seed)
    buf.add(
        rng.standard_normal((n, s)),
        rng.standard_normal((n, a)),
        rng.standard_normal(n),
        rng.standard_normal((n, s)),
        (rng.random(n) < 0.5).astype(np.float32),
    )
    return buf


def good_rows(n: int = 4, s: int = 3, a: int = 2) -> dict:
    return {
        "obs": np.zeros((n, s)),
        "act": np.zeros((n, a)),
        "rew": np.zeros(n),
        "next_obs": np.zeros((n, s)),
        "done": np.zeros(n),
    }


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 3, 2), "capacity must be >= 1"),
        ((-5, 3, 2), "capacity must be >= 1"),
        ((10, 0, 2), "obs_dim must be >= 1"),
        ((10, 3, -1), "act_dim must be >= 0"),
        ((10, 3, 2, -1), "seed must be an int in"),
        ((10, 3, 2, 2**64), "seed must be an int in"),
    ],
)
def test_constructor_rejects_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        eor.ReplayBuffer(*args)


def test_impossible_capacity_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="overflows the address space"):
        eor.ReplayBuffer(2**62, 17, 6)
    with pytest.raises(MemoryError):
        eor.ReplayBuffer(2**50, 17, 6)  # fits in 64 bits, not in any address space


def test_constructor_rejects_non_int_seed() -> None:
    with pytest.raises(TypeError, match="seed must be an int"):
        eor.ReplayBuffer(10, 3, 2, seed=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("obs", np.zeros((4, 2)), r"obs must have shape \[n, 3\], got \[4, 2\]"),
        ("obs", np.zeros(4), r"obs must have shape \[n, 3\], got \[4\]"),
        ("act", np.zeros((4, 3)), r"act must have shape \[n, 2\], got \[4, 3\]"),
        ("rew", np.zeros((4, 2)), r"rew must have shape \[n\] \(or \[n, 1\]\), got \[4, 2\]"),
        ("next_obs", np.zeros((4, 3, 1)), r"next_obs must have shape \[n, 3\]"),
        ("done", np.zeros((2, 2, 2)), r"done must have shape \[n\]"),
        ("rew", np.zeros(5), "rew has 5 rows but obs has 4"),
        ("next_obs", np.zeros((3, 3)), "next_obs has 3 rows but obs has 4"),
    ],
)
def test_add_rejects_wrong_shapes_naming_the_field(
    field: str, value: np.ndarray, match: str
) -> None:
    buf = eor.ReplayBuffer(10, 3, 2)
    rows = good_rows()
    rows[field] = value
    with pytest.raises(ValueError, match=match):
        buf.add(*(rows[k] for k in FIELDS))
    assert len(buf) == 0


def test_add_rejects_non_numeric() -> None:
    buf = eor.ReplayBuffer(10, 3, 2)
    rows = good_rows()
    rows["act"] = np.array([["a", "b"]] * 4)
    with pytest.raises((TypeError, ValueError), match="act"):
        buf.add(*(rows[k] for k in FIELDS))


def test_add_accepts_column_vectors_lists_and_other_dtypes() -> None:
    buf = eor.ReplayBuffer(10, 3, 2)
    n = buf.add(
        [[1, 2, 3]] * 2, np.ones((2, 2), np.int64), np.ones((2, 1)), np.ones((2, 3)), [True, False]
    )
    assert n == 2
    np.testing.assert_array_equal(buf.fields()["obs"], [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_array_equal(buf.fields()["done"], [1, 0])
    assert buf.add(*(good_rows(0)[k] for k in FIELDS)) == 0  # an empty add is fine
    assert len(buf) == 2


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_rejected_with_count_or_dropped(field: str, bad: float) -> None:
    buf = eor.ReplayBuffer(10, 3, 2)
    rows = {k: v + np.arange(6).reshape(-1, *([1] * (v.ndim - 1))) for k, v in good_rows(6).items()}
    rows[field][[1, 4]] = bad
    with pytest.raises(ValueError, match="2 of 6 rows contain NaN or inf"):
        buf.add(*(rows[k] for k in FIELDS))
    assert len(buf) == 0  # nothing stored on error
    assert buf.add(*(rows[k] for k in FIELDS), drop_nonfinite=True) == 4
    np.testing.assert_array_equal(buf.fields()["obs"][:, 0], [0, 2, 3, 5])


def test_sample_errors() -> None:
    empty = eor.ReplayBuffer(10, 3, 2)
    with pytest.raises(ValueError, match="the buffer is empty"):
        empty.sample(1)
    with pytest.raises(ValueError, match="the buffer is empty"):
        empty.sample_obs(1)
    with pytest.raises(ValueError, match="the buffer is empty"):
        empty.sample(1, replace=True)
    buf = filled(capacity=50, n=20)
    with pytest.raises(
        ValueError, match="cannot draw 21 distinct transitions from a buffer holding 20"
    ):
        buf.sample(21)
    with pytest.raises(ValueError, match="cannot draw 21 distinct"):
        buf.sample_obs(21)
    assert buf.sample(21, replace=True)["obs"].shape == (21, 3)  # with replacement it is fine
    with pytest.raises(ValueError, match="batch_size must be >= 0, got -1"):
        buf.sample(-1)
    assert buf.sample(0)["obs"].shape == (0, 3)
    with pytest.raises(IndexError, match="index 20 at position 1 is outside"):
        buf.gather([0, 20])
    with pytest.raises(IndexError, match="index -1"):
        buf.gather([-1])


def test_sample_mixed_errors() -> None:
    a, b = filled(n=20), filled(n=30, seed=1)
    with pytest.raises(ValueError, match="2 buffers but 1 counts"):
        eor.sample_mixed([a, b], [3])
    with pytest.raises(ValueError, match="buffers must not be empty"):
        eor.sample_mixed([], [])
    with pytest.raises(
        ValueError, match=r"sample_mixed: buffer 0: cannot draw 25 distinct .* holding 20"
    ):
        eor.sample_mixed([a, b], [25, 5])
    with pytest.raises(ValueError, match=r"sample_mixed: buffer 1: the buffer is empty"):
        eor.sample_mixed([a, eor.ReplayBuffer(5, 3, 2)], [2, 1])
    with pytest.raises(ValueError, match=r"counts\[1\] must be >= 0"):
        eor.sample_mixed([a, b], [2, -1])
    with pytest.raises(TypeError, match=r"buffers\[1\] must be an eor.ReplayBuffer, got dict"):
        eor.sample_mixed([a, {}], [2, 1])  # type: ignore[list-item]
    with pytest.raises(
        ValueError, match="buffer 1 has obs_dim 4, act_dim 2 but buffer 0 has obs_dim 3"
    ):
        eor.sample_mixed([a, eor.ReplayBuffer(5, 4, 2)], [2, 1])


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (
            "obs",
            np.empty((8, 3), np.float64),
            r"out\['obs'\] must be a writeable C-contiguous float32 array of shape \[8, 3\], got float64",
        ),
        (
            "act",
            np.empty((7, 2), np.float32),
            r"out\['act'\] .* shape \[8, 2\], got float32 array of shape \[7, 2\]",
        ),
        ("rew", np.empty((8, 2), np.float32), r"out\['rew'\] .* shape \[8\]"),
        ("next_obs", np.empty((3, 8), np.float32).T, r"out\['next_obs'\]"),
        ("done", [0.0] * 8, r"out\['done'\] .* got list"),
        ("done", None, "out has no entry 'done'"),
    ],
)
def test_out_is_validated(key: str, value: object, match: str) -> None:
    buf = filled()
    out = buf.empty_batch(8)
    if value is None:
        del out[key]
    else:
        out[key] = value  # type: ignore[assignment]
    with pytest.raises(ValueError, match=match):
        buf.sample(8, out=out)


def test_read_only_out_is_rejected() -> None:
    buf = filled()
    out = buf.empty_batch(4)
    out["obs"].setflags(write=False)
    with pytest.raises(ValueError, match=r"\(read-only\)"):
        buf.sample(4, out=out)


def test_fields_are_read_only_views_that_keep_the_buffer_alive() -> None:
    buf = filled(capacity=50, n=20)
    views = buf.fields()
    obs = buf.fields()["obs"].copy()
    for k in FIELDS:
        assert not views[k].flags.writeable, k
        with pytest.raises(ValueError):
            views[k][0] = 1.0
        with pytest.raises(ValueError):  # and cannot be made writeable
            views[k].setflags(write=True)
    del buf
    gc.collect()
    np.testing.assert_array_equal(views["obs"], obs)  # still valid: the view owns a reference


def test_load_builds_a_new_buffer_and_views_keep_their_memory(tmp_path: Path) -> None:
    """`load` once filled a 1x1x1 buffer in place (`_load_into`), which freed the memory under
    any live `fields()` view of that buffer (reading the view then crashed). Now a buffer's shape
    and memory are fixed for its life: no method loads into an existing buffer, and a view reads
    valid memory whatever happens to its buffer."""
    buf = filled(capacity=50, n=20, seed=1)
    views = buf.fields()
    want = {k: v.copy() for k, v in views.items()}
    path = tmp_path / "big.eorbuf"
    filled(capacity=5000, n=3000, s=4, a=1, seed=2).save(path)
    loaded = eor.ReplayBuffer.load(path)
    assert (loaded.capacity, loaded.obs_dim, loaded.act_dim, len(loaded)) == (5000, 4, 1, 3000)
    assert (buf.capacity, buf.obs_dim, buf.act_dim, len(buf)) == (50, 3, 2, 20)
    for obj in (buf, buf._cpp, eor._core.ReplayBufferCore):
        assert [n for n in dir(obj) if "load" in n.lower()] in ([], ["load"]), obj
    del buf
    gc.collect()
    for k in FIELDS:
        np.testing.assert_array_equal(views[k], want[k], err_msg=k)


def test_load_returns_the_callers_class(tmp_path: Path) -> None:
    class MyBuffer(eor.ReplayBuffer):
        pass

    filled().save(tmp_path / "b.eorbuf")
    assert type(MyBuffer.load(tmp_path / "b.eorbuf")) is MyBuffer
    assert type(eor.ReplayBuffer.load(tmp_path / "b.eorbuf")) is eor.ReplayBuffer


@pytest.mark.parametrize("how", [pickle.dumps, copy.copy, copy.deepcopy])
def test_pickling_or_copying_is_refused(how: Callable[[object], object]) -> None:
    with pytest.raises(TypeError, match=r"cannot be pickled or copied .* use buf.save\(path\)"):
        how(filled())


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"bit_generator": "pcg64", "state": [1, 2, 3, 4]}, "bit_generator 'xoshiro256"),
        (
            {"bit_generator": "xoshiro256**", "state": [1, 2, 3]},
            "expected 4 unsigned 64-bit words, got 3",
        ),
        ({"bit_generator": "xoshiro256**", "state": [0, 0, 0, 0]}, "all-zero"),
        ({"bit_generator": "xoshiro256**", "state": [1, 2, 3, -4]}, "in \\[0, 2\\*\\*64\\)"),
        ([1, 2, 3, 4], "expected a dict from get_state"),
    ],
)
def test_set_state_rejects_bad_states(state: object, match: str) -> None:
    buf = filled()
    before = buf.get_state()
    with pytest.raises(ValueError, match=match):
        buf.set_state(state)  # type: ignore[arg-type]
    assert buf.get_state() == before


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(("capacity", "n"), [(50, 0), (50, 20), (50, 50), (50, 137), (9000, 8500)])
def test_save_load_round_trip(tmp_path: Path, capacity: int, n: int) -> None:
    buf = filled(capacity=capacity, n=n, seed=3) if n else eor.ReplayBuffer(capacity, 3, 2, seed=3)
    if n:
        buf.sample(5)  # move the generator off its seed state
    path = tmp_path / "buf.eorbuf"
    buf.save(path)
    loaded = eor.ReplayBuffer.load(path)
    assert isinstance(loaded, eor.ReplayBuffer)
    for attr in ("capacity", "obs_dim", "act_dim", "position", "seed", "row_width"):
        assert getattr(loaded, attr) == getattr(buf, attr), attr
    assert len(loaded) == len(buf)
    assert loaded.get_state() == buf.get_state()
    for k in FIELDS:
        np.testing.assert_array_equal(loaded.fields()[k], buf.fields()[k])
    if n:  # the same future: samples and further adds behave identically
        for b in (buf, loaded):
            b.add(np.ones((3, 3)), np.ones((3, 2)), np.ones(3), np.ones((3, 3)), np.ones(3))
        assert loaded.position == buf.position
        for k in FIELDS:
            np.testing.assert_array_equal(loaded.sample(10)[k], buf.sample(10)[k])
    assert not (tmp_path / "buf.eorbuf.tmp").exists()


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no replay buffer file"):
        eor.ReplayBuffer.load(tmp_path / "nope.eorbuf")


def saved_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good.eorbuf"
    filled(capacity=40, n=60).save(path)
    return path.read_bytes()


@pytest.mark.parametrize("keep", [0, 7, 119, 120, 121, 500, -4, -1])
def test_truncated_file_gives_clear_error(tmp_path: Path, keep: int) -> None:
    data = saved_bytes(tmp_path)
    path = tmp_path / "cut.eorbuf"
    path.write_bytes(data[:keep])
    with pytest.raises(BufferFileError, match="truncated"):
        eor.ReplayBuffer.load(path)


def test_extra_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.eorbuf"
    path.write_bytes(saved_bytes(tmp_path) + b"\0\0\0\0")
    with pytest.raises(BufferFileError, match="too long"):
        eor.ReplayBuffer.load(path)


@pytest.mark.parametrize(
    ("offset", "match"),
    [
        (0, "bad magic"),
        (8, "version"),
        (20, "header checksum mismatch"),  # capacity
        (40, "header checksum mismatch"),  # size
        (60, "header checksum mismatch"),  # rng state
        (100, "header checksum mismatch"),  # payload size
        (113, "header checksum mismatch"),  # the checksum itself
        (120, "data checksum mismatch"),  # first stored float
        (-1, "data checksum mismatch"),  # last stored float
        (1000, "data checksum mismatch"),
    ],
)
def test_corrupt_file_gives_clear_error(tmp_path: Path, offset: int, match: str) -> None:
    data = bytearray(saved_bytes(tmp_path))
    data[offset] ^= 0x10
    path = tmp_path / "bad.eorbuf"
    path.write_bytes(bytes(data))
    with pytest.raises(BufferFileError, match=match):
        eor.ReplayBuffer.load(path)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros(100))
    with pytest.raises(BufferFileError, match="not an eor replay buffer file"):
        eor.ReplayBuffer.load(path)
    assert issubclass(BufferFileError, ValueError)


def test_save_to_unwritable_place(tmp_path: Path) -> None:
    with pytest.raises(BufferFileError, match="cannot open"):
        filled().save(tmp_path / "no_such_dir" / "buf.eorbuf")


# ----------------------------------------------------------------------------- threads


def test_concurrent_add_and_sample_never_tear_a_transition() -> None:
    """A writer adds rows whose every field holds the same value v (a fresh v per row); readers
    sample meanwhile (the GIL is released in both). A torn row would mix two values."""
    s, a, capacity = 17, 6, 2000
    buf = eor.ReplayBuffer(capacity, s, a, seed=0)
    mixed_partner = eor.ReplayBuffer(100, s, a, seed=1)

    def rows(start: int, n: int) -> list[np.ndarray]:
        v = np.arange(start, start + n, dtype=np.float32)
        return [
            np.repeat(v[:, None], s, 1),
            np.repeat(v[:, None], a, 1),
            v,
            np.repeat(v[:, None], s, 1),
            v,
        ]

    buf.add(*rows(0, 256))
    mixed_partner.add(*rows(-100, 100))
    stop = threading.Event()
    errors: list[str] = []
    samples = [0, 0]
    started = threading.Event()

    def check(batch: dict) -> None:
        ref = batch["rew"][:, None]
        for k in FIELDS:
            col = batch[k] if batch[k].ndim == 2 else batch[k][:, None]
            if not np.array_equal(col, np.broadcast_to(ref, col.shape)):
                errors.append(f"torn row in {k}")

    def writer() -> None:
        started.wait(timeout=30)  # begin once both readers are sampling
        start = 256
        for _ in range(1000):
            buf.add(*rows(start, 500))
            start += 500
        stop.set()

    def reader(i: int) -> None:
        out = buf.empty_batch(256)
        while not stop.is_set() and not errors:
            check(buf.sample(256))
            check(buf.sample(256, out=out))
            check(eor.sample_mixed([mixed_partner, buf], [12, 244]))
            samples[i] += 3
            if min(samples) > 0:
                started.set()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(i,)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert min(samples) > 0  # both readers ran, and the writer started only after that
    assert len(buf) == capacity


def test_from_arrays_errors() -> None:
    with pytest.raises(ValueError, match=r"from_arrays: obs must have shape \[n, S\]"):
        eor.ReplayBuffer.from_arrays(np.zeros((0, 3)), np.zeros((0, 2)), [], np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match=r"from_arrays: obs must have shape \[n, S\]"):
        eor.ReplayBuffer.from_arrays(
            np.zeros(3), np.zeros((3, 2)), [0] * 3, np.zeros((3, 3)), [0] * 3
        )
    with pytest.raises(ValueError, match=r"from_arrays: act must have shape \[n, A\]"):
        eor.ReplayBuffer.from_arrays(
            np.zeros((3, 3)), np.zeros(3), [0] * 3, np.zeros((3, 3)), [0] * 3
        )
    with pytest.raises(ValueError, match="rew has 2 rows but obs has 3"):
        eor.ReplayBuffer.from_arrays(
            np.zeros((3, 3)), np.zeros((3, 2)), [0] * 2, np.zeros((3, 3)), [0] * 3
        )


def test_sample_mixed_with_replacement_may_exceed_a_buffer() -> None:
    a, b = filled(n=5), filled(n=30, seed=1)
    batch = eor.sample_mixed([a, b], [8, 4], replace=True)
    assert batch["obs"].shape == (12, 3)
    assert np.isin(batch["rew"][:8], a.fields()["rew"]).all()
    assert np.isin(batch["rew"][8:], b.fields()["rew"]).all()


def test_empty_buffer_views_and_gather_out() -> None:
    empty = eor.ReplayBuffer(5, 3, 2)
    assert {k: v.shape[0] for k, v in empty.fields().items()} == dict.fromkeys(FIELDS, 0)
    buf = filled()
    out = buf.empty_batch(3)
    assert buf.gather(np.array([4, 0, 4]), out=out) is out
    np.testing.assert_array_equal(out["rew"], buf.fields()["rew"][[4, 0, 4]])
