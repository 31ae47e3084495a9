"""Pacing across workers: each scoring worker shares its partitions' frontiers in Redis and
holds its own events back to the lowest frontier of the partitions the others hold.

:mod:`streams.pacing` keeps the partitions a worker holds in step. With several workers in
the group, a worker that lags (restarted, slow, just handed partitions by a rebalance) would
let the others run ahead of it by more than a feature's delay, and their windows of a
non-partition-key entity (a terminal) would miss its events. So every worker writes, per
partition it holds, the time that partition has reached while it still has records to score
(or that it has none left) to one Redis hash, and reads the others' in the same round trip.

An entry that has not been refreshed for ``stale_ms`` belongs to a worker that stopped; its
partitions go to another worker within the group's session timeout, which then overwrites
it. Until then it is waited for, so the default staleness is twice the session timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import redis

from streams.errors import DependencyUnavailable

_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)


def encode(frontier: int | None, now_ms: int, worker: str) -> str:
    return f"{'' if frontier is None else frontier}|{now_ms}|{worker}"


def remote_floor(
    entries: Mapping[str, str], mine: set[int], now_ms: int, stale_ms: int
) -> int | None:
    """The lowest frontier among fresh entries of partitions this worker does not hold;
    None when none of them has records left to score."""
    lowest: int | None = None
    for field, value in entries.items():
        if int(field) in mine:
            continue
        frontier, written, _ = value.split("|", 2)
        if not frontier or now_ms - int(written) > stale_ms:
            continue
        t = int(frontier)
        lowest = t if lowest is None else min(lowest, t)
    return lowest


class PaceBoard:
    """One Redis hash per pipeline and topic: partition -> "frontier|written ms|worker"."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        worker: str,
        stale_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.key = key
        self.worker = worker
        self.stale_ms = stale_ms
        self.clock = clock

    def exchange(self, frontiers: Mapping[int, int | None]) -> int | None:
        """Write this worker's partitions' frontiers; return the others' lowest (see
        :func:`remote_floor`). One round trip; Redis down pauses the batch like the store."""
        now_ms = int(self.clock() * 1000)
        try:
            pipe = self.client.pipeline(transaction=False)
            if frontiers:
                pipe.hset(
                    self.key,
                    mapping={str(p): encode(t, now_ms, self.worker) for p, t in frontiers.items()},
                )
            pipe.hgetall(self.key)
            entries = pipe.execute()[-1]
        except _UNAVAILABLE as exc:
            raise DependencyUnavailable(
                f"Redis is unavailable for pacing across workers: {exc}",
                hint="the worker pauses and retries; check RTSCORE_REDIS_URL and the server",
            ) from exc
        decoded = {_s(k): _s(v) for k, v in entries.items()}
        return remote_floor(decoded, set(frontiers), now_ms, self.stale_ms)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
