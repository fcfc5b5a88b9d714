"""Crash-safe file writes and checksums shared by datasets, model directories and run directories.

A write goes to a temporary file in the destination's folder, is fsync'd, then `os.replace`d
onto the destination: a crash or Ctrl-C at any moment leaves either the old file or the new one,
never a half-written one, and no temporary file behind. The files and folders get the modes
that open() and mkdir() would give them (`umask_mode`), not tempfile's private 0600 / 0700, so
that a run directory or dataset on shared storage is readable by the group as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process's umask: what a new file (0o666) or folder (0o777) gets from
    open() or mkdir(). tempfile's mkstemp and mkdtemp make theirs 0600 and 0700."""
    mask = os.umask(0)  # the only portable way to read it: set, then put it back
    os.umask(mask)
    return mode & ~mask


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in `chunk`-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, binary: bool
) -> None:
    """Call `write(f)` on a temp file beside `path`, fsync it, then os.replace it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a half-written temp file behind.
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **dumps_kwargs: Any) -> None:
    """Write `obj` as indented JSON (plus a newline), atomically."""
    dumps_kwargs.setdefault("indent", 2)
    atomic_write(path, lambda f: f.write(json.dumps(obj, **dumps_kwargs) + "\n"), binary=False)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save(obj)` to `path`, atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), binary=True)
