"""Which implementation of an op runs: the registry, `backend_for`, `_dispatch`, lazy kernels.

Every op in `eor.ops` picks its implementation **per call** from the tensors' device:

- CUDA tensors with Triton importable -> ``triton``;
- anything else -> ``torch``, the op's fast torch path;
- ``EOR_BACKEND=auto|triton|torch|ref`` overrides the choice. An automatic choice that fails
  falls back to ``torch`` with one logged warning (and is remembered for the rest of the process); an explicit
  ``triton`` that cannot run raises `BackendUnavailableError` with the reason. With
  ``TRITON_INTERPRET=1`` and ``EOR_BACKEND=triton`` the kernels run on CPU tensors (tests).

Triton is imported lazily, only when a kernel is about to run (`load_kernels`), so CPU use never
imports it. This module imports nothing else of eor: the op modules depend on it, never the
other way round.

Adding an op to the dispatch::

    register_op("critic_loss", triton=True)            # once, at import, beside the op
    backend_for("critic_loss", obs.device)              # "triton" | "torch" | "ref"
    out = _dispatch("critic_loss", {"torch": fast, "ref": slow}, obs, act)

`_dispatch` calls the implementation for the chosen backend and does the fallback (one
logged warning per op and device);
`backend_report` lists every registered op (for `eor info`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import torch
from torch import Tensor

BACKENDS = ("auto", "triton", "torch", "ref")

_log = logging.getLogger("eor.ops")
_T = TypeVar("_T")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend (EOR_BACKEND=triton) cannot run here."""


@dataclass
class _OpEntry:
    name: str
    has_triton: bool


_REGISTRY: dict[str, _OpEntry] = {}
# (op name, device type) pairs whose automatic Triton choice failed once: torch from then on.
_TRITON_BROKEN: dict[tuple[str, str], str] = {}


def register_op(name: str, *, triton: bool) -> None:
    """Make `name` known to the dispatch and to `backend_report`.

    triton: whether a Triton implementation exists. An op without one runs the torch path even
    under EOR_BACKEND=triton (reported as such), so that a whole training run can force Triton.
    """
    _REGISTRY[name] = _OpEntry(name, triton)


def requested_backend() -> str:
    """The EOR_BACKEND value (default ``auto``); ValueError for anything else."""
    value = os.environ.get("EOR_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"EOR_BACKEND must be one of {BACKENDS}, got {value!r}")
    return value


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_unavailable_reason(device: torch.device) -> str | None:
    """None if Triton kernels can run on tensors of `device`, else why not."""
    if not _triton_importable():
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if _interpret():
        return None
    return (
        f"tensors are on {device.type!r}, not CUDA, and TRITON_INTERPRET is not 1 "
        "(set TRITON_INTERPRET=1 to run the kernels in the Triton interpreter on CPU, "
        "or use EOR_BACKEND=auto|torch)"
    )


def _device_of(tensors: Sequence[Tensor | None]) -> torch.device:
    for t in tensors:
        if isinstance(t, Tensor):
            return t.device
    return torch.device("cpu")


def _dtype_of(tensors: Sequence[Tensor | None]) -> torch.dtype | None:
    for t in tensors:
        if isinstance(t, Tensor):
            return t.dtype
    return None


def backend_for(op_name: str, device: torch.device | str) -> str:
    """The implementation ("triton", "torch" or "ref") that `op_name` runs on `device`.

    Raises KeyError for an unregistered op, BackendUnavailableError for an explicit
    EOR_BACKEND=triton that cannot run on `device`, ValueError for an invalid EOR_BACKEND.
    """
    return _choose_backend_on(op_name, torch.device(device))


def _choose_backend(op_name: str, *tensors: Tensor | None) -> str:
    """`backend_for` on the first tensor's device."""
    return _choose_backend_on(op_name, _device_of(tensors))


def _choose_backend_on(op_name: str, device: torch.device) -> str:
    entry = _REGISTRY.get(op_name)
    if entry is None:
        raise KeyError(f"unknown op {op_name!r}; register it with eor.ops.register_op")
    requested = requested_backend()
    if requested in ("torch", "ref"):
        return requested
    if requested == "triton":
        if not entry.has_triton:
            return "torch"
        reason = _triton_unavailable_reason(device)
        if reason is not None:
            raise BackendUnavailableError(f"EOR_BACKEND=triton for {op_name}: {reason}")
        return "triton"
    # auto: Triton only for CUDA tensors, and only while it has not failed for this op.
    if (
        entry.has_triton
        and device.type == "cuda"
        and (op_name, device.type) not in _TRITON_BROKEN
        and _triton_importable()
    ):
        return "triton"
    return "torch"


def _dispatch(op_name: str, impls: Mapping[str, Callable[[], _T]], *tensors: Tensor | None) -> _T:
    """Run `impls[backend]()` for the chosen backend, falling back (with one logged warning)
    from an automatic Triton choice that raises. `impls` needs "torch"; a missing "ref" uses "torch"."""
    backend = _choose_backend(op_name, *tensors)
    if backend == "triton" and _dtype_of(tensors) == torch.float64:
        # The kernels accumulate in float32 (the linear forward does not even compile for
        # float64 on a GPU): float64 takes the torch path, or is an error when asked for.
        if requested_backend() == "triton":
            raise BackendUnavailableError(
                f"EOR_BACKEND=triton for {op_name}: the Triton kernels compute in float32, got "
                "float64 tensors; use EOR_BACKEND=auto or torch for float64"
            )
        backend = "torch"
    if backend == "triton" and requested_backend() == "auto":
        try:
            return impls["triton"]()
        except Exception as exc:  # noqa: BLE001 - any kernel failure means: use torch
            device = _device_of(tensors)
            _TRITON_BROKEN[(op_name, device.type)] = f"{type(exc).__name__}: {exc}"
            # Once per op and device (it is not retried): a kernel that fails must not look like
            # "works, just slower".
            _log.warning(
                "eor.ops.%s: the Triton kernel failed on %s (%s: %s); using torch for this op "
                "from now on. EOR_BACKEND=triton raises the error instead.",
                op_name,
                device.type,
                type(exc).__name__,
                exc,
            )
            return impls["torch"]()
    return impls.get(backend, impls["torch"])()


def backend_report(device: torch.device | str) -> dict[str, str]:
    """`backend_for` of each registered op on `device`, as text for people (`eor info`).

    Never raises: an explicit EOR_BACKEND=triton that cannot run is reported with the reason.
    Code that picks a path asks `backend_for`, never this text.
    """
    device = torch.device(device)
    report: dict[str, str] = {}
    for name, entry in _REGISTRY.items():
        try:
            backend = backend_for(name, device)
        except (BackendUnavailableError, ValueError) as exc:
            backend = f"error: {exc}"
        if backend == "torch" and requested_backend() == "triton" and not entry.has_triton:
            backend = "torch (no Triton kernel for this op)"
        if (name, device.type) in _TRITON_BROKEN:
            backend += f" (Triton failed: {_TRITON_BROKEN[(name, device.type)]})"
        report[name] = backend
    return report


_KERNEL_MODULES: dict[str, ModuleType] = {}


def load_kernels(name: str) -> ModuleType:
    """Import `eor.kernels.<name>` lazily, re-importing it when TRITON_INTERPRET changed since:
    `triton.jit` decides at decoration time whether a kernel is compiled or interpreted."""
    if name != "ensemble_linear":  # the others import its jit helpers: reload it first
        load_kernels("ensemble_linear")
    mod = _KERNEL_MODULES.get(name)
    interpret = _interpret()
    if mod is None:
        mod = importlib.import_module(f"eor.kernels.{name}")
    if getattr(mod, "INTERPRETED", None) != interpret:
        mod = importlib.reload(mod)
    _KERNEL_MODULES[name] = mod
    return mod
