"""A progress line for long work: redrawn in place on a terminal, a line every few seconds
otherwise (so CI logs stay short)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, label: str, total: int | None = None, *, stream: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self.count = 0
        self._first: int | None = None  # rate counts from the first update, not from zero

    def update(self, count: int) -> None:
        if self._first is None:
            self._first = count
            self.started = time.monotonic()
        self.count = count
        now = time.monotonic()
        if now - self._last_draw >= (0.1 if self.tty else 5.0):
            self._last_draw = now
            self._draw(end="\r" if self.tty else "\n")

    def done(self) -> float:
        """Draw the final line; return the rate (items/s)."""
        self._draw(end="\n")
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (self.count - (self._first or 0)) / elapsed

    def _draw(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.count - (self._first or 0)) / elapsed
        if self.total:
            share = min(self.count / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"{self.label} [{bar:<30}] {self.count:,}/{self.total:,} {rate:,.0f}/s"
        else:
            text = f"{self.label} {self.count:,} {rate:,.0f}/s"
        self.stream.write(f"{text}  {elapsed:.1f}s{end}")
        self.stream.flush()
