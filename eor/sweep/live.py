"""The sweep's live progress table: redrawn in place on a terminal, appended to a log.

On a terminal the table is drawn once and then overwritten where it stands (cursor up over its
old lines, clear to the end of the screen, draw), so the screen shows one table. Elsewhere (a
file, a pipe, Ray's logs) overwriting would leave escape codes in the log, so the table is
written out again, whole, only when something in it other than its clock changed. Messages
(`note`) go above the table: it is cleared, the message written, and the table drawn again;
`end` writes a last line under it.
"""

from __future__ import annotations

import sys
from typing import TextIO

# ANSI: move the cursor to the start of the line n lines up; clear from it to the end of screen.
_UP = "\x1b[{n}F"
_CLEAR = "\x1b[J"


class LiveTable:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = bool(isatty and isatty())
        self._lines = 0  # lines of the table now on screen (in_place)
        self._table = ""  # the table last drawn

    def show(self, table: str) -> None:
        """Draw `table`, whose first line carries a clock, in place or (not a terminal) append
        it when its other lines changed."""
        unchanged = self._table and _body(table) == _body(self._table)
        if not self.in_place and unchanged:
            return
        self._clear()
        self._table = table
        self._draw()

    def note(self, message: str) -> None:
        """Write a line above the table (on a terminal: the table is redrawn under it)."""
        self._clear()
        self.stream.write(message + "\n")
        if self.in_place and self._table:
            self._draw()
        self.stream.flush()

    def end(self, message: str) -> None:
        """Write a last line under the table, which stays as it is."""
        self.stream.write(message + "\n")
        self.stream.flush()
        self._lines = 0

    def _draw(self) -> None:
        self.stream.write(self._table + "\n")
        if self.in_place:
            self._lines = self._table.count("\n") + 1
        self.stream.flush()

    def _clear(self) -> None:  # only a table drawn in place has lines to clear
        if self._lines:
            self.stream.write(_UP.format(n=self._lines) + _CLEAR)
            self._lines = 0


def _body(table: str) -> str:
    """The table without its first line (the clock): what tells a real change."""
    return table.partition("\n")[2]


__all__ = ["LiveTable"]
