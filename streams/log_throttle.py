"""Keep a long outage from flooding the worker's log: the same warning (or error) from the
same logger is let through once per ``interval`` seconds, with a count of the repeats it
stood for. INFO and DEBUG lines always pass: they say what the worker did (a pause, a swap, a
window reported), and hiding one because an earlier line had the same template misleads.

(aiokafka logs every reconnect attempt; with the broker down that was ~50 MB a minute.)
"""

from __future__ import annotations

import logging
import time


class RepeatThrottle(logging.Filter):
    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, suppressed = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, suppressed + 1)
            return False
        if suppressed:
            record.msg = f"{record.msg} [repeated {suppressed} more times in {self.interval:g}s]"
        self._seen[key] = (now, 0)
        if len(self._seen) > 10_000:  # many distinct messages: forget the old ones
            self._seen.clear()
        return True
