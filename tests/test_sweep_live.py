"""eor.sweep.live.LiveTable: in place on a terminal, appended on change elsewhere."""

from __future__ import annotations

import io

from eor.sweep.live import LiveTable


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_the_table_only_when_more_than_its_clock_changed() -> None:
    log = io.StringIO()
    live = LiveTable(log)
    assert not live.in_place
    live.show("[10:00:00] running 1\n  a: epoch 1")
    live.show("[10:00:05] running 1\n  a: epoch 1")  # only the clock moved: nothing written
    live.show("[10:00:10] running 1\n  a: epoch 2")
    live.note("failed  b")
    live.end("1 done")
    assert log.getvalue() == (
        "[10:00:00] running 1\n  a: epoch 1\n"
        "[10:00:10] running 1\n  a: epoch 2\n"
        "failed  b\n1 done\n"
    )
    assert "\x1b" not in log.getvalue()


def test_terminal_redraws_over_the_old_table() -> None:
    term = Terminal()
    live = LiveTable(term)
    assert live.in_place
    live.show("[10:00:00] running 2\n  a: epoch 1\n  b: epoch 1")
    live.show("[10:00:05] running 1")  # every draw, the clock too
    live.note("failed  b")  # above the table, which is drawn again under it
    live.show("[10:00:10] done 1")
    live.end("1 done, 1 failed")
    assert term.getvalue() == (
        "[10:00:00] running 2\n  a: epoch 1\n  b: epoch 1\n"
        "\x1b[3F\x1b[J[10:00:05] running 1\n"
        "\x1b[1F\x1b[Jfailed  b\n[10:00:05] running 1\n"
        "\x1b[1F\x1b[J[10:00:10] done 1\n"
        "1 done, 1 failed\n"
    )


def test_a_note_before_any_table_is_just_written() -> None:
    term = Terminal()
    LiveTable(term).note("started")
    assert term.getvalue() == "started\n"
