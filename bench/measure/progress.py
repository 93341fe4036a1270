"""A one-line progress display on stderr (rewritten in place on a terminal, throttled otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``phase()`` starts a new named step (its own line); ``update()`` refreshes the current one.

    On a terminal the current line is redrawn at most every 0.1 s; when stderr is a file or a
    pipe (CI, ``make bench | tee``) a line is written at most every 2 s, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr
        self._tty = self._out.isatty()
        self._t0 = time.monotonic()
        self._phase = ""
        self._last = 0.0
        self._dirty = False

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self._t0:6.1f}s]"

    def phase(self, name: str) -> None:
        self._end_line()
        self._phase = name
        self._out.write(f"{self._stamp()} {name}\n")
        self._out.flush()
        self._last = 0.0

    def update(self, done: float, total: float | None = None, note: str = "") -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self._tty else 2.0):
            return
        self._last = now
        pct = f" {100 * done / total:5.1f}%" if total else ""
        count = f"{done:,.0f}/{total:,.0f}" if total else f"{done:,.0f}"
        line = f"{self._stamp()}   {self._phase}: {count}{pct} {note}".rstrip()
        if self._tty:
            self._out.write("\r\x1b[2K" + line[:160])
            self._dirty = True
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def info(self, message: str) -> None:
        self._end_line()
        self._out.write(f"{self._stamp()}   {message}\n")
        self._out.flush()

    def _end_line(self) -> None:
        if self._dirty:
            self._out.write("\n")
            self._dirty = False
