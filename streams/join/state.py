"""The join's state in Redis: per event, the pending prediction or outcome and the decision;
per bucket of events, the deadlines, the outbox and the performance rows; the watermark.

Keys (``ns`` = settings.namespace, ``pl`` = the pipeline, ``b`` = crc32(event id) % 16):

``ns:join:{pl:b}:e:<event id>``  JSON state of one event (:mod:`streams.join.decide`),
                                 TTL max_delay + grace after its last change
``ns:join:{pl:b}:due``           zset event id -> the watermark that closes its pending side
``ns:join:{pl:b}:outbox``        hash: records decided but not yet acknowledged by Kafka
``ns:join:{pl:b}:counts``        hash: what the join did (matched, expired, orphan_outcome...)
``ns:join:{pl:b}:rows:<start>``  hash prediction_id -> labeled row of one performance window
``ns:join:{pl}:wm``              hash "<topic>/<partition>" -> latest event time seen there
``ns:join:{pl}:windows``         zset of performance windows with rows (start -> start)
``ns:join:{pl}:alive``           hash worker id -> wall clock of its last heartbeat

A bucket's keys share a Redis Cluster slot (the hash tag), so a bucket's change is one
WATCH/MULTI transaction: of two workers deciding the same event, one commits and the other
retries on the new state, so each decision is made, and emitted, once.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
from redis.exceptions import WatchError

from streams.errors import DependencyUnavailable

log = logging.getLogger(__name__)
BUCKETS = 16
T = TypeVar("T")

_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
)

# Max per field: each worker only raises the partitions it reads; one key, so Cluster-safe.
_RAISE_SCRIPT = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return redis.call('HGETALL', KEYS[1])
"""


def bucket_of(event_id: str) -> int:
    return zlib.crc32(event_id.encode()) % BUCKETS


@dataclass
class BucketChange:
    """What a decision function wants written in one bucket's transaction."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    due: dict[str, int | None] = field(default_factory=dict)  # None: no longer due
    outbox: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[int, dict[str, str]] = field(default_factory=dict)  # window start -> rows


class JoinState:
    def __init__(
        self, client: redis.Redis, namespace: str, pipeline: str, ttl_ms: int, rows_ttl_ms: int
    ) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.rows_ttl_ms = rows_ttl_ms
        self.root = f"{namespace}:join:"
        self.pipeline = pipeline
        self.wm_key = f"{self.root}{{{pipeline}}}:wm"
        self.windows_key = f"{self.root}{{{pipeline}}}:windows"
        self.alive_key = f"{self.root}{{{pipeline}}}:alive"
        self._raise = client.register_script(_RAISE_SCRIPT)

    # -- keys ------------------------------------------------------------------------------
    def _tag(self, bucket: int) -> str:
        return f"{self.root}{{{self.pipeline}:{bucket:02d}}}"

    def event_key(self, bucket: int, event_id: str) -> str:
        return f"{self._tag(bucket)}:e:{event_id}"

    def due_key(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:due"

    def outbox_key(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:outbox"

    def counts_key(self, bucket: int) -> str:
        return f"{self._tag(bucket)}:counts"

    def rows_key(self, bucket: int, window_start: int) -> str:
        return f"{self._tag(bucket)}:rows:{window_start}"

    # -- operations ------------------------------------------------------------------------
    def open_windows(self, windows: Iterable[int]) -> dict[str, int]:
        """Note the performance windows a batch's predictions fall in (before their rows are
        written); return every partition's latest event time."""

        def run() -> dict[str, int]:
            pipe = self.client.pipeline(transaction=False)
            starts = sorted(set(windows))
            if starts:
                pipe.zadd(self.windows_key, {str(s): s for s in starts})
            pipe.hgetall(self.wm_key)
            marks = pipe.execute()[-1]
            return {_s(k): int(v) for k, v in marks.items()}

        return _guard(run)

    def raise_watermarks(self, seen: dict[str, int]) -> dict[str, int]:
        """Record the latest event time per source partition; return every partition's.

        Called once a batch's decisions are stored: a watermark raised by records that are not
        recorded yet would, after a crash, close windows those records still belong to."""

        def run() -> dict[str, int]:
            args: list[str | int] = []
            for name, value in seen.items():
                args += [name, value]
            raw = self._raise(keys=[self.wm_key], args=args)
            it = iter(raw)
            return {_s(k): int(v) for k, v in zip(it, it, strict=True)}

        return _guard(run)

    def change(
        self,
        bucket: int,
        event_ids: Sequence[str],
        decide: Callable[[dict[str, dict[str, Any] | None]], BucketChange],
    ) -> BucketChange:
        """Load the events' states, let ``decide`` change them, write it all atomically.

        ``decide`` may run more than once (when another worker changed one of the events in
        between): it must be a pure function of the states it is given.
        """
        keys = [self.event_key(bucket, e) for e in event_ids]

        def run() -> BucketChange:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*keys)
                        values = pipe.mget(keys) if keys else []
                        states = {
                            e: None if v is None else json.loads(v)
                            for e, v in zip(event_ids, values, strict=True)
                        }
                        change = decide(states)
                        pipe.multi()
                        self._write(pipe, bucket, change)
                        pipe.execute()
                        return change
                    except WatchError:
                        log.debug("bucket %d changed under us; deciding again", bucket)

        return _guard(run)

    def _write(self, pipe: Any, bucket: int, change: BucketChange) -> None:
        for event_id, state in change.states.items():
            pipe.set(
                self.event_key(bucket, event_id),
                json.dumps(state, separators=(",", ":")),
                px=self.ttl_ms,
            )
        due_add = {e: d for e, d in change.due.items() if d is not None}
        due_rem = [e for e, d in change.due.items() if d is None]
        if due_add:
            pipe.zadd(self.due_key(bucket), due_add)
        if due_rem:
            pipe.zrem(self.due_key(bucket), *due_rem)
        if change.outbox:
            pipe.hset(self.outbox_key(bucket), mapping=change.outbox)
        for name, n in change.counts.items():
            pipe.hincrby(self.counts_key(bucket), name, n)
        for start, rows in change.rows.items():
            pipe.hset(self.rows_key(bucket, start), mapping=rows)
            pipe.pexpire(self.rows_key(bucket, start), self.rows_ttl_ms)

    def due(self, watermark: int, limit: int) -> dict[int, list[str]]:
        """Per bucket, events whose deadline is before ``watermark`` (at most ``limit`` each)."""

        def run() -> dict[int, list[str]]:
            pipe = self.client.pipeline(transaction=False)
            for b in range(BUCKETS):
                pipe.zrangebyscore(self.due_key(b), "-inf", f"({watermark}", start=0, num=limit)
            return {b: [_s(e) for e in ids] for b, ids in enumerate(pipe.execute()) if ids}

        return _guard(run)

    def confirm(self, fields: dict[int, list[str]]) -> None:
        """The records were acknowledged by Kafka: drop them from the outbox."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for b, names in fields.items():
                if names:
                    pipe.hdel(self.outbox_key(b), *names)
            pipe.execute()

        _guard(run)

    def outboxes(self) -> dict[int, dict[str, str]]:
        def run() -> dict[int, dict[str, str]]:
            pipe = self.client.pipeline(transaction=False)
            for b in range(BUCKETS):
                pipe.hgetall(self.outbox_key(b))
            return {
                b: {_s(k): _s(v) for k, v in entries.items()}
                for b, entries in enumerate(pipe.execute())
                if entries
            }

        return _guard(run)

    def claim(self, bucket: int, fields: Sequence[str], dead: set[str], me: str) -> dict[str, str]:
        """Take over outbox entries of dead workers; return the entries now mine."""
        key = self.outbox_key(bucket)

        def run() -> dict[str, str]:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        values = pipe.hmget(key, list(fields))
                        mine: dict[Any, Any] = {}
                        for name, raw in zip(fields, values, strict=True):
                            if raw is None:
                                continue
                            entry = json.loads(raw)
                            if entry["owner"] in dead:
                                entry["owner"] = me
                                mine[name] = json.dumps(entry)
                        pipe.multi()
                        if mine:
                            pipe.hset(key, mapping=mine)
                        pipe.execute()
                        return {_s(k): v for k, v in mine.items()}
                    except WatchError:
                        continue

        return _guard(run)

    def heartbeat(self, me: str, now_ms: int) -> dict[str, int]:
        """Mark this worker alive; return every worker's last heartbeat."""

        def run() -> dict[str, int]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.alive_key, me, now_ms)
            pipe.hgetall(self.alive_key)
            alive = pipe.execute()[1]
            return {_s(k): int(v) for k, v in alive.items()}

        return _guard(run)

    def workers(self) -> set[str]:
        """The workers with a heartbeat, expired or not."""
        names = _guard(lambda: self.client.hkeys(self.alive_key))
        return {_s(n) for n in cast(list[bytes], names)}

    def forget_workers(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            _guard(lambda: self.client.hdel(self.alive_key, *names))

    def counts(self) -> dict[str, int]:
        """What the join did, summed over buckets."""

        def run() -> dict[str, int]:
            pipe = self.client.pipeline(transaction=False)
            for b in range(BUCKETS):
                pipe.hgetall(self.counts_key(b))
            total: dict[str, int] = {}
            for counts in pipe.execute():
                for k, v in counts.items():
                    total[_s(k)] = total.get(_s(k), 0) + int(v)
            return total

        return _guard(run)

    def closable_windows(self, before: int) -> list[int]:
        """Performance windows starting before ``before`` that were not reported yet."""
        found = _guard(lambda: self.client.zrangebyscore(self.windows_key, "-inf", f"({before}"))
        return [int(s) for s in cast(list[bytes], found)]

    def window_rows(self, start: int) -> list[str]:
        def run() -> list[str]:
            pipe = self.client.pipeline(transaction=False)
            for b in range(BUCKETS):
                pipe.hvals(self.rows_key(b, start))
            return [_s(row) for rows in pipe.execute() for row in rows]

        return _guard(run)

    def claim_report(self, start: int, me: str, lease_ms: int) -> bool:
        key = f"{self.windows_key}:claim:{start}"
        return bool(_guard(lambda: self.client.set(key, me, nx=True, px=lease_ms)))

    def window_reported(self, start: int) -> None:
        def run() -> None:
            self.client.zrem(self.windows_key, str(start))
            pipe = self.client.pipeline(transaction=False)
            for b in range(BUCKETS):
                pipe.delete(self.rows_key(b, start))
            pipe.execute()

        _guard(run)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _guard(step: Callable[[], T]) -> T:
    try:
        return step()
    except _UNAVAILABLE as exc:
        raise DependencyUnavailable(
            f"Redis is unavailable for the join state: {exc}",
            hint="the join pauses and retries; check RTSCORE_REDIS_URL and the Redis server",
        ) from exc
