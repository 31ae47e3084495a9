"""Window counts in Redis, global across partitions and workers, applied exactly once.

Per window (start ms) one Cluster slot, hash tag ``{<ns>:drift:<pipeline>:<start>}``:
``:counts`` / ``:labels`` (hashes of :mod:`streams.drift.histogram` fields), ``:offsets`` /
``:label_offsets`` (``topic:partition`` -> last offset applied to this window) and ``:report``
/ ``:labels_done`` markers, ``:reference`` (``<model_name>:<version>``, the version whose profile
the window's rows are binned on and compared with, pinned by the first batch that counts rows
into it). Per pipeline (hash tag ``{<ns>:drift:<pipeline>}``): ``:wm``
(prediction partition -> highest event time seen) and ``:open`` (windows with data).

An update reads the windows' offsets, keeps the rows past them and applies their counts in
one Lua call per window that checks the offsets are still the ones read (else it is retried),
so a redelivered batch adds nothing twice. A window closes once: a worker claims its report
with ``SET NX`` (a lease, so a crashed claimer's window is claimed again), publishes, and
marks it done; records for a done window are late and counted, not applied.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import redis

from streams.errors import DependencyUnavailable

log = logging.getLogger(__name__)

APPLY = r"""
-- KEYS: counts, offsets, done marker. ARGV: n_offsets, then n x (field, expected, new),
-- then (field, increment) pairs. Returns 1 applied, 0 offsets moved (retry), -1 window done.
if redis.call('GET', KEYS[3]) == 'done' then return -1 end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[2], ARGV[2 + 3 * i]) or '-1'
  if cur ~= ARGV[3 + 3 * i] then return 0 end
end
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[2 + 3 * i], ARGV[4 + 3 * i])
end
for i = 2 + 3 * n, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

RAISE_WATERMARKS = r"""
-- KEYS: wm hash. ARGV: (partition, event time) pairs; keeps the highest per partition.
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

PIN = r"""
-- KEYS: reference pin, report marker. ARGV: the candidate. Returns the window's pinned
-- reference (the candidate if it was the first), or false when the window is reported.
if redis.call('GET', KEYS[2]) == 'done' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

LEASE_MS = 60_000
NEVER = -(2**63)  # the watermark of partitions not all seen yet: closes nothing
DONE_TTL_S = 90 * 86_400  # done markers outlive any redelivery; then they expire


@dataclass(frozen=True)
class Item:
    """One input record: where it came from, its window, and its index in the batch."""

    partition: int
    offset: int
    window: int  # window start, ms
    index: int


# The counts of the batch's records at these indices (all of one window).
Aggregate = Callable[[Sequence[int]], Mapping[str, float]]
Version = tuple[str, int]  # (model_name, model_version)


def pin_value(version: Version) -> str:
    return f"{version[0]}:{version[1]}"


def parse_pin(raw: bytes | str) -> Version:
    """A stored pin; model names have no ':' (the registry refuses them)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    name, _, number = text.rpartition(":")
    return name, int(number)


def low_watermark(marks: Mapping[int, int], partitions: int, empty: Collection[int]) -> int:
    """The lowest watermark over the partitions that count: all but the ``empty`` ones, each
    of which must have one (else ``NEVER``). An idle partition with records still counts: a
    window stays open until its records' event times pass it, as event time requires."""
    counted = [p for p in range(partitions) if p not in empty]
    if not counted or any(p not in marks for p in counted):
        return NEVER
    return min(marks[p] for p in counted)


class WindowState:
    def __init__(self, client: redis.Redis, namespace: str, pipeline: str) -> None:
        self.client = client
        self.base = f"{namespace}:drift:{pipeline}"
        self._apply = client.register_script(APPLY)
        self._raise = client.register_script(RAISE_WATERMARKS)
        self._pin = client.register_script(PIN)
        self.owner = uuid.uuid4().hex

    def key(self, window: int, part: str) -> str:
        return f"{{{self.base}:{window}}}:{part}"

    @property
    def wm_key(self) -> str:
        return f"{{{self.base}}}:wm"

    @property
    def outcome_wm_key(self) -> str:
        return f"{{{self.base}}}:owm"

    @property
    def open_key(self) -> str:
        return f"{{{self.base}}}:open"

    # -- updates ---------------------------------------------------------------------------

    def apply(
        self, topic: str, items: Sequence[Item], aggregate: Aggregate, labels: bool = False
    ) -> int:
        """Add the records not applied yet; return how many were late (window already done)."""
        by_window: dict[int, list[Item]] = {}
        for item in items:
            by_window.setdefault(item.window, []).append(item)
        late = 0
        opened: dict[str, int] = {}
        try:
            for window, window_rows in sorted(by_window.items()):
                window_late = self._apply_window(topic, window, window_rows, aggregate, labels)
                late += window_late
                if not window_late:
                    opened[str(window)] = window
            if not labels and opened:
                self.client.zadd(self.open_key, opened)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyUnavailable(f"Redis unavailable for drift state: {exc}") from exc
        return late

    def _apply_window(
        self, topic: str, window: int, rows: list[Item], aggregate: Aggregate, labels: bool
    ) -> int:
        counts_key = self.key(window, "labels" if labels else "counts")
        offsets_key = self.key(window, "label_offsets" if labels else "offsets")
        done_key = self.key(window, "labels_done" if labels else "report")
        while True:
            fields = sorted({f"{topic}:{r.partition}" for r in rows})
            stored = self.client.hmget(offsets_key, fields)
            applied = {
                f: int(v) if v is not None else -1 for f, v in zip(fields, stored, strict=True)
            }
            fresh: list[int] = []
            last = dict(applied)
            for r in rows:
                field = f"{topic}:{r.partition}"
                if r.offset <= applied[field]:
                    continue  # redelivered: already in the window
                last[field] = max(last[field], r.offset)
                fresh.append(r.index)
            moved = [f for f in fields if last[f] != applied[f]]
            if not moved:
                return 0
            args: list[str | float] = [len(moved)]
            for f in moved:
                args += [f, str(applied[f]), str(last[f])]
            for k, v in aggregate(fresh).items():
                if v:
                    args += [k, repr(float(v))]
            result = self._apply(keys=[counts_key, offsets_key, done_key], args=args)
            if result == 1:
                return 0
            if result == -1:
                return len(rows)
            log.info("offsets of window %d moved under us; re-reading them", window)

    def pin(self, candidates: Mapping[int, Version]) -> dict[int, Version | None]:
        """Pin each window to its candidate version unless a batch pinned it first; return the
        versions the windows are pinned to (None: the window is reported, its rows are late).

        Set-if-absent per window in one round trip, so racing workers agree on one version.
        """
        if not candidates:
            return {}
        windows = sorted(candidates)
        pipe = self.client.pipeline(transaction=False)
        for w in windows:
            keys = [self.key(w, "reference"), self.key(w, "report")]
            self._pin(keys=keys, args=[pin_value(candidates[w])], client=pipe)
        try:
            raw = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyUnavailable(f"Redis unavailable for drift state: {exc}") from exc
        return {w: parse_pin(v) if v else None for w, v in zip(windows, raw, strict=True)}

    def pinned(self, window: int) -> Version | None:
        """The version ``window`` is pinned to (None when no prediction was counted in it)."""
        raw: bytes | None = self.client.get(self.key(window, "reference"))  # type: ignore[assignment]
        return parse_pin(raw) if raw else None

    def raise_watermarks(self, times: Mapping[int, int], outcomes: bool = False) -> None:
        """Raise partitions' watermarks (of the predictions, or of the outcomes' label times)."""
        if not times:
            return
        args: list[str | int] = []
        for partition, t in times.items():
            args += [str(partition), int(t)]
        try:
            self._raise(keys=[self.outcome_wm_key if outcomes else self.wm_key], args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyUnavailable(f"Redis unavailable for drift state: {exc}") from exc

    # -- closing ---------------------------------------------------------------------------

    def closable(
        self,
        partitions: int,
        window_ms: int,
        grace_ms: int,
        outcome_partitions: int = 0,
        empty: Collection[int] = (),
        outcome_empty: Collection[int] = (),
    ) -> list[int]:
        """Open windows that every partition's watermark has passed (end + grace).

        With ``outcome_partitions``, the outcomes' watermarks (label times) must have passed
        the window's end too: then the labels of the window ``label_lag`` earlier are in.
        ``empty`` / ``outcome_empty``: partitions whose log is empty, left out (no record there
        can hold a window open; one written later with an old event time is late).
        """
        low = self._low(self.wm_key, partitions, empty)
        if outcome_partitions:
            low = min(low, self._low(self.outcome_wm_key, outcome_partitions, outcome_empty))
        if low == NEVER:
            return []
        latest_start = low - grace_ms - window_ms
        starts: list[bytes] = self.client.zrangebyscore(self.open_key, "-inf", latest_start)  # type: ignore[assignment]
        return sorted(int(w) for w in starts)

    def _low(self, key: str, partitions: int, empty: Collection[int]) -> int:
        marks: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        return low_watermark({int(k): int(v) for k, v in marks.items()}, partitions, empty)

    def claim(self, window: int) -> bool:
        """True for the one caller that may report ``window`` now."""
        return bool(self.client.set(self.key(window, "report"), self.owner, nx=True, px=LEASE_MS))

    def counts(self, window: int, labels: bool = False) -> dict[str, float]:
        key = self.key(window, "labels" if labels else "counts")
        raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        return {k.decode(): float(v) for k, v in raw.items()}

    def finish(self, window: int, label_window: int | None) -> None:
        """Mark ``window`` reported; forget the label window whose labels it reported."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(window, "report"), "done", ex=DONE_TTL_S)
        # after "done": the pin script no longer sets it again for late rows
        pipe.delete(self.key(window, "reference"))
        pipe.zrem(self.open_key, str(window))
        pipe.execute()
        if label_window is not None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key(label_window, "labels_done"), "done", ex=DONE_TTL_S)
            keep = ("counts", "offsets", "labels", "label_offsets")
            pipe.delete(*(self.key(label_window, part) for part in keep))
            pipe.execute()

    def release(self, window: int) -> None:
        """Give up a claim (publishing failed): another attempt may claim it again."""
        self.client.delete(self.key(window, "report"))
