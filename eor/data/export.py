"""`export_dataset`: write a dataset found by D4RL name or path in another format (`eor datasets
export`). One format so far: a Minari dataset (eor.data.minari_io.write_minari, which says how
episodes are cut and what reading the export back gives, docs/algorithm.md §1.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eor.envs import EnvSpec, get_env, parse_dataset_name

from .dataset import DatasetError, read_raw, validate_raw
from .load import _env_for_file, _looks_like_path, not_found_message, resolve
from .minari_io import write_minari

FORMATS = ("minari",)


def export_dataset(
    name_or_path: str | Path,
    out: str,
    *,
    fmt: str = "minari",
    env: str | EnvSpec | None = None,
    overwrite: bool = False,
    author: str = "eor",
) -> Any:
    """Write a D4RL-layout dataset (a D4RL name, looked up as `load_dataset` does, or a
    .hdf5/.npz file) as `out`: for fmt="minari" a Minari dataset id, e.g.
    local/halfcheetah/random-v0, in Minari's local store. Returns the MinariDataset as minari
    loads it back. env: the env of a file whose name does not say it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not an export format; expected one of {FORMATS}")
    text = str(name_or_path)
    path = Path(text).expanduser()
    name: str | None = None
    if isinstance(name_or_path, Path) or path.is_file() or _looks_like_path(text):
        if not path.is_file():
            raise FileNotFoundError(f"name_or_path: dataset file {text!r} does not exist")
    else:
        name = text
        parse_dataset_name(name)  # ValueError with a suggestion
        source, location = resolve(name)
        if source == "not found":
            raise FileNotFoundError(not_found_message(name))
        if source == "Minari":
            raise ValueError(f"name_or_path: {name} is already the Minari dataset {location}")
        if env is not None and get_env(env).name != get_env(name).name:
            raise ValueError(f"env={get_env(env).name!r} does not match dataset {name!r}")
        path, env = Path(location), name
    raw, attrs = read_raw(path)
    spec = _env_for_file(path, attrs, env)
    validate_raw(raw, spec, where=str(path))
    if "next_observations" not in raw:
        raise DatasetError(
            f"{path}: has no next_observations; a Minari episode needs the true final "
            "observation of every episode, which only next_observations records"
        )
    return write_minari(
        raw,
        spec,
        out,
        label=f"{name or attrs.get('dataset') or path.stem} (from {path.name})",
        algorithm=str(attrs.get("policy", "unknown (D4RL-format file)")),
        overwrite=overwrite,
        author=author,
    )
