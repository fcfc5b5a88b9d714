"""Where datasets live: D4RL's cache, Minari's local store, eor's own store.

D4RL cache   $D4RL_DATASET_DIR, else ~/.d4rl/datasets/   file {env}_{kind with _}-v2.hdf5
Minari       local datasets of `minari` (optional extra), ids mujoco/{env}/{medium,expert}-v0
eor store    $EOR_DATA_DIR, else $XDG_CACHE_HOME/eor/datasets, else ~/.cache/eor/datasets
             (same file names as D4RL; filled by `eor collect`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eor.envs import d4rl_file_name, parse_dataset_name


def d4rl_dir() -> Path:
    """D4RL's dataset cache folder."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env).expanduser() if env else Path.home() / ".d4rl" / "datasets"


def eor_data_dir() -> Path:
    """eor's own dataset store (written by `eor collect`)."""
    env = os.environ.get("EOR_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "eor" / "datasets"


def d4rl_path(name: str) -> Path:
    """The D4RL cache file of a dataset name."""
    return d4rl_dir() / d4rl_file_name(name)


def eor_path(name: str) -> Path:
    """The eor store file of a dataset name."""
    return eor_data_dir() / d4rl_file_name(name)


def minari_module() -> Any | None:
    """`minari` when it is installed, else None (it is an optional extra)."""
    try:
        import minari
    except ImportError:
        return None
    return minari


# D4RL kind -> Minari's dataset in namespace mujoco/{env}/ (docs/algorithm.md §1.1 has the
# table). Minari re-recorded the MuJoCo suite in gymnasium's v5 envs with its own policies:
# for halfcheetah, hopper, walker2d and ant it has simple-v0, medium-v0 and expert-v0 only.
# random, medium-replay, medium-expert and full-replay have no counterpart; simple-v0 has no
# D4RL name (load it by its id).
MINARI_KINDS = {"medium": "medium-v0", "expert": "expert-v0"}


def minari_id(name: str) -> str | None:
    """Minari's id for a D4RL name (halfcheetah-medium-v2 -> mujoco/halfcheetah/medium-v0), or
    None when Minari has no counterpart (e.g. halfcheetah-random-v2)."""
    env, kind = parse_dataset_name(name)
    return f"mujoco/{env}/{MINARI_KINDS[kind]}" if kind in MINARI_KINDS else None


def minari_local_ids() -> list[str]:
    """Ids of the locally downloaded Minari datasets ([] when minari is not installed)."""
    minari = minari_module()
    if minari is None:
        return []
    return sorted(minari.list_local_datasets())
