"""Datasets: D4RL names and files without d4rl, and data collected from the simulator.

ds = eor.data.load_dataset("halfcheetah-random-v2")   # or a path to .hdf5 / .npz
ds.observations, ds.actions, ds.rewards, ds.next_observations, ds.terminals
buf = ds.to_buffer(seed=0)                            # eor.ReplayBuffer
eor.data.collect("halfcheetah-random-v2", steps=100_000, seed=0)
"""

from __future__ import annotations

from eor.data.collector import collect
from eor.data.dataset import (
    Dataset,
    DatasetError,
    contact_forces_missing,
    qlearning_arrays,
    read_raw,
    validate_raw,
)
from eor.data.load import load_dataset, load_dataset_resuming, load_file, search_locations
from eor.data.sources import d4rl_dir, eor_data_dir

__all__ = [
    "Dataset",
    "DatasetError",
    "collect",
    "contact_forces_missing",
    "d4rl_dir",
    "eor_data_dir",
    "load_dataset",
    "load_dataset_resuming",
    "load_file",
    "qlearning_arrays",
    "read_raw",
    "search_locations",
    "validate_raw",
]
