"""Memory and CPU of a process (and its children) from /proc: peak RSS, CPU seconds, and
RSS sampled over time with its trend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's children count as the worker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of the process tree now (0 for processes gone)."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def peak_rss_bytes(pid: int) -> int:
    """Sum of each process's own peak RSS (VmHWM) in the tree."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree so far."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                # the command name may hold spaces: fields start after its closing ')'
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICKS


@dataclass
class RssTrend:
    """RSS samples against events processed, and their least-squares slope."""

    events: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def add(self, events: int, rss: int) -> None:
        self.events.append(events)
        self.rss.append(rss)

    def slope_mb_per_million(self, skip_share: float = 0.1) -> float | None:
        """MB of RSS per million events, after the first ``skip_share`` of the run (warm-up:
        caches, model, connection buffers); None with too few samples."""
        if not self.events:
            return None
        cut = self.events[-1] * skip_share
        pts = [(e, r) for e, r in zip(self.events, self.rss, strict=True) if e >= cut]
        if len(pts) < 3:
            return None
        n = len(pts)
        mx = sum(e for e, _ in pts) / n
        my = sum(r for _, r in pts) / n
        sxx = sum((e - mx) ** 2 for e, _ in pts)
        if sxx == 0:
            return None
        sxy = sum((e - mx) * (r - my) for e, r in pts)
        return sxy / sxx * 1e6 / 2**20
