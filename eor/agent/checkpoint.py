"""Atomic checkpoints of a RAVL run and the RNG-state helpers they need.

A full checkpoint (`RUN/checkpoints/latest.pt`) is one `torch.save` file holding the whole state
of the training loop, so that `--resume` continues bit-identically:

    format, eor_version, config            the TrainAgentConfig as a dict
    learner                                RAVL.state_dict(): actor, critics, targets, log alpha,
                                           the three optimisers
    counters                               epochs_done, epoch_updates, rollout_done, total_updates,
                                           elapsed_s, metrics_offset, best/last score and return
    rng                                    torch (CPU and CUDA), numpy, python, the rollout
                                           generator, the real buffer's sampler
    model_buffer                           the FIFO model buffer: its `save` file as bytes, plus
                                           its sampler state

The buffer travels inside the one file (not beside it) so that a checkpoint is replaced by a
single `os.replace`: a crash at any moment leaves either the old or the new checkpoint, never a
mix. `epoch_XXXX.pt` snapshots (`--save_every`) hold the config, counters and learner only.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import eor
from eor.fileio import atomic_torch_save  # noqa: F401 - re-exported for the trainer and tests

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAMES = ("checkpoints/latest.pt", "latest.pt")
"""Where a checkpoint is looked for in a directory, in order (`resolve_checkpoint`)."""


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by eor (a run directory, its checkpoints/ dir or a .pt file)."""
    path, ckpt = read_checkpoint(path, map_location)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an eor agent checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def read_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """(file, contents) of any torch checkpoint holding a dict: `path` resolved as
    `resolve_checkpoint` does, read, and checked to be a dict; errors name the file.
    Checkpoints are full pickles (RNG and optimiser states): load only trusted files."""
    file = resolve_checkpoint(path)
    try:
        # Our own file, with numpy/python RNG states and bytes inside: not weights-only.
        ckpt = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt or foreign file: say which
        raise ValueError(f"cannot read checkpoint {file}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {file} holds a {type(ckpt).__name__}, expected a dict")
    return file, ckpt


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file of `path`: a file is itself; a directory (a run directory, or its
    checkpoints/ folder) gives the first of its CHECKPOINT_NAMES that exists."""
    p = Path(path)
    if p.is_dir():
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                return p / name
        looked = ", ".join(str(p / name) for name in CHECKPOINT_NAMES)
        raise FileNotFoundError(
            f"no checkpoint in run directory {p}: looked for {looked} "
            "(was the run started, and did it finish at least one epoch?)"
        )
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p


# ----------------------------------------------------------------------------- RNG states
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG the training loop draws from (the buffers' samplers are saved separately)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global stream other code may use
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if generator is not None:
        state["generator"] = generator.get_state()
        state["generator_device"] = generator.device.type
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        if state.get("generator_device", generator.device.type) == generator.device.type:
            generator.set_state(state["generator"])
        else:
            # Resumed on another device kind: a CPU generator state cannot seed a CUDA generator
            # (or back), so derive a seed from it. The run continues, not bit-identically.
            src = torch.Generator()
            if state.get("generator_device") == "cpu":
                src.set_state(state["generator"])
            generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=src).item()))


# ----------------------------------------------------------------------------- buffers
def buffer_to_bytes(buffer: Any) -> bytes:
    """The contents of an `eor.ReplayBuffer`, through its own `save` file format."""
    with tempfile.TemporaryDirectory(prefix="eor-buffer-") as tmp:
        path = Path(tmp) / "buffer.bin"
        buffer.save(str(path))
        return path.read_bytes()


def buffer_from_bytes(data: bytes) -> Any:
    """Inverse of `buffer_to_bytes`: a new `eor.ReplayBuffer`."""
    with tempfile.TemporaryDirectory(prefix="eor-buffer-") as tmp:
        path = Path(tmp) / "buffer.bin"
        path.write_bytes(data)
        return eor.ReplayBuffer.load(str(path))


# ----------------------------------------------------------------------------- --save
def _yaml_scalar(value: Any) -> str:
    """A YAML scalar for None, bool, int, float or str (strings double-quoted, JSON-escaped)."""
    import json
    import math

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def prepare_agent_save_dir(config: Any, name_expanded: str, *, resuming: bool = False) -> Path:
    """--save: create SAVE_PATH/agent_<name_expanded> and write its config.yaml (the config
    under the reference's field names), as the reference does at the start of a run.

    A new run refuses an existing directory (the reference's mkdir(exist_ok=False)); a resumed
    run reuses its own.
    """
    from eor.fileio import atomic_write

    save_dir = config.agent_save_dir(name_expanded)
    if save_dir.exists() and not resuming:
        raise FileExistsError(
            f"save_path: {save_dir} already exists; choose another --save_path or --name"
        )
    save_dir.mkdir(parents=True, exist_ok=True)
    ref = config.reference_dict(name_expanded)
    text = "".join(f"{k}: {_yaml_scalar(v)}\n" for k, v in ref.items())
    atomic_write(save_dir / "config.yaml", lambda f: f.write(text), binary=False)
    return save_dir


def save_reference_agent(learner: Any, config: Any, name_expanded: str) -> Path:
    """--save: write the learner's `reference_state_dict()` to
    SAVE_PATH/agent_<name_expanded>/weights.pt (the reference's file and layout)."""
    path = config.agent_save_dir(name_expanded) / "weights.pt"
    atomic_torch_save(learner.reference_state_dict(), path)
    return path
