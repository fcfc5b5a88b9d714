"""The run driver of `eor train-model`: train a dynamics ensemble into a model directory.

    trainer = train_to_dir(config, dataset, "models/hc", device="cpu", progress=tqdm_bar)

It checkpoints as it goes (the directory's format and its crash safety: `eor.dynamics.io`),
resumes an unfinished directory exactly, and shows the progress on a tqdm-like bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eor.dynamics.config import DynamicsConfig
from eor.dynamics.io import (
    META,
    DynamicsLoadError,
    dataset_identity,
    env_identity,
    load_train_state,
    read_config,
    read_meta,
    read_metrics,
    save_checkpoint,
)
from eor.dynamics.train import DynamicsTrainer

EpochHook = Callable[[DynamicsTrainer, dict[str, Any]], None]


def train_to_dir(
    config: DynamicsConfig,
    dataset: Any,
    save_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    resume: bool = False,
    checkpoint_interval: float = 60.0,
    on_epoch: EpochHook | None = None,
    progress: Any = None,
) -> DynamicsTrainer:
    """Train on `dataset` (an eor.data.Dataset), checkpointing into `save_path`.

    A checkpoint is written after epoch 0, then after any epoch when `checkpoint_interval`
    seconds have passed since the last one (0: every epoch), and at the end (final model). With
    `resume`, the run continues from the directory's checkpoint: model, optimiser,
    early-stopping state, epoch and RNG, so it ends as the uninterrupted run would.
    `on_epoch(trainer, metrics)` is called after each epoch (after its checkpoint, if any).
    `progress`: a tqdm-like object (update(n), set_postfix(dict)) or None.
    """
    save_path = Path(save_path)
    env = env_identity(config.env_name)
    if dataset.env.name != env["name"]:
        raise ValueError(
            f"dataset {dataset.name!r} is for env {dataset.env.name!r}, not {env['name']!r}"
        )
    ds_id = dataset_identity(dataset)
    metrics: list[dict[str, Any]] = []
    state = None
    if resume:
        meta = read_meta(save_path)
        if meta.get("complete"):
            raise DynamicsLoadError(
                f"{str(save_path)!r} has finished training; there is nothing to resume"
            )
        saved_checksum = meta.get("dataset", {}).get("checksum")
        if saved_checksum != ds_id["checksum"]:
            raise DynamicsLoadError(
                f"{str(save_path)!r} was trained on a dataset with sha256 {saved_checksum}, "
                f"but the given dataset has {ds_id['checksum']}; resume needs the same data"
            )
        if meta["env"].get("name") != env["name"]:
            raise DynamicsLoadError(
                f"{str(save_path)!r} was trained for env {meta['env'].get('name')!r}, not {env['name']!r}"
            )
        config = read_config(save_path)
        state = load_train_state(save_path, meta)
        metrics = read_metrics(save_path, meta)
    elif (save_path / META).exists() or (save_path.exists() and any(save_path.iterdir())):
        raise FileExistsError(
            f"--save_path {str(save_path)!r} already exists and is not empty; pass --resume to "
            "continue its training, or choose another directory"
        )

    trainer = DynamicsTrainer(
        config,
        dataset.observations,
        dataset.actions,
        dataset.rewards,
        dataset.next_observations,
        env_name=env["name"],
        device=device,
    )

    def checkpoint(final: bool) -> None:
        save_checkpoint(save_path, trainer, env=env, dataset=ds_id, metrics=metrics, final=final)

    if state is not None:
        trainer.load_state_dict(state)
        if progress is not None:
            progress.update(trainer.epoch)
    else:
        start = trainer.start()
        metrics.append(
            {"epoch": 0, "train_loss": None, **{k: v for k, v in start.items() if k != "epoch"}}
        )
        checkpoint(final=False)
    last_save = time.monotonic()
    while not trainer.done:
        row = trainer.run_epoch()
        metrics.append(row)
        if not trainer.done and time.monotonic() - last_save >= checkpoint_interval:
            checkpoint(final=False)
            last_save = time.monotonic()
        if progress is not None:
            _show(progress, trainer, row)
        if on_epoch is not None:
            on_epoch(trainer, row)
    trainer.finish()
    checkpoint(final=True)
    return trainer


def _show(progress: Any, trainer: DynamicsTrainer, row: dict[str, Any]) -> None:
    mse = sorted(row["holdout_mse"])[: trainer.config.num_elites]
    progress.update(trainer.epoch - progress.n)
    progress.set_postfix(
        {
            "holdout": f"{float(np.mean(mse)):.4g}",
            "best_ep": trainer.stopper.last_improvement(),
            "improving": f"{trainer.stopper.members_improving()}/{trainer.config.num_models}",
            "lr": f"{trainer.lr:.1e}",
        },
        refresh=False,
    )
