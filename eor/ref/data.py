"""Plain references for the dataset code: a row-by-row loop (the specification of docs/algorithm.md §1's
Q-learning form, in the style of D4RL's `qlearning_dataset`) and the bare h5py + numpy load
that `benchmarks/bench_data.py` compares `load_dataset(...).to_buffer()` against."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def qlearning_loop_ref(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """docs/algorithm.md §1, one row at a time: keep row i unless timeouts[i]; next state = next_observations[i]
    if present, else obs[i + 1] (so the last row is dropped); done = terminals[i]."""
    obs = np.asarray(raw["observations"])
    n = obs.shape[0]
    has_next = "next_observations" in raw
    timeouts = raw.get("timeouts")
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("o", "a", "r", "n", "d")}
    for i in range(n):
        if timeouts is not None and bool(np.asarray(timeouts).reshape(n)[i]):
            continue
        if not has_next and i == n - 1:
            continue
        out["o"].append(obs[i])
        out["a"].append(np.asarray(raw["actions"])[i])
        out["r"].append(np.asarray(raw["rewards"]).reshape(n)[i])
        out["n"].append(np.asarray(raw["next_observations"])[i] if has_next else obs[i + 1])
        out["d"].append(np.asarray(raw["terminals"]).reshape(n)[i])
    return {
        "observations": np.array(out["o"], np.float32).reshape(-1, obs.shape[1]),
        "actions": np.array(out["a"], np.float32).reshape(-1, np.shape(raw["actions"])[1]),
        "rewards": np.array(out["r"], np.float32),
        "next_observations": np.array(out["n"], np.float32).reshape(-1, obs.shape[1]),
        "terminals": np.array(out["d"], np.float32),
    }


def load_h5py_numpy_ref(path: str | Path, seed: int = 0):  # noqa: ANN201 - returns a ReplayBuffer
    """The bare minimum: read every key with h5py, mask timeouts with numpy, add to a buffer.
    No validation, no dtype or layout guarantees beyond what the file has."""
    import h5py

    import eor

    with h5py.File(path, "r") as f:
        obs = f["observations"][:]
        act = f["actions"][:]
        rew = f["rewards"][:]
        term = f["terminals"][:]
        tout = f["timeouts"][:]
        nxt = f["next_observations"][:]
    keep = ~tout
    buf = eor.ReplayBuffer(int(keep.sum()), obs.shape[1], act.shape[1], seed=seed)
    buf.add(obs[keep], act[keep], rew[keep], nxt[keep], term[keep].astype(np.float32))
    return buf
