"""eor: fast, faithful RAVL (edge-of-reach offline model-based RL).

The compiled replay buffer is re-exported here; everything else lives in submodules
(`eor.ops`, `eor.data`, `eor.dynamics`, `eor.agent`) so that `import eor` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Before anything imports torch: idle OpenMP threads sleep, not spin (eor.runtime.passive_openmp).
from eor.runtime import passive_openmp  # noqa: E402

passive_openmp()

try:  # the C++ core is optional at import time so that `eor info` can report a broken build
    from eor.buffer import ReplayBuffer, sample_mixed

    CORE_AVAILABLE = True
    CORE_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    CORE_AVAILABLE = False
    CORE_ERROR = str(exc)

__all__ = ["__version__", "ReplayBuffer", "sample_mixed", "CORE_AVAILABLE"]
