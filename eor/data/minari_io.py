"""Minari datasets: read them in docs/algorithm.md §1's Q-learning form; write eor's data as one.

`minari` is an optional extra (`pip install 'eor[minari]'`); nothing here downloads anything.
Minari keeps its datasets in `$MINARI_DATASETS_PATH`, else `~/.minari/datasets`, one folder per
id (`{namespace}/{env}/{name}-v{N}/data/`).

Reading (`load_minari`, `load_minari_dir`). A Minari episode of T steps stores T + 1
observations, T actions, rewards, terminations and truncations. Every step t of every episode
is one transition

    (obs[t], act[t], rew[t], obs[t + 1], terminations[t])

with obs[t + 1] taken from the same episode's observation array. So no step is dropped and no
pair crosses an episode boundary: a truncated step keeps its real successor state and done = 0
(its target bootstraps), a terminated one has done = 1. D4RL's `qlearning_dataset`, which §1.2
follows for D4RL-layout files, instead drops every step flagged `timeouts`, because there the
next state is obs[i + 1], the next episode's first observation. Truncations are never terminal
in either.

Writing (`write_minari`; `eor.data.export.export_dataset` reads the file first). A D4RL-layout file (D4RL's own, or `eor collect`'s) is cut into
episodes after every row whose `terminals` or `timeouts` is set, and wherever
`next_observations[i] != observations[i + 1]` (an episode boundary without a flag, e.g. the
unfinished episodes of a collection). Each episode's T + 1 observations are its rows'
observations plus the last row's `next_observations`, so the file must have
`next_observations`. terminations = `terminals`; truncations = `timeouts`, and also the last step
of an episode cut without a flag (the file's trailing unfinished episode), so that every
episode ends terminated or truncated. Reading the export back gives every row of the file, in
order: (observations, actions, rewards, next_observations, terminals)[i] for all i, while
`load_file` gives the same minus the rows with `timeouts` set (tests/test_data_minari.py).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from eor.envs import ENVS, EnvSpec, get_env

from . import sources
from .dataset import Dataset, DatasetError, qlearning_arrays, validate_raw

logger = logging.getLogger("eor.data")

# A Minari id: (namespace/)(env/)name-vN. Contains a "/" so that it is never a D4RL name.
_MINARI_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+-v\d+$")
# gymnasium env ids of the MuJoCo locomotion envs eor knows, by name without version.
_GYM_NAMES = {spec.gym_id.rsplit("-", 1)[0]: spec.name for spec in ENVS.values()}


def is_minari_id(text: str) -> bool:
    """True for text shaped like a namespaced Minari id, e.g. mujoco/hopper/medium-v0."""
    return bool(_MINARI_ID.match(text))


def is_minari_dir(path: str | Path) -> bool:
    """True for a Minari dataset folder: one holding data/metadata.json, or that data folder."""
    path = Path(path)
    return (path / "data" / "metadata.json").is_file() or (path / "metadata.json").is_file()


def require_minari() -> Any:
    """The `minari` module, or an ImportError saying how to install it."""
    minari = sources.minari_module()
    if minari is None:
        raise ImportError(
            "reading or writing Minari datasets needs the optional `minari` package: "
            "pip install 'eor[minari]'"
        )
    return minari


def minari_dataset_path(dataset_id: str) -> Path:
    """The folder of Minari dataset `dataset_id` in Minari's local store (it may not exist):
    $MINARI_DATASETS_PATH, else ~/.minari/datasets, as minari's own lookup (which also
    creates the store; this only computes the path)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return (Path(root) if root else Path.home() / ".minari" / "datasets") / dataset_id


# ----------------------------------------------------------------------------- reading


def load_minari(
    dataset_id: str, *, env: str | EnvSpec | None = None, name: str | None = None
) -> Dataset:
    """Load the local Minari dataset `dataset_id` (never downloads) in Q-learning form.

    env: eor's env (default: the one the dataset was recorded in). Raises FileNotFoundError
    for an id that is not in Minari's local store, DatasetError for a corrupt dataset or one
    of an env eor does not know, ImportError when minari is not installed.
    """
    require_minari()
    if not is_minari_id(dataset_id):
        raise ValueError(
            f"dataset_id {dataset_id!r} is not a Minari id (expected namespace/env/name-vN, "
            "e.g. mujoco/hopper/medium-v0)"
        )
    folder = minari_dataset_path(dataset_id)
    if not (folder / "data").is_dir():
        local = sources.minari_local_ids()
        shown = ", ".join(local[:10]) + (", ..." if len(local) > 10 else "") if local else "none"
        raise FileNotFoundError(
            f"dataset_id {dataset_id!r}: no local Minari dataset at {folder} (Minari's store is "
            f"$MINARI_DATASETS_PATH, else ~/.minari/datasets; local ids: {shown}). eor never "
            f"downloads: fetch it with `minari download {dataset_id}`, or make one with "
            "`eor datasets export NAME --format minari --out ID`"
        )
    return _load(folder / "data", f"minari:{dataset_id}", env, name or dataset_id)


def load_minari_dir(
    path: str | Path, *, env: str | EnvSpec | None = None, name: str | None = None
) -> Dataset:
    """Load a Minari dataset folder (the id's folder, or its data/ folder) in Q-learning form."""
    require_minari()
    path = Path(path).expanduser()
    data = path / "data" if (path / "data").is_dir() else path
    if not (data / "metadata.json").is_file():
        raise DatasetError(
            f"path {str(path)!r} is not a Minari dataset folder (no data/metadata.json in it)"
        )
    return _load(data, f"minari:{path}", env, name)


def _open(data: Path, where: str) -> Any:
    minari = require_minari()
    try:
        return minari.MinariDataset(data)
    except Exception as exc:  # noqa: BLE001 - minari raises many types for a broken folder
        raise DatasetError(
            f"{where}: cannot open the Minari dataset in {data} (corrupt or incomplete?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _dataset_env(mds: Any, where: str) -> EnvSpec:
    """eor's env of a Minari dataset, from the gymnasium env it was recorded in."""
    env_spec = mds.env_spec
    gym_id = getattr(env_spec, "id", None)
    if gym_id is None:
        raise DatasetError(
            f"{where}: the dataset records no env; pass env= (on the command line: --env_name)"
        )
    base = re.sub(r"-v\d+$", "", gym_id.split("/")[-1])
    if base not in _GYM_NAMES:
        known = ", ".join(sorted(_GYM_NAMES))
        raise DatasetError(
            f"{where}: recorded in {gym_id}, which is not one of eor's MuJoCo envs ({known})"
        )
    return get_env(_GYM_NAMES[base])


def _check_spaces(mds: Any, spec: EnvSpec, where: str) -> None:
    for what, space, dim in (
        ("observation", mds.observation_space, spec.obs_dim),
        ("action", mds.action_space, spec.act_dim),
    ):
        shape = getattr(space, "shape", None)
        if shape != (dim,):
            recorded = getattr(mds.env_spec, "id", "an unrecorded env")
            raise DatasetError(
                f"{where}: {what} space {space} (recorded in {recorded}), but {spec.name} "
                f"({spec.gym_id}) needs shape ({dim},)"
            )


def _load(data: Path, where: str, env: str | EnvSpec | None, name: str | None) -> Dataset:
    mds = _open(data, where)
    recorded = _dataset_env(mds, where)
    spec = recorded if env is None else get_env(env)
    if spec.name != recorded.name:
        raise ValueError(f"env={spec.name!r} does not match {where}, recorded in {mds.env_spec.id}")
    _check_spaces(mds, spec, where)
    if mds.env_spec.id != spec.gym_id:
        logger.info(
            "%s was recorded in %s; eor evaluates %s in %s (docs/algorithm.md §1.4)",
            where,
            mds.env_spec.id,
            spec.name,
            spec.gym_id,
        )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("o", "n", "a", "r", "d")}
    episodes = truncated = 0
    try:
        for ep in mds.iterate_episodes():
            obs = np.asarray(ep.observations)
            t = len(ep.rewards)
            if obs.shape != (t + 1, spec.obs_dim) or np.shape(ep.actions) != (t, spec.act_dim):
                raise DatasetError(
                    f"{where}: episode {ep.id} has {t} rewards, observations of shape "
                    f"{obs.shape} and actions of shape {np.shape(ep.actions)}; expected "
                    f"({t + 1}, {spec.obs_dim}) and ({t}, {spec.act_dim})"
                )
            parts["o"].append(obs[:-1])  # state t
            parts["n"].append(obs[1:])  # state t + 1 of the same episode
            parts["a"].append(np.asarray(ep.actions))
            parts["r"].append(np.asarray(ep.rewards).reshape(t))
            parts["d"].append(np.asarray(ep.terminations).reshape(t))
            truncated += int(np.asarray(ep.truncations).any())
            episodes += 1
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py/minari errors of a damaged data file
        raise DatasetError(
            f"{where}: cannot read the episodes in {data} (corrupt or incomplete?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not episodes:
        raise DatasetError(f"{where}: the dataset has no episodes")
    raw = {
        "observations": np.concatenate(parts["o"]),
        "actions": np.concatenate(parts["a"]),
        "rewards": np.concatenate(parts["r"]),
        "next_observations": np.concatenate(parts["n"]),
        "terminals": np.concatenate(parts["d"]),
    }
    validate_raw(raw, spec, where=where)
    arrays = qlearning_arrays(raw, copy=False)  # no timeouts key: every step is kept
    main = data / "main_data.hdf5"
    metadata = {
        "minari_id": mds.id,
        "minari_version": mds.minari_version,
        "env_id": mds.env_spec.id,
        "episodes": episodes,
        "truncated_episodes": truncated,
    }
    logger.info(
        "loaded %s from %s (%d episodes, %d transitions)",
        name or mds.id,
        where,
        episodes,
        len(arrays["rewards"]),
    )
    return Dataset.from_arrays(
        arrays,
        name=name or mds.id,
        env=spec,
        source=where,
        path=main if main.is_file() else None,
        metadata=metadata,
    )


# ----------------------------------------------------------------------------- writing


def episode_bounds(raw: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the episodes of D4RL-layout raw arrays with next_observations.

    An episode ends after a row with `terminals` or `timeouts`, before a row whose observation
    is not the previous row's next_observations, and at the last row.
    """
    n = int(raw["observations"].shape[0])
    ends = np.asarray(raw["terminals"]).reshape(n).astype(bool)
    if "timeouts" in raw:
        ends = ends | np.asarray(raw["timeouts"]).reshape(n).astype(bool)
    obs, nxt = raw["observations"], raw["next_observations"]
    ends[:-1] |= np.any(nxt[:-1] != obs[1:], axis=1)
    ends[-1] = True
    stops = np.flatnonzero(ends) + 1
    starts = np.concatenate([[0], stops[:-1]])
    return starts, stops


@contextmanager
def _quiet_minari() -> Iterator[None]:
    """Silence minari's metadata reminders (author email, code link) and gymnasium's note
    that the v4 envs are out of date (eor evaluates in them on purpose, docs/algorithm.md §1)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is set to None.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*is out of date.*")
        yield


def write_minari(
    raw: dict[str, np.ndarray],
    spec: EnvSpec,
    dataset_id: str,
    *,
    label: str,
    algorithm: str = "unknown",
    overwrite: bool = False,
    author: str = "eor",
) -> Any:
    """Write validated D4RL-layout raw arrays of env `spec` as Minari dataset `dataset_id`.

    The dataset goes to Minari's local store, recorded with the env spec of eor's gymnasium
    env (e.g. HalfCheetah-v4) and D4RL's reference returns as ref_min/max_score, so that
    `minari.get_normalized_score` gives D4RL's normalised score. It is loaded back with
    `minari.load_dataset` and checked before returning that MinariDataset. `label` names the
    data in the dataset's description; `algorithm` is Minari's algorithm_name.
    (`eor.data.export.export_dataset` finds and reads a dataset by name or path first.)
    """
    minari = require_minari()
    import gymnasium as gym

    if not is_minari_id(dataset_id):
        raise ValueError(
            f"dataset_id {dataset_id!r} is not a Minari id (expected namespace/env/name-vN, "
            "e.g. local/halfcheetah/random-v0)"
        )
    n = validate_raw(raw, spec, where=label)
    if "next_observations" not in raw:
        raise DatasetError(
            f"{label}: has no next_observations; a Minari episode needs the true final "
            "observation of every episode, which only next_observations records"
        )

    folder = minari_dataset_path(dataset_id)
    backup: Path | None = None  # the dataset being replaced, kept until the new one is checked
    if folder.exists():
        if not overwrite:
            raise FileExistsError(
                f"dataset_id {dataset_id!r}: a Minari dataset exists at {folder}; pass "
                "overwrite=True (--overwrite) to replace it"
            )
        backup = folder.with_name(f".{folder.name}.replaced")
        shutil.rmtree(backup, ignore_errors=True)  # left by a crash during a replacement
        folder.rename(backup)

    from minari.data_collector import EpisodeBuffer

    with _quiet_minari():
        gym_env = gym.make(spec.gym_id, **spec.gym_kwargs)
    obs_dtype = gym_env.observation_space.dtype
    act_dtype = gym_env.action_space.dtype
    terminals = np.asarray(raw["terminals"]).reshape(n).astype(bool)
    timeouts = (
        np.asarray(raw["timeouts"]).reshape(n).astype(bool)
        if "timeouts" in raw
        else np.zeros(n, bool)
    )
    rewards = np.asarray(raw["rewards"]).reshape(n)
    starts, stops = episode_bounds(raw)
    buffers = []
    for i, (s, e) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        term = terminals[s:e].copy()
        trunc = timeouts[s:e] & ~term
        trunc[-1] |= not term[-1]  # an episode cut without a flag ends truncated
        obs = np.concatenate([raw["observations"][s:e], raw["next_observations"][e - 1 : e]])
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs.astype(obs_dtype),
                actions=np.asarray(raw["actions"][s:e], act_dtype),
                rewards=rewards[s:e].astype(np.float64),
                terminations=term,
                truncations=trunc,
            )
        )
    description = (
        f"{label} ({spec.gym_id}), exported by eor: {n} steps in "
        f"{len(buffers)} episodes. terminations = D4RL terminals; truncations = D4RL timeouts, "
        "and the last step of an episode cut without either (the file's unfinished episode)."
    )
    try:
        with _quiet_minari():
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=gym_env,
                eval_env=gym_env.spec,
                algorithm_name=algorithm,
                author=author,
                description=description,
                ref_min_score=spec.ref_min_score,
                ref_max_score=spec.ref_max_score,
                data_format="hdf5",
            )
            mds = minari.load_dataset(dataset_id)
        if (mds.total_steps, mds.total_episodes) != (n, len(buffers)):
            raise DatasetError(
                f"Minari dataset {dataset_id}: wrote {n} steps in {len(buffers)} episodes, but "
                f"minari reads {mds.total_steps} steps in {mds.total_episodes}"
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if backup is not None:  # nothing is lost: the old dataset goes back
            backup.rename(folder)
        raise
    finally:
        gym_env.close()
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    logger.info(
        "exported %s (%d steps, %d episodes) to Minari dataset %s at %s",
        label,
        n,
        len(buffers),
        dataset_id,
        folder,
    )
    return mds
