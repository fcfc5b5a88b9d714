"""benchmarks/gpu_check.sh, its bookkeeping (benchmarks/gpu_summary.py) and the `--device cuda`
option of bench_ensemble.py and bench_agent.py, as far as a machine without a GPU can check them.

The script's GPU flow runs here against a fake Python (a shell script that answers the CUDA
probe and plays each part: one fails, one hangs, the others pass), so that the recording,
the per-part timeouts, the summary and the exit status are checked without CUDA. What the parts
measure on a real GPU is not checked here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a directory of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_agent, bench_ensemble, gpu_summary  # noqa: E402
from benchmarks.common import EXIT_SKIPPED  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = [
    "compile_check",
    "pytest_gpu",
    "ensemble",
    "agent",
    "train_data",
    "train_agent",
    "train_agent_cuda_graph",
]
RESULT_KEYS = {"machine", "git_sha", "results", "speedups"}
# Also skipped where nvidia-smi exists: another Python there may see the GPU, and the script
# would then run the whole check.
no_cuda = pytest.mark.skipif(
    torch.cuda.is_available() or shutil.which("nvidia-smi") is not None,
    reason="checks the behaviour on a machine without a GPU",
)


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    full = {k: v for k, v in os.environ.items() if k not in ("OUT", "EOR_PYTHON")}
    full.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A stand-in for a Python whose torch sees a GPU. gpu_summary.py runs for real; every part is
# played: pytest fails, bench_ensemble hangs (its timeout must stop it), bench_agent writes a
# result JSON, train-agent writes a run directory and lists --cuda_graph in its help.
FAKE_PYTHON = r"""#!/usr/bin/env bash
REAL=@REAL@
arg_after() { local want=$1; shift; while (($#)); do [[ $1 == "$want" ]] && { echo "$2"; return; }; shift; done; }
case "$1" in
-) cat >/dev/null; echo "torch 0.0+fake, Fake GPU"; exit 0 ;;
-c) exit 0 ;;
benchmarks/gpu_summary.py) exec "$REAL" "$@" ;;
benchmarks/bench_ensemble.py) exec sleep 60 ;;
benchmarks/bench_agent.py)
    out=$(arg_after --out "$@")
    echo '{"machine": {}, "git_sha": "x", "results": [{"case": "update N=10", "impl": "eor", "updates_per_s": 321.0, "vs_ref": 3.5}], "speedups": {"update_n10_vs_ref": 3.5}, "ops_backends": {"critic_loss": "torch (Triton failed: boom)"}}' >"$out"
    exit 0 ;;
-m)
    case "$2" in
    pytest)
        for a in "$@"; do [[ $a == --junitxml=* ]] && xml=${a#--junitxml=}; done
        cat >"$xml" <<'EOF'
<testsuites><testsuite name="pytest"><testcase classname="tests.test_kernels_gpu" name="test_ok" time="0.1"/><testcase classname="tests.test_kernels_gpu" name="test_bad" time="0.1"><failure message="AssertionError: mismatch 3e-2">trace</failure></testcase><testcase classname="t" name="test_skip"><skipped message="x"/></testcase></testsuite></testsuites>
EOF
        echo "1 failed, 1 passed"; exit 1 ;;
    eor.kernels.compile_check)
        echo '{"launches": 3, "failed": 0}' >"$(arg_after --json "$@")"; exit 0 ;;
    eor)
        if [[ $3 == train-agent && $4 == --help ]]; then echo "  --cuda_graph  capture"; exit 0; fi
        if [[ $3 == train-agent ]]; then
            run=$(arg_after --run_dir "$@"); mkdir -p "$run"
            printf '%s\n' '{"kind": "rollout", "rollout_time": 0.5}' \
                '{"kind": "train", "updates_per_s": 50.0}' '{"kind": "train", "updates_per_s": 200.0}' \
                '{"kind": "train", "updates_per_s": 210.0}' >"$run/metrics.jsonl"
            echo '{"status": "done", "total_updates": 2000, "wall_time_s": 12.5, "last_score": 1.25}' >"$run/summary.json"
        fi
        exit 0 ;;
    esac ;;
esac
echo "fake python: unexpected arguments: $*" >&2
exit 9
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "fakepython"
    path.write_text(FAKE_PYTHON.replace("@REAL@", sys.executable))
    path.chmod(0o755)
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------ arguments


def test_help_describes_parts_options_and_exit_status() -> None:
    r = run_script("--help", timeout=30)
    assert r.returncode == 0, r.stderr
    for word in ["--quick", "--dry-run", "--require-cuda", "--budget", "--out-dir", "$OUT"]:
        assert word in r.stdout
    assert all(part in r.stdout for part in PARTS)
    assert "Exit status" in r.stdout and "3 no CUDA" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--budget"], "--budget needs a value"),
        (["--budget", "ten"], "--budget must be a positive number of seconds, got 'ten'"),
        (["--budget", "0"], "--budget must be a positive number of seconds, got '0'"),
        (["--out-dir"], "--out-dir needs a value"),
    ],
)
def test_bad_arguments_exit_2_naming_them(args: list[str], message: str) -> None:
    r = run_script(*args, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr


def test_dry_run_lists_every_part_and_writes_nothing(tmp_path: Path, fake_python: Path) -> None:
    out = tmp_path / "results"
    r = run_script(
        "--dry-run", "--quick", "--out-dir", str(out), env={"EOR_PYTHON": str(fake_python)}
    )
    assert r.returncode == 0, r.stderr
    assert f"python {fake_python}" in r.stdout
    for part in PARTS:
        assert re.search(rf"part +{part} ", r.stdout), part
    assert "EOR_BACKEND=triton" in r.stdout and "-m pytest -m gpu" in r.stdout
    assert "bench_ensemble.py --device cuda --quick" in r.stdout
    assert "--cuda_graph" in r.stdout
    assert not out.exists()


# ------------------------------------------------------------------------------ no CUDA


@no_cuda
def test_without_cuda_every_part_is_skipped_and_the_summary_says_so(tmp_path: Path) -> None:
    """The script as it is run on this machine: the default Pythons, none seeing CUDA."""
    out, copy = tmp_path / "results", tmp_path / "out"
    r = run_script("--out-dir", str(out), env={"OUT": str(copy)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA device visible" in r.stdout
    summary = read(out / "summary.json")
    assert RESULT_KEYS <= set(summary)
    assert summary["cuda_visible"] is False and summary["ran"] == [] and summary["failed"] == []
    assert [p["part"] for p in summary["results"]] == PARTS
    assert {p["status"] for p in summary["results"]} == {"skipped"}
    text = (out / "summary.md").read_text()
    assert "No CUDA device visible: nothing ran." in text
    assert all(f"| {part} | skipped |" in text for part in PARTS)
    assert sorted(p.name for p in copy.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]


@no_cuda
def test_require_cuda_exits_3_without_cuda(tmp_path: Path) -> None:
    r = run_script("--require-cuda", "--out-dir", str(tmp_path), env={"EOR_PYTHON": sys.executable})
    assert r.returncode == 3
    assert "no CUDA device visible" in r.stderr
    assert read(tmp_path / "summary.json")["cuda_visible"] is False


# ------------------------------------------------------------------------------ the GPU flow


def test_gpu_flow_records_each_part_and_fails_at_the_end(tmp_path: Path, fake_python: Path):
    out, copy = tmp_path / "results", tmp_path / "out"
    out.mkdir()
    (out / "ensemble.json").write_text('{"stale": true, "speedups": {"old": 9.9}}')
    r = run_script(
        "--out-dir",
        str(out),
        env={"EOR_PYTHON": str(fake_python), "OUT": str(copy), "GPU_CHECK_PART_TIMEOUT": "1"},
    )
    assert r.returncode == 1, r.stdout + r.stderr  # pytest failed, the ensemble part hung
    summary = read(out / "summary.json")
    status = {p["part"]: p["status"] for p in summary["results"]}
    compile_status = "passed" if (ROOT / "kernels" / "compile_check.py").exists() else "skipped"
    assert status == {
        "compile_check": compile_status,
        "pytest_gpu": "failed",
        "ensemble": "timeout",
        "agent": "passed",
        "train_data": "passed",
        "train_agent": "passed",
        "train_agent_cuda_graph": "passed",
    }
    assert summary["failed"] == ["pytest_gpu", "ensemble"]
    hung = next(p for p in summary["results"] if p["part"] == "ensemble")
    assert hung["rc"] == 124 and hung["seconds"] >= 1.0  # stopped by its 1 s timeout
    # The stale ensemble.json of an earlier run is gone, never reported as this run's.
    assert not (out / "ensemble.json").exists()
    assert summary["speedups"] == {"agent.update_n10_vs_ref": 3.5}
    # One JSON per part, each with the keys of every benchmarks/results file.
    for name in ["compile_check", "pytest_gpu", "agent", "train_agent"]:
        assert RESULT_KEYS <= set(read(out / f"{name}.json")), name
    if compile_status == "passed":  # the module's own JSON report is kept in the record
        assert read(out / "compile_check.json")["results"][0]["report"] == {
            "launches": 3,
            "failed": 0,
        }
    tests = read(out / "pytest_gpu.json")["results"][0]
    assert tests["tests"] == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert tests["failures"] == ["tests.test_kernels_gpu::test_bad: AssertionError: mismatch 3e-2"]
    assert tests["log_tail"] == ["1 failed, 1 passed"]
    train = read(out / "train_agent.json")["results"]
    assert [t["part"] for t in train] == ["train_data", "train_agent", "train_agent_cuda_graph"]
    assert train[1]["run"]["updates_per_s_median_after_first"] == 210.0
    assert train[1]["run"]["last_score"] == 1.25
    text = (out / "summary.md").read_text()
    assert "| pytest_gpu | **FAILED** (rc 1) |" in text
    assert "| ensemble | **TIMEOUT** (rc 124) |" in text
    assert "Failed or not run: pytest_gpu, ensemble." in text
    assert "210.0 updates/s" in text and "| agent.update_n10_vs_ref | 3.5 |" in text
    assert "| update N=10 | eor |" in text and "critic_loss torch (Triton failed: boom)" in text
    # $OUT gets what the device tool can bring back: at most 8 plain files, plain names.
    copied = sorted(p.name for p in copy.iterdir())
    assert len(copied) <= 8 and all(re.fullmatch(r"[\w.-]+", n) for n in copied)
    assert {"summary.md", "summary.json", "logs.tar.gz", "agent.json"} <= set(copied)
    assert (out / "logs" / "ensemble.log").exists()


def test_a_part_without_budget_left_is_not_run_and_fails(tmp_path: Path, fake_python: Path):
    r = run_script(
        "--budget", "16", "--out-dir", str(tmp_path), env={"EOR_PYTHON": str(fake_python)}
    )
    assert r.returncode == 1
    summary = read(tmp_path / "summary.json")
    ran = {p["part"]: p for p in summary["results"] if p["status"] != "skipped"}
    assert ran and {p["status"] for p in ran.values()} == {"not_run"}
    assert "budget left" in ran["pytest_gpu"]["detail"]
    assert "| pytest_gpu | **NOT RUN** |" in (tmp_path / "summary.md").read_text()


def test_cuda_graph_part_is_skipped_when_train_agent_lacks_the_flag(
    tmp_path: Path, fake_python: Path
) -> None:
    fake_python.write_text(fake_python.read_text().replace("--cuda_graph  capture", "--epochs"))
    run_script("--out-dir", str(tmp_path), env={"EOR_PYTHON": str(fake_python),
                                                "GPU_CHECK_PART_TIMEOUT": "1"})  # fmt: skip
    parts = {p["part"]: p for p in read(tmp_path / "summary.json")["results"]}
    assert parts["train_agent"]["status"] == "passed"
    assert parts["train_agent_cuda_graph"]["status"] == "skipped"
    assert "no --cuda_graph" in parts["train_agent_cuda_graph"]["detail"]


# ------------------------------------------------------------------------------ gpu_summary


def test_read_junit_counts_and_names_failures(tmp_path: Path) -> None:
    suite = ET.Element("testsuite")
    ET.SubElement(suite, "testcase", classname="m", name="ok")
    bad = ET.SubElement(suite, "testcase", classname="m", name="bad")
    ET.SubElement(bad, "error", message="RuntimeError: CUDA error\nmore")
    ET.SubElement(ET.SubElement(suite, "testcase", classname="m", name="s"), "skipped")
    path = tmp_path / "j.xml"
    ET.ElementTree(suite).write(path)
    got = gpu_summary.read_junit(path)
    assert got["tests"] == {"passed": 1, "failed": 0, "errors": 1, "skipped": 1}
    assert got["failures"] == ["m::bad: RuntimeError: CUDA error"]


def test_finish_fails_only_for_failing_parts(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert gpu_summary.main(["start", "--dir", d, "--cuda", "yes"]) == 0
    gpu_summary.main(["part", "--dir", d, "--name", "a", "--status", "passed"])
    gpu_summary.main(["part", "--dir", d, "--name", "b", "--status", "skipped"])
    assert gpu_summary.main(["finish", "--dir", d]) == 0
    gpu_summary.main(["part", "--dir", d, "--name", "c", "--status", "timeout", "--rc", "124"])
    assert gpu_summary.main(["finish", "--dir", d]) == 1
    summary = read(tmp_path / "summary.json")
    assert summary["ran"] == ["a", "c"] and summary["failed"] == ["c"]


def test_part_needs_start_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_summary.main(["part", "--dir", str(tmp_path), "--name", "a", "--status", "passed"])
    assert "run `start` first" in capsys.readouterr().err


def test_unknown_status_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_summary.main(["part", "--dir", str(tmp_path), "--name", "a", "--status", "ok"])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------ --device cuda


@no_cuda
@pytest.mark.parametrize("bench", [bench_ensemble, bench_agent], ids=["ensemble", "agent"])
def test_device_cuda_without_cuda_is_a_clean_skip(
    bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--device", "cuda", "--quick", "--out", str(out)])
    assert exc.value.code == EXIT_SKIPPED == 77
    assert (
        "skipped: --device cuda asked for, but no CUDA device is visible" in capsys.readouterr().err
    )
    assert not out.exists()


def test_device_option_is_checked_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_agent.main(["--device", "tpu"])
    assert exc.value.code == 2 and "--device: invalid choice: 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench_ensemble.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--device {cpu,cuda}" in text and "--no-compile" in text


def test_cuda_timing_keeps_going_after_a_failing_provider() -> None:
    calls: list[str | None] = []

    def ok() -> None:
        calls.append(os.environ.get("EOR_BACKEND"))

    def broken() -> None:
        raise RuntimeError("kernel launch failed\nsecond line")

    before = os.environ.get("EOR_BACKEND")
    t = bench_ensemble._time_providers(
        {"ref": (ok, None), "eor triton": (broken, "triton"), "eor torch": (ok, "torch")},
        torch.device("cpu"),
        quick=True,
    )
    assert t["eor triton"] == {"error": "RuntimeError: kernel launch failed"}
    assert t["ref"]["median_s"] > 0 and t["eor torch"]["median_s"] > 0
    assert "torch" in calls and os.environ.get("EOR_BACKEND") == before
    rows = bench_ensemble._provider_rows("c", "s", t, "ref", {"eor torch": 1e6})
    assert rows[1] == {"case": "c", "shape": "s", "provider": "eor triton",
                       "error": "RuntimeError: kernel launch failed"}  # fmt: skip
    keys = bench_ensemble._speedup_keys("c", t, "eor torch", "ref", None, "eor triton")
    assert set(keys) == {"c"}  # the Triton side failed: no _vs_torch key
    assert keys["c"] == pytest.approx(t["ref"]["median_s"] / t["eor torch"]["median_s"])


@pytest.mark.parametrize(
    ("errors", "code"),
    [
        (["rollout_step / eor gathered triton: RuntimeError: x"], 1),
        (["critic_update_n10 / ref torch.compile: RuntimeError: double backward"], None),
    ],
)
def test_device_cuda_fails_only_when_an_eor_provider_failed(
    errors: list[str], code: int | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The exit status of bench_ensemble --device cuda (CUDA and the run itself stubbed)."""
    from benchmarks import common

    monkeypatch.setattr(common, "require_cuda", lambda prog: None)
    monkeypatch.setattr(
        bench_ensemble, "main_cuda", lambda quick, out, compile_: (tmp_path, errors)
    )
    if code is None:
        bench_ensemble.main(["--device", "cuda"])
    else:
        with pytest.raises(SystemExit) as exc:
            bench_ensemble.main(["--device", "cuda"])
        assert exc.value.code == code


def test_agent_update_rows_leave_out_the_cpu_only_measures_on_cuda() -> None:
    stats = {"ref": {"median_s": 0.02, "spread_s": 0.001, "min_s": 0.019, "repeats": 4},
             "eor": {"median_s": 0.005, "spread_s": 0.0, "min_s": 0.005, "repeats": 4}}  # fmt: skip
    cuda_rows = bench_agent._update_rows(10, stats, 1e3, 10, None, None)
    assert cuda_rows[1]["vs_ref"] == pytest.approx(4.0)
    assert cuda_rows[1]["updates_per_s"] == pytest.approx(200.0)
    assert not {"cpu1_ms", "cold_ms", "cpu1_vs_ref", "cold_vs_ref"} & set(cuda_rows[1])
    cpu_rows = bench_agent._update_rows(10, stats, 1e3, 10, stats, stats)
    # On CPU the keys and their order are those of the committed results/agent.json.
    committed = read(ROOT / "benchmarks" / "results" / "agent.json")["results"]
    assert [list(r) for r in cpu_rows] == [list(r) for r in committed[:2]]


def test_agent_timing_waits_for_the_device_around_each_block() -> None:
    events: list[str] = []
    bench_agent.interleaved(
        {"a": lambda: events.append("a"), "b": lambda: events.append("b")},
        rounds=2,
        warmup=0,
        block=3,
        sync=lambda: events.append("sync"),
    )
    block = ["sync", "a", "a", "a", "sync", "sync", "b", "b", "b", "sync"]
    assert events == block * 2
