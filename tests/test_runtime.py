"""eor.runtime.tune_malloc: freed tensor memory stays in the process (no page faults on reuse).

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from eor import runtime

GLIBC = runtime._glibc_mallopt() is not None

# Allocates and frees float32 tensors of [10, 256, 256] (2.6 MB, above glibc's 128 KiB mmap
# threshold), 14 a round with others alive in between, as a RAVL update does; counts minor page
# faults over the last 4 rounds (after 4 rounds warmed the heap up).
PROBE = """
import json, resource, sys
import torch
from eor import runtime
tuned = runtime.tune_malloc() if sys.argv[1] == "tune" else False
def round_():
    keep = [torch.ones(10, 256, 256) for _ in range(4)]
    for _ in range(5):
        t = torch.ones(10, 256, 256)
        keep.append(t * 2)
    del keep
for _ in range(4):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "again": runtime.tune_malloc() if tuned else None,
                  "faults": faults, "describe": runtime.describe()}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# glibc's documented starting values with its dynamic adjustment off: without them the untuned
# baseline depends on how glibc's adaptive threshold happens to move (0 faults in some runs).
GLIBC_DEFAULTS = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


@pytest.mark.skipif(not GLIBC, reason="malloc tuning needs Linux with glibc")
def test_tuned_process_reuses_freed_tensor_memory() -> None:
    tuned = _probe("tune", **GLIBC_DEFAULTS)
    plain = _probe("plain", **GLIBC_DEFAULTS)
    assert tuned["tuned"] is True and tuned["again"] is True  # idempotent
    assert "applied in this process" in tuned["describe"]
    # Relative to the untuned count measured here, so that the page size and transparent huge
    # pages (which change how many faults one tensor costs) do not matter: untuned, every one
    # of the 56 tensors of the measured rounds is fresh memory and faults at least once (640
    # times with 4 KiB pages: 35,896 faults in all); tuned, they reuse the heap, and at most
    # the odd tensor faults (0 in most runs, 640 or 2,560 in some): under a tenth.
    fresh_tensors = 4 * 14
    assert plain["faults"] >= fresh_tensors, plain
    assert tuned["faults"] < plain["faults"] / 10, (tuned, plain)


def test_env_var_turns_it_off() -> None:
    off = _probe("tune", EOR_MALLOC_TUNING="0")
    assert off["tuned"] is False
    assert off["describe"] == "off (EOR_MALLOC_TUNING=0)"


def test_describe_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EOR_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(runtime, "_glibc_mallopt", lambda: None)
    assert runtime.describe() == "unavailable (needs Linux with glibc)"


def test_info_reports_the_setting() -> None:
    from click.testing import CliRunner

    from eor.cli import main

    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "malloc" in result.output
