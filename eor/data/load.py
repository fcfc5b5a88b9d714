"""`load_dataset`: find a dataset by path or D4RL name, validate it, return the Q-learning form.

Resolution order for a name (the first hit wins, and the "eor.data" logger says which):
    1. an explicit path (D4RL-style .hdf5/.h5 or .npz, or a Minari dataset folder);
    2. D4RL's cache ($D4RL_DATASET_DIR, else ~/.d4rl/datasets), read with h5py alone;
    3. a local Minari dataset (sources.minari_id's table), when `minari` is installed;
    4. eor's own store ($EOR_DATA_DIR, else the user cache), filled by `eor collect`.
A Minari id (mujoco/hopper/medium-v0) names a local Minari dataset directly. Minari data is
converted by eor.data.minari_io (every step of every episode, docs/algorithm.md §1.2).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

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


def _minari_local(dataset_id: str | None) -> bool:
    """True when Minari dataset `dataset_id` has a folder in Minari's local store."""
    if dataset_id is None or sources.minari_module() is None:
        return False
    from .minari_io import minari_dataset_path

    return (minari_dataset_path(dataset_id) / "data").is_dir()


def search_locations(name: str) -> list[tuple[str, str]]:
    """(source, location) of every place `load_dataset(name)` looks, in order."""
    places = [("D4RL cache", str(sources.d4rl_path(name)))]
    dataset_id = sources.minari_id(name)
    if dataset_id is None:
        places.append(("Minari", f"none (Minari has no counterpart of {name})"))
    elif sources.minari_module() is not None:
        places.append(("Minari", dataset_id))
    else:
        places.append(("Minari", f"{dataset_id}: not installed (pip install 'eor[minari]')"))
    places.append(("eor store", str(sources.eor_path(name))))
    return places


def resolve(name: str) -> tuple[str, str]:
    """(source, location) where dataset `name` would be loaded from, in resolution order:
    ("D4RL cache", path), ("Minari", id), ("eor store", path), or ("not found", "")."""
    d4rl = sources.d4rl_path(name)
    if d4rl.is_file():
        return "D4RL cache", str(d4rl)
    dataset_id = sources.minari_id(name)
    if dataset_id is not None and _minari_local(dataset_id):
        return "Minari", dataset_id
    own = sources.eor_path(name)
    if own.is_file():
        return "eor store", str(own)
    return "not found", ""


def load_dataset(name_or_path: str | Path, *, env: str | EnvSpec | None = None) -> Dataset:
    """Load a dataset by file path, D4RL name, Minari id or Minari dataset folder, in
    docs/algorithm.md §1's Q-learning form.

    `env` names the env of a file whose name does not say it (and must agree with a D4RL
    name). Raises FileNotFoundError listing every place searched and the command that makes
    the data; DatasetError (a ValueError) for a bad file; ValueError for an unknown name.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        from .minari_io import load_minari_dir

        return load_minari_dir(path, env=env)
    if not isinstance(name_or_path, Path) and not path.exists():
        from .minari_io import is_minari_id, load_minari

        if is_minari_id(text):
            return load_minari(text, env=env)
    if isinstance(name_or_path, Path) or path.is_file() or _looks_like_path(text):
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {text!r} does not exist")
        return load_file(path, env=env, source="file")

    env_name, _ = parse_dataset_name(text)  # ValueError with a suggestion
    spec = get_env(env_name)
    if env is not None and get_env(env).name != spec.name:
        raise ValueError(f"env={get_env(env).name!r} does not match dataset {text!r}")

    source, location = resolve(text)
    if source == "Minari":
        from .minari_io import load_minari

        return load_minari(location, env=spec, name=text)
    if source in ("D4RL cache", "eor store"):
        return load_file(location, env=spec, source=source, name=text)

    raise FileNotFoundError(not_found_message(text))


def load_dataset_resuming(
    name_or_path: str | Path,
    *,
    env: str | EnvSpec | None,
    recorded_path: str | None,
    recorded_name: str | None = None,
) -> Dataset:
    """`load_dataset` for a run being resumed: when `name_or_path` no longer finds the data
    (EOR_DATA_DIR unset or set to another store, a D4RL cache moved), the file the run recorded
    it was trained on, if that is still there; a line on stderr says so. The caller checks the
    file's sha256 against the run's record."""
    try:
        return load_dataset(name_or_path, env=env)
    except FileNotFoundError:
        if not recorded_path or not Path(recorded_path).is_file():
            raise
    print(
        f"dataset: {str(name_or_path)!r} is not found by name now; resuming with the file this "
        f"run was trained on, {recorded_path}",
        file=sys.stderr,
    )
    return load_file(recorded_path, env=env, source="recorded", name=recorded_name)


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
