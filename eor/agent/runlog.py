"""The run log of a RAVL run: metrics.jsonl, its Weights & Biases mirror, summary.json, and
the progress bar on the terminal.

    RUN/metrics.jsonl    one JSON object per line: kind train / rollout / eval, epoch, updates,
                         time, and the values (NaN/inf written as null: strict JSON)
    RUN/summary.json     written atomically at the end (and on a failure)

`RunLog.offset` (bytes written so far) goes into each checkpoint; a resumed run truncates
metrics.jsonl back to it, so records written after the last checkpoint are not duplicated.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import eor
from eor.agent.setup import TrainingSetupError
from eor.fileio import atomic_write_json


def jsonable(value: Any) -> Any:
    """Floats for JSON: tensors and numpy scalars to Python, NaN/inf to None (strict JSON)."""
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """The versions a run records in its summary."""
    import gymnasium
    import mujoco

    return {
        "eor": eor.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
    }


def import_wandb() -> Any:
    """`import wandb`, or a clear error saying how to install it."""
    try:
        import wandb
    except ImportError as exc:
        raise TrainingSetupError(
            "--wandb needs the wandb package, which is not installed: "
            "pip install 'eor[wandb]' (or pip install wandb); set WANDB_MODE=offline to log "
            f"without an account ({exc})"
        ) from None
    return wandb


class WandbMirror:
    """Mirrors every metrics record to Weights & Biases as `<kind>/<key>` at step = updates.

    wandb is imported lazily; `WANDB_MODE=offline` works as with any wandb run.
    """

    def __init__(self, config: dict[str, Any], run_dir: Path, run_id: str | None) -> None:
        self._wandb = import_wandb()
        self.run = self._wandb.init(
            project=config.get("wandb_project", "RAVL"),
            group=config.get("wandb_group"),
            name=config.get("name_expanded") or run_dir.name,  # the reference's run name
            dir=str(run_dir),
            config=config,
            id=run_id,
            resume="allow",
        )
        self.run_id: str | None = getattr(self.run, "id", run_id)

    def log(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        data = {
            f"{kind}/{k}": v
            for k, v in jsonable(record).items()
            if k != "kind" and isinstance(v, (int, float))
        }
        self._wandb.log(data, step=int(record["updates"]))

    def summary(self, summary: dict[str, Any]) -> None:
        for k, v in jsonable(summary).items():
            if isinstance(v, (int, float, str)):
                self.run.summary[k] = v

    def finish(self) -> None:
        self._wandb.finish()


class RunLog:
    """metrics.jsonl (append-only, one flushed line per record), the optional wandb mirror and
    summary.json of one run directory.

    truncate_to: a resumed run's metrics offset (from its checkpoint); the file is cut back to it.
    """

    def __init__(self, run_dir: Path, truncate_to: int | None = None) -> None:
        self.run_dir = run_dir
        path = run_dir / "metrics.jsonl"
        if truncate_to is not None and path.exists():
            with open(path, "r+b") as f:
                f.truncate(truncate_to)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        self.wandb: WandbMirror | None = None

    @property
    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far."""
        return self._file.tell()

    def start_wandb(self, config: dict[str, Any], run_id: str | None) -> None:
        """Mirror the records from now on to wandb (run `run_id` when resuming one)."""
        self.wandb = WandbMirror(config, self.run_dir, run_id)

    def wandb_id(self, default: str | None) -> str | None:
        """The wandb run's id (kept in checkpoints so that a resumed run continues it)."""
        return self.wandb.run_id if self.wandb is not None else default

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (and mirror it to wandb)."""
        self._file.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        self._file.flush()
        if self.wandb is not None:
            self.wandb.log(record)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.run_dir / "summary.json", jsonable(summary), sort_keys=True)

    def close(self, summary: dict[str, Any]) -> None:
        """Close metrics.jsonl; hand `summary` to wandb and finish its run."""
        self._file.close()
        if self.wandb is not None:
            self.wandb.summary(summary)
            self.wandb.finish()


class ProgressBar:
    """The run's tqdm bar on stderr: epochs done, with updates/s, the critic loss and the last
    evaluation's score as its postfix. Disabled when quiet or stderr is not a terminal."""

    def __init__(self, epochs: int, epochs_done: int, desc: str, *, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.epochs = epochs
        self.bar = tqdm(
            total=epochs,
            initial=epochs_done,
            desc=desc,
            unit="epoch",
            disable=disable or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        self._postfix: dict[str, str] = {}

    def show(
        self, epochs_done: int, values: dict[str, Any], last_eval: dict[str, Any] | None
    ) -> None:
        """Update the postfix from a train record's `values` (and the last evaluation)."""
        if self.bar.disable:
            return
        post = self._postfix
        post["epoch"] = f"{epochs_done + 1}/{self.epochs}"
        if "updates_per_s" in values:
            post["upd/s"] = f"{values['updates_per_s']:.1f}"
        if "critic_loss" in values:
            post["critic"] = f"{values['critic_loss']:.3g}"
        if last_eval is not None:
            post["score"] = f"{last_eval['score_mean']:.1f}"
        self.bar.set_postfix(post, refresh=True)

    def epoch_done(self, epochs_done: int, last_eval: dict[str, Any] | None) -> None:
        self.bar.update(1)
        self.show(epochs_done, {}, last_eval)

    def close(self) -> None:
        self.bar.close()
