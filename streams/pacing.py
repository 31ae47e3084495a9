"""Score the partitions of the events topic in step, within a budget of event time.

An entity that is not the partition key (a terminal) receives events from every partition;
its windows are complete only once every partition has been scored past their end. Like
Kafka Streams' timestamp synchronisation, the scoring agent keeps what it has received per
partition and releases an event to be scored only when its time is at most ``budget_ms``
ahead of the *floor*: the lowest event time any partition that still has records to score
has reached (the time of its oldest held event, else the newest it has scored). A partition
with nothing left to read holds no one back.

Holding back in the agent, not only pausing fetches, is what makes this exact: faust buffers
records between the fetcher and the agent (the fetched records, the stream queue, the take
buffer: thousands of records), and they keep flowing after a partition is paused; on sparse
data they span days of event time. Pausing the fetches of partitions that run far ahead
only bounds what is held. Held events are not acked, so a crash or a rebalance redelivers
them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streams.pipeline import Pipeline

log = logging.getLogger(__name__)
NEVER = -(2**63)
T = TypeVar("T")


def pacing_budget(pipeline: Pipeline) -> int | None:
    """A third of the gap a non-partition-key window leaves before late events could land in it;
    None when every stateful feature is kept per the partition key (nothing to pace)."""
    partition_key = pipeline.events.key_field
    gaps = [
        f.delay_ms - pipeline.state.allowed_lateness_ms
        for f in pipeline.features
        if f.stateful and pipeline.entities[f.entity or ""].key_field != partition_key
    ]
    if not gaps:
        return None
    return max(min(min(gaps), pipeline.state.partition_skew_ms) // 3, 1)


@dataclass
class HoldBack(Generic[T]):
    """Per-partition queues of received, not yet scored items, released in event-time step.

    Pure: the worker feeds it the records it receives (``add``), each partition's high
    watermark and start offset, and scores what ``release`` returns, in that order.
    ``idle_s``: a partition that has delivered nothing since it was assigned, while its high
    watermark says it has records, stops holding the others back after this long (its start
    offset is not known exactly when the group has no committed offset).
    """

    budget_ms: int
    idle_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    held: dict[int, deque[tuple[int | None, T]]] = field(default_factory=dict)
    released: dict[int, int] = field(default_factory=dict)  # newest time released
    received: dict[int, int] = field(default_factory=dict)  # newest time received
    next_offset: dict[int, int] = field(default_factory=dict)  # after the last received
    first_seen: dict[int, float] = field(default_factory=dict)
    # The lowest frontier of the partitions other workers hold (streams.pace_board), set by
    # the worker before each release: None when no other worker's partition has records left.
    remote: int | None = None

    def add(self, partition: int, offset: int, event_time: int | None, item: T) -> None:
        self.held.setdefault(partition, deque()).append((event_time, item))
        self.next_offset[partition] = max(self.next_offset.get(partition, 0), offset + 1)
        if event_time is not None:
            self.received[partition] = max(self.received.get(partition, NEVER), event_time)

    def __len__(self) -> int:
        return sum(len(q) for q in self.held.values())

    def clear(self) -> None:
        """Forget everything (a rebalance: faust seeks back to the committed offsets)."""
        for name in ("held", "released", "received", "next_offset", "first_seen"):
            getattr(self, name).clear()

    def floor(self, highwater: Mapping[int, int | None], start: Mapping[int, int]) -> int | None:
        """The lowest time reached by a partition that still has records to score, this
        worker's or (``remote``) another's; None when none has. ``highwater`` has every
        assigned partition (None: not known yet); ``start`` is where a partition that has
        delivered nothing yet starts (its committed offset)."""
        reached = [t for t in self.frontiers(highwater, start).values() if t is not None]
        if self.remote is not None:
            reached.append(self.remote)
        return min(reached) if reached else None

    def frontiers(
        self, highwater: Mapping[int, int | None], start: Mapping[int, int]
    ) -> dict[int, int | None]:
        """Each assigned partition's frontier: the time it has reached while it still has
        records to score (its oldest held event's, else the newest it scored), None when it
        has none left: what other workers wait for (streams.pace_board)."""
        now = self.clock()
        out: dict[int, int | None] = {}
        for p, hw in highwater.items():
            self.first_seen.setdefault(p, now)
            queue = self.held.get(p)
            if queue:
                head = queue[0][0]
                out[p] = head if head is not None else self.released.get(p, NEVER)
            elif self._unread(p, hw, start, now):
                out[p] = self.released.get(p, NEVER)
            else:
                out[p] = None
        return out

    def _unread(self, p: int, hw: int | None, start: Mapping[int, int], now: float) -> bool:
        if p in self.next_offset:
            return hw is None or self.next_offset[p] < hw
        if hw is not None and start.get(p, 0) >= hw:
            return False
        if now - self.first_seen[p] > self.idle_s:
            log.warning(
                "partition %d delivered nothing for %.0fs: not waiting for it",
                p,
                now - self.first_seen[p],
            )
            self.next_offset[p] = hw if hw is not None else 0
            return False
        return True

    def release(self, highwater: Mapping[int, int | None], start: Mapping[int, int]) -> list[T]:
        """The held items that may be scored now, in the order to score them. Items of
        partitions no longer assigned are dropped (unacked: their new owner reads them)."""
        for p in [p for p in self.held if p not in highwater]:
            del self.held[p]
        out: list[T] = []
        while True:
            floor = self.floor(highwater, start)
            limit = None if floor is None else floor + self.budget_ms
            n = len(out)
            for p, queue in self.held.items():
                while queue and (limit is None or queue[0][0] is None or queue[0][0] <= limit):
                    event_time, item = queue.popleft()
                    if event_time is not None:
                        self.released[p] = max(self.released.get(p, NEVER), event_time)
                    out.append(item)
            if len(out) == n:
                return out

    def ahead(self, highwater: Mapping[int, int | None], start: Mapping[int, int]) -> set[int]:
        """Partitions whose fetching should pause: received more than two budgets past the
        floor. Fetching resumes once what they hold is within one budget of it."""
        floor = self.floor(highwater, start)
        if floor is None:
            return set()
        return {p for p in highwater if self.received.get(p, NEVER) > floor + 2 * self.budget_ms}

    def caught_up(self, highwater: Mapping[int, int | None], start: Mapping[int, int]) -> set[int]:
        floor = self.floor(highwater, start)
        return {
            p
            for p in highwater
            if floor is None or self.received.get(p, NEVER) <= floor + self.budget_ms
        }
