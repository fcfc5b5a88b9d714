"""`load_dataset`: find a dataset by path or D4RL name, validate it, return the Q-learning form.

Resolution order for a name (the first hit wins, and the "eor.data" logger says which):
    1. an explicit path (D4RL-style .hdf5/.h5 or .npz);
    2. D4RL's cache ($D4RL_DATASET_DIR, else ~/.d4rl/datasets), read with h5py alone;
    3. a local Minari dataset, when `minari` is installed;
    4. eor's own store ($EOR_DATA_DIR, else the user cache), filled by `eor collect`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from eor.envs import DATASET_VERSION, EnvSpec, get_env, parse_dataset_name

from . import sources
from .dataset import Dataset, DatasetError, qlearning_arrays, read_raw, validate_raw

logger = logging.getLogger("eor.data")

_FILE_SUFFIXES = (".hdf5", ".h5", ".npz")


def _looks_like_path(name: str) -> bool:
    return name.endswith(_FILE_SUFFIXES) or "/" in name or "\\" in name


def _name_from_file(path: Path, attrs: dict[str, Any]) -> str | None:
    """The dataset name of a file: its "dataset" attribute, else its D4RL-style file name."""
    candidates = [str(attrs["dataset"])] if "dataset" in attrs else []
    stem = path.name.split(".")[0]
    candidates += [stem, stem.replace("_", "-")]
    for cand in candidates:
        try:
            parse_dataset_name(cand)
            return cand
        except ValueError:
            continue
    return None


def _env_for_file(path: Path, attrs: dict[str, Any], env: str | EnvSpec | None) -> EnvSpec:
    if env is not None:
        return get_env(env)
    name = _name_from_file(path, attrs)
    if name is not None:
        return get_env(name)
    if "env_name" in attrs:
        return get_env(str(attrs["env_name"]))
    raise DatasetError(
        f"cannot tell which env {str(path)!r} belongs to (its name is not a D4RL name such as "
        "halfcheetah_medium-v2.hdf5); pass env= (on the command line: --env_name)"
    )


def load_file(
    path: str | Path,
    *,
    env: str | EnvSpec | None = None,
    source: str = "file",
    name: str | None = None,
) -> Dataset:
    """Load, validate and convert one D4RL-style HDF5 or .npz file."""
    path = Path(path).expanduser()
    raw, attrs = read_raw(path)
    spec = _env_for_file(path, attrs, env)
    validate_raw(raw, spec, where=str(path))
    arrays = qlearning_arrays(raw, copy=False)  # raw was read fresh from the file: ours
    name = name or _name_from_file(path, attrs) or path.stem
    logger.info("loaded %s from %s %s (%d transitions)", name, source, path, len(arrays["rewards"]))
    return Dataset.from_arrays(
        arrays, name=name, env=spec, source=f"{source}:{path}", path=path, metadata=attrs
    )


def _load_minari(name: str, spec: EnvSpec) -> Dataset | None:
    """Load the local Minari counterpart of `name`, or None when there is none."""
    minari = sources.minari_module()
    if minari is None:
        return None
    dataset_id = sources.minari_id(name)
    if dataset_id not in sources.minari_local_ids():
        return None
    mds = minari.load_dataset(dataset_id)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("o", "a", "r", "n", "d", "t")}
    for ep in mds.iterate_episodes():
        obs = np.asarray(ep.observations)  # [T + 1, S]: the final observation is included
        parts["o"].append(obs[:-1])
        parts["n"].append(obs[1:])
        parts["a"].append(np.asarray(ep.actions))
        parts["r"].append(np.asarray(ep.rewards))
        parts["d"].append(np.asarray(ep.terminations))
        parts["t"].append(np.asarray(ep.truncations))
    if not parts["o"]:
        raise DatasetError(f"Minari dataset {dataset_id!r} has no episodes")
    raw = {
        "observations": np.concatenate(parts["o"]),
        "next_observations": np.concatenate(parts["n"]),
        "actions": np.concatenate(parts["a"]),
        "rewards": np.concatenate(parts["r"]),
        "terminals": np.concatenate(parts["d"]),
        # A truncated step's successor is the real next state, but docs/algorithm.md §1 drops timeouts.
        "timeouts": np.concatenate(parts["t"]) & ~np.concatenate(parts["d"]),
    }
    where = f"minari:{dataset_id}"
    validate_raw(raw, spec, where=where)
    arrays = qlearning_arrays(raw)
    logger.info(
        "loaded %s from Minari dataset %s (%d transitions)",
        name,
        dataset_id,
        len(arrays["rewards"]),
    )
    return Dataset.from_arrays(arrays, name=name, env=spec, source=where)


def search_locations(name: str) -> list[tuple[str, str]]:
    """(source, location) of every place `load_dataset(name)` looks, in order."""
    places = [("D4RL cache", str(sources.d4rl_path(name)))]
    if sources.minari_module() is not None:
        places.append(("Minari", sources.minari_id(name)))
    else:
        places.append(("Minari", "not installed (pip install 'eor[minari]')"))
    places.append(("eor store", str(sources.eor_path(name))))
    return places


def resolve(name: str) -> tuple[str, str]:
    """(source, location) where dataset `name` would be loaded from, in resolution order:
    ("D4RL cache", path), ("Minari", id), ("eor store", path), or ("not found", "")."""
    d4rl = sources.d4rl_path(name)
    if d4rl.is_file():
        return "D4RL cache", str(d4rl)
    if (
        sources.minari_module() is not None
        and sources.minari_id(name) in sources.minari_local_ids()
    ):
        return "Minari", sources.minari_id(name)
    own = sources.eor_path(name)
    if own.is_file():
        return "eor store", str(own)
    return "not found", ""


def load_dataset(name_or_path: str | Path, *, env: str | EnvSpec | None = None) -> Dataset:
    """Load a dataset by file path or D4RL name, in docs/algorithm.md §1's Q-learning form.

    `env` names the env of a file whose name does not say it (and must agree with a D4RL
    name). Raises FileNotFoundError listing every place searched and the command that makes
    the data; DatasetError (a ValueError) for a bad file; ValueError for an unknown name.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or path.is_file() or _looks_like_path(text):
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {text!r} does not exist")
        return load_file(path, env=env, source="file")

    env_name, _ = parse_dataset_name(text)  # ValueError with a suggestion
    spec = get_env(env_name)
    if env is not None and get_env(env).name != spec.name:
        raise ValueError(f"env={get_env(env).name!r} does not match dataset {text!r}")

    source, location = resolve(text)
    from_minari = _load_minari(text, spec) if source == "Minari" else None
    if from_minari is not None:
        return from_minari
    if source in ("D4RL cache", "eor store"):
        return load_file(location, env=spec, source=source, name=text)

    raise FileNotFoundError(not_found_message(text))


def not_found_message(name: str) -> str:
    """Every place searched for dataset `name`, and the command that makes it."""
    _, kind = parse_dataset_name(name)
    searched = "\n".join(f"  {src:<10} {loc}" for src, loc in search_locations(name))
    make = f"eor collect {name}"
    if kind != "random":
        make += " --policy CHECKPOINT   (a trained eor agent's checkpoint, for non-random data)"
    return (
        f"dataset {name!r} not found. Searched:\n{searched}\n"
        f"Make it with:\n  {make}\n"
        f"or pass a D4RL-format file path ({'/'.join(_FILE_SUFFIXES)}, version {DATASET_VERSION})."
    )
