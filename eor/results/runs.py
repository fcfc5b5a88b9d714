"""Reading `eor train-agent` run directories into records.

A run directory (see `eor train-agent`) holds::

    config.json     every config field of the run (env_name, dataset, seed, eta, ...)
    metrics.jsonl   one JSON object per line, "kind" in {"train", "rollout", "eval"},
                    each with "epoch", "updates" (total so far) and "time" (s since start)
    summary.json    written when the run stops: status ("completed", "interrupted", ...),
                    last_score, best_score, total_updates, wall_time_s, ... (absent while a
                    run is going, or after it was killed outright)

Reading is forgiving where a run can legitimately look odd and strict where a file is broken:

- a truncated *last* line of metrics.jsonl (the process was killed mid-write) is dropped with a
  logged warning; a corrupt line anywhere else is an error naming the file and the line;
- a missing summary.json means the run is still going or was killed: it is reported from its
  metrics; so is a stale one (fewer updates than the metrics: a resumed run in progress);
- records re-logged after a `--resume` from an earlier checkpoint replace the ones they
  repeat (the update counter went back, so the later records are the ones that count).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"

# Config fields that do not define *which experiment* a run is: runs equal in everything else
# are seeds of one configuration. Path-like fields (ending in _dir, _path, _file, or a "dataset"
# given as a file path) are left out too, since each seed usually has its own model directory
# and run directory, and the same file may sit at different paths.
NON_GROUPING_FIELDS: frozenset[str] = frozenset(
    {
        "seed",
        "run_dir",
        "device",
        "resume",
        "wandb",
        "wandb_project",
        "wandb_group",
        "name",  # the reference's run name and prefix (wandb, the --save folder)
        "name_prefix",
        "save",
        "wandb_entity",
        "wandb_mode",
        "resolved_device",
        "eor_version",
        "quiet",
        "save_every",
        "checkpoint_every",
        "log_every",
        "load_model_dir",
        "save_path",
        # provenance of the data rather than its identity (dataset_name is kept)
        "dataset_source",
        "dataset_checksum",
        # the dynamics model's identity (weights hash, elites): each seed trains its own
        "model",
        "threads",  # CPU threads: speed, not results
    }
)
_PATH_SUFFIXES = ("_dir", "_path", "_file")
MODEL_META_FILE = "meta.json"  # beside config.json in an `eor train-model` directory

# Two scores are taken to agree when within this (absolute, in normalised-score points).
_AGREE_ATOL = 1e-6


class RunDirError(ValueError):
    """A run directory (or one of its files) is missing or unreadable; the message names it."""


@dataclass
class Run:
    """One run directory, parsed.

    `train`, `rollout` and `evals` are the metrics.jsonl records of that kind, in order of
    `updates`; `summary` is summary.json's content, or None for a running/interrupted run.
    """

    path: Path
    config: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    rollout: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def metrics_updates(self) -> int:
        """The largest update count in metrics.jsonl (0 when it has no records)."""
        counts = [r["updates"] for r in (*self.train, *self.rollout, *self.evals)]
        return int(max(counts)) if counts else 0

    @property
    def current_summary(self) -> dict[str, Any] | None:
        """summary.json's content unless missing or stale.

        Stale: it counts fewer updates than the metrics, i.e. it was written when the run
        stopped before, and the run has since been resumed and gone further.
        """
        s = self.summary
        if s is None:
            return None
        total = s.get("total_updates")
        if isinstance(total, (int, float)) and total < self.metrics_updates:
            return None
        return s

    @property
    def status(self) -> str:
        """summary.json's status ("completed", "interrupted", "failed_nonfinite", ...).

        "completed" for a summary.json without a status field; "no summary" when there is no
        summary.json (the run is going, or was killed before it could write one); "stale
        summary" when it is older than the metrics (a resumed run in progress).
        """
        if self.summary is None:
            return "no summary"
        if self.current_summary is None:
            return "stale summary"
        return str(self.summary.get("status") or "completed")

    @property
    def finished(self) -> bool:
        """True when the run reached its end (summary.json with status "completed")."""
        return self.status == "completed"

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def dataset(self) -> str:
        """The dataset's name: config "dataset_name", or "dataset" when it is a name (not a
        file path), or summary.json's "dataset", else the env/dataset name "env_name"."""
        if isinstance(self.config.get("dataset_name"), str) and self.config["dataset_name"]:
            return str(self.config["dataset_name"])
        ds = self.config.get("dataset")
        if isinstance(ds, str) and ds and not _looks_like_path(ds):
            return ds
        if self.summary and isinstance(self.summary.get("dataset"), str):  # stale is fine here
            sds = self.summary["dataset"]
            if sds and not _looks_like_path(sds):
                return str(sds)
        name = self.config.get("env_name")
        if isinstance(name, str) and name:
            return name
        if isinstance(ds, str) and ds:
            return Path(ds).stem  # a dataset file and no env name: the best label there is
        return "unknown"

    @property
    def env_id(self) -> str | None:
        """The simulator id (e.g. "HalfCheetah-v4") when known."""
        for source in (self.summary or {}, self.config):
            if source.get("env_id"):
                return str(source["env_id"])
        try:  # eor.envs knows the gym id of every supported env; tolerate its absence
            from eor.envs import get_env

            return str(get_env(str(self.config.get("env_name", self.dataset))).gym_id)
        except Exception:  # noqa: BLE001 - a label only; never fail a plot over it
            return None

    def group_config(self) -> dict[str, Any]:
        """The config fields that define the experiment (everything but seed, paths, device...)."""
        cfg = {k: v for k, v in self.config.items() if is_grouping_field(k)}
        if isinstance(cfg.get("dataset"), str) and _looks_like_path(cfg["dataset"]):
            cfg["dataset"] = self.dataset  # a file path: group by the dataset's name instead
        return cfg

    def group_key(self) -> str:
        """A canonical string: equal for runs that differ only in seed (and paths, device...)."""
        return json.dumps(self.group_config(), sort_keys=True, default=str)

    # --- the numbers a report needs; summary.json wins where it has them -----------------------

    @property
    def metrics_last_score(self) -> float | None:
        return float(self.evals[-1]["score_mean"]) if self.evals else None

    @property
    def metrics_best_score(self) -> float | None:
        return max(float(e["score_mean"]) for e in self.evals) if self.evals else None

    @property
    def last_score(self) -> float | None:
        """Normalised score of the last evaluation (summary.json's when present)."""
        return self._prefer_summary("last_score", self.metrics_last_score)

    @property
    def best_score(self) -> float | None:
        """Best normalised score over the run's evaluations (summary.json's when present)."""
        return self._prefer_summary("best_score", self.metrics_best_score)

    @property
    def total_updates(self) -> int:
        """Gradient updates done: summary.json's total, else the largest count in the metrics."""
        s = self.current_summary
        if s and s.get("total_updates") is not None:
            return int(s["total_updates"])
        return self.metrics_updates

    @property
    def wall_time_s(self) -> float | None:
        """Seconds the run took: summary.json's, else the latest record's time."""
        s = self.current_summary
        if s and s.get("wall_time_s") is not None:
            return float(s["wall_time_s"])
        times = [r["time"] for r in (*self.train, *self.rollout, *self.evals) if "time" in r]
        return float(max(times)) if times else None

    def _prefer_summary(self, key: str, from_metrics: float | None) -> float | None:
        s = self.current_summary
        if s is None or s.get(key) is None:
            return from_metrics
        value = float(s[key])
        if from_metrics is not None and not math.isclose(
            value, from_metrics, rel_tol=1e-9, abs_tol=_AGREE_ATOL
        ):
            log.warning(
                "%s: summary.json %s = %r disagrees with metrics.jsonl (%r); using summary.json",
                self.path,
                key,
                value,
                from_metrics,
            )
        return value


def is_grouping_field(key: str) -> bool:
    """Whether a config field separates experiments (False for seed, paths, device, wandb...)."""
    return key not in NON_GROUPING_FIELDS and not key.endswith(_PATH_SUFFIXES)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".hdf5", ".h5", ".npz"))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


_REQUIRED = {"eval": ("score_mean",), "train": (), "rollout": ()}


def read_metrics(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Parse metrics.jsonl into {"train": [...], "rollout": [...], "eval": [...]}.

    Each list is in order of "updates". A record whose "updates" is not above the previous
    record of its kind (a resumed run re-logging from an earlier checkpoint) replaces the
    records it repeats. Unknown kinds are skipped (forward compatibility).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(f"{path}: file not found (is this a run directory?)") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc})") from None
    lines = raw.decode("utf-8", errors="replace").splitlines()
    # The index of the last non-blank line: only that one may be a truncated write.
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in _REQUIRED}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last:
                log.warning(
                    "%s:%d: dropping a truncated last line (interrupted run?): %s",
                    path,
                    i + 1,
                    exc,
                )
                break
            raise RunDirError(f"{path}:{i + 1}: not valid JSON ({exc})") from None
        if not isinstance(rec, dict):
            raise RunDirError(f"{path}:{i + 1}: expected a JSON object, got {type(rec).__name__}")
        kind = rec.get("kind")
        if kind not in out:
            if kind is None:
                raise RunDirError(f"{path}:{i + 1}: record has no 'kind' field")
            continue
        missing = [k for k in ("updates", *_REQUIRED[kind]) if k not in rec]
        if missing:
            raise RunDirError(f"{path}:{i + 1}: {kind} record lacks {', '.join(missing)}")
        for k in ("updates", *_REQUIRED[kind]):
            if not isinstance(rec[k], (int, float)) or isinstance(rec[k], bool):
                raise RunDirError(
                    f"{path}:{i + 1}: {kind} record field {k!r} should be a number, got {rec[k]!r}"
                )
        records = out[kind]
        # A resume from an earlier checkpoint re-logs from there: forget what it repeats.
        while records and records[-1]["updates"] >= rec["updates"]:
            records.pop()
        records.append(rec)
    return out


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read one run directory. Raises RunDirError naming the missing or corrupt file."""
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: no such directory")
    if not p.is_dir():
        raise RunDirError(f"{p}: not a directory (expected a run directory)")
    config_path = p / CONFIG_FILE
    if not config_path.exists():
        raise RunDirError(f"{config_path}: file not found; {p} is not a run directory")
    config = _read_json_object(config_path)
    metrics = read_metrics(p / METRICS_FILE)
    summary_path = p / SUMMARY_FILE
    summary = _read_json_object(summary_path) if summary_path.exists() else None
    return Run(
        path=p,
        config=config,
        train=metrics["train"],
        rollout=metrics["rollout"],
        evals=metrics["eval"],
        summary=summary,
    )


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand arguments into run directories.

    A path holding config.json is a run directory. Any other directory is searched below for
    run directories (e.g. `runs/` holding `runs/hc/seed0`, ...), which are returned sorted.
    Raises RunDirError for a path that does not exist or has no run directory at or below it.
    """
    found: list[Path] = []
    for arg in paths:
        p = Path(arg)
        if not p.exists():
            raise RunDirError(f"{p}: no such directory")
        if not p.is_dir():
            raise RunDirError(f"{p}: not a directory (expected a run directory)")
        if (p / CONFIG_FILE).exists():
            found.append(p)
            continue
        below: list[Path] = []
        for root, dirs, files in os.walk(p):
            if CONFIG_FILE in files:
                if MODEL_META_FILE not in files:  # not a dynamics model (`eor sweep`'s models/)
                    below.append(Path(root))
                dirs[:] = []  # a run directory holds no further runs (checkpoints/ etc.)
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not below:
            raise RunDirError(
                f"{p}: not a run directory ({CONFIG_FILE} not found) and no run directory "
                "found below it"
            )
        found.extend(sorted(below))
    # The same run named twice (e.g. `runs/ runs/a`) is read once, where first named.
    unique: dict[Path, Path] = {}
    for d in found:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def load_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """`find_run_dirs` then `load_run` on each."""
    if not paths:
        raise RunDirError("no run directory given")
    return [load_run(d) for d in find_run_dirs(paths)]


@dataclass
class Group:
    """Runs of one configuration (differing in seed only)."""

    key: str
    runs: list[Run]

    @property
    def dataset(self) -> str:
        return self.runs[0].dataset

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].group_config()

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs that share a config; groups sorted by dataset, then by config."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group_key(), []).append(r)
    out = [Group(k, sorted(v, key=_seed_order)) for k, v in groups.items()]
    for g in out:
        seeds = [str(s) for s in g.seeds]
        if len(set(seeds)) < len(seeds):
            log.warning(
                "%s: runs of one config share a seed (%s); each is counted as a run",
                g.dataset,
                ", ".join(str(r.path) for r in g.runs),
            )
    return sorted(out, key=lambda g: (g.dataset, g.key))


def _seed_order(run: Run) -> tuple[int, float, str]:
    """Numeric seeds in numeric order (2 before 10), then anything else by its text."""
    seed = run.seed
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, float(seed), "")
    return (1, 0.0, str(seed))


def differing_fields(groups: Sequence[Group]) -> list[str]:
    """Config fields whose values differ between groups (what a legend must name)."""
    if len(groups) < 2:
        return []
    keys: set[str] = set()
    for g in groups:
        keys.update(g.config)
    out = []
    for k in sorted(keys):
        values = {json.dumps(g.config.get(k), sort_keys=True, default=str) for g in groups}
        if len(values) > 1:
            out.append(k)
    return out


def group_label(group: Group, fields: Sequence[str], *, with_dataset: bool = True) -> str:
    """A label such as "halfcheetah-random-v2, eta=1.0": the dataset and the fields that differ."""
    parts = [group.dataset] if with_dataset else []
    skip = {"env_name", "dataset", "dataset_name"}  # already named by the dataset part
    parts += [f"{k}={group.config.get(k)}" for k in fields if k not in skip]
    if not parts and with_dataset:
        return group.dataset
    return ", ".join(parts)
