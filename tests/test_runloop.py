"""The pieces eor train-agent and eor train-online share: eor.runloop.RunLoop and the resume
checks of eor.agent.setup."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from eor.agent.setup import (
    TrainingSetupError,
    apply_resume_overrides,
    check_checkpoint_dims,
    check_new_run_dir,
    checkpoint_to_resume,
    run_threads,
)
from eor.online.config import TrainOnlineConfig
from eor.runloop import RunLoop


class _Log:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class _Loop(RunLoop):
    STOP_AT = "the current widget"

    def __init__(self) -> None:
        self.elapsed_before = 5.0
        self._stop_requested = False
        self.log = _Log()
        self.step = 3

    def _position(self) -> dict[str, Any]:
        return {"step": self.step}


def test_record_has_kind_position_time_then_values_in_that_order() -> None:
    loop = _Loop()
    rec = loop._record("train", {"loss": 1.5})
    assert list(rec) == ["kind", "step", "time", "loss"]
    assert rec["step"] == 3 and rec["time"] == 5.0  # not started: the earlier sessions' time
    assert loop.log.records == [rec]


def test_first_sigint_requests_a_stop_second_raises(capsys: pytest.CaptureFixture[str]) -> None:
    loop = _Loop()
    loop._on_sigint(signal.SIGINT, None)
    assert loop._stop_requested
    assert "after the current widget (press Ctrl-C again" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        loop._on_sigint(signal.SIGINT, None)


def test_sigint_handler_is_installed_and_restored_in_the_main_thread_only() -> None:
    loop = _Loop()
    before = signal.getsignal(signal.SIGINT)
    previous = loop._install_sigint()
    assert signal.getsignal(signal.SIGINT) == loop._on_sigint
    loop._restore_sigint(previous)
    assert signal.getsignal(signal.SIGINT) == before
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(loop._install_sigint()))
    thread.start()
    thread.join()
    assert got == [None] and signal.getsignal(signal.SIGINT) == before


def test_resume_checks_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TrainingSetupError, match="is not a directory"):
        checkpoint_to_resume(tmp_path / "nope", "sometimes")
    with pytest.raises(TrainingSetupError, match="has no checkpoint.*writes one sometimes"):
        checkpoint_to_resume(tmp_path, "sometimes")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"")
    assert checkpoint_to_resume(tmp_path, "x") == tmp_path / "checkpoints" / "latest.pt"

    check_checkpoint_dims({"obs_dim": 17, "act_dim": 6}, 17, 6)
    with pytest.raises(TrainingSetupError, match=r"obs/act dims .*the env has 11/3"):
        check_checkpoint_dims({"obs_dim": 17, "act_dim": 6}, 11, 3)

    check_new_run_dir(tmp_path, resuming=False)
    (tmp_path / "config.json").write_text("{}")
    check_new_run_dir(tmp_path, resuming=True)
    with pytest.raises(TrainingSetupError, match="already holds a run"):
        check_new_run_dir(tmp_path, resuming=False)


def test_apply_resume_overrides_allows_only_the_listed_fields() -> None:
    config = TrainOnlineConfig()
    apply_resume_overrides(config, {"total_steps": 7, "seed": 0}, frozenset({"total_steps"}))
    assert config.total_steps == 7  # seed given with its saved value is fine
    with pytest.raises(TrainingSetupError, match="seed cannot change.*allowed: total_steps"):
        apply_resume_overrides(config, {"seed": 1}, frozenset({"total_steps"}))
    with pytest.raises(TrainingSetupError, match="unknown setting 'nope'"):
        apply_resume_overrides(config, {"nope": 1}, frozenset())


def test_run_threads_sets_threads_unless_deterministic_and_restores() -> None:
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    want = 3 if before[0] != 3 else 2
    with run_threads(want, False):
        assert torch.get_num_threads() == want
        assert not torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with run_threads(want, True):  # --deterministic: one thread, whatever --threads says
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with run_threads(None, False):
        assert torch.get_num_threads() == before[0]
