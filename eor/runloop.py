"""What eor's resumable training loops share (`eor train-agent`, `eor train-online`): the run
clock that continues across resumes, the metrics records stamped with the run's position, and
Ctrl-C as a request to checkpoint and stop at the loop's next boundary.

A loop class mixes in `RunLoop` and sets `elapsed_before` (seconds of earlier sessions), `_start`
(`time.perf_counter()` when this session's loop began), `log` (an `eor.agent.runlog.RunLog`) and
`_stop_requested`; it names its stopping point in `STOP_AT` and gives `_position()`.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

SigintHandler = Callable[[int, FrameType | None], Any] | int | None


class RunLoop:
    """The clock, the records and the Ctrl-C handling of one training loop (module docstring)."""

    STOP_AT: str = "the current step"
    """Where the first Ctrl-C stops, for its message ("the current update", ...)."""
    STOP_AGAIN: str = "press Ctrl-C again to stop at once"
    """What a second Ctrl-C does, for the same message."""

    elapsed_before: float
    _stop_requested: bool
    log: Any

    def elapsed(self) -> float:
        """Seconds of training in all: earlier sessions' and this one's so far."""
        start = getattr(self, "_start", None)
        return self.elapsed_before + (time.perf_counter() - start if start is not None else 0.0)

    def _position(self) -> dict[str, Any]:
        """The run's position, put in every record after its kind (e.g. epoch and updates)."""
        raise NotImplementedError

    def _record(self, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        """Write one metrics record (kind, position, time, values) and return it."""
        record = {"kind": kind, **self._position(), "time": self.elapsed(), **values}
        self.log.write(record)
        return record

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        print(
            f"\nInterrupted: saving a checkpoint after {self.STOP_AT} ({self.STOP_AGAIN}).",
            file=sys.stderr,
        )

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and return at its next boundary (like Ctrl-C)."""
        self._stop_requested = True

    def _install_sigint(self) -> SigintHandler:
        """Route Ctrl-C to `_on_sigint` (main thread only); the handler to restore, or None."""
        if threading.current_thread() is threading.main_thread():
            return signal.signal(signal.SIGINT, self._on_sigint)
        return None

    @staticmethod
    def _restore_sigint(previous: SigintHandler) -> None:
        """Put back the handler `_install_sigint` returned (None: nothing was installed)."""
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
