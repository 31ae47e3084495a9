"""Keep the partitions of the events topic within a budget of event time of each other.

An entity that is not the partition key (a terminal) receives events from every partition;
its windows are complete only once every partition has been read past their end. Like
Kafka Streams' timestamp synchronisation, the worker pauses the partitions that run more
than ``budget_ms`` ahead of the slowest partition that still has records to read, and
resumes them once it has caught up. A partition with nothing left to read holds no one back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition

from streams.pipeline import Pipeline

log = logging.getLogger(__name__)
NEVER = -(2**63)


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


def decide(
    progress: Mapping[int, int],
    next_offset: Mapping[int, int],
    highwater: Mapping[int, int | None],
    paused: set[int],
    budget_ms: int,
) -> tuple[set[int], set[int]]:
    """(partitions to pause, partitions to resume), from each partition's newest event time
    read, the offset it will read next and its high watermark (None: not known yet)."""
    partitions = set(highwater)
    behind = [
        p for p in partitions if highwater[p] is None or next_offset.get(p, 0) < (highwater[p] or 0)
    ]
    if not behind:
        return set(), set(paused)
    floor = min(progress.get(p, NEVER) for p in behind)
    ahead = {p for p in partitions if progress.get(p, NEVER) > floor + budget_ms}
    return ahead - paused, (paused - ahead) & partitions


@dataclass
class PartitionPacer:
    """The faust side: observe each batch, then pause / resume partitions of ``topic``."""

    topic: str
    budget_ms: int
    progress: dict[int, int] = field(default_factory=dict)
    next_offset: dict[int, int] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)

    def observe(self, records: Sequence[Any], times: Iterable[int | None]) -> None:
        for record, t in zip(records, times, strict=True):
            p = record.partition
            self.next_offset[p] = max(self.next_offset.get(p, 0), record.offset + 1)
            if t is not None:
                self.progress[p] = max(self.progress.get(p, NEVER), t)

    async def pace(self, consumer: Any) -> None:
        tps = {tp.partition: tp for tp in consumer.assignment() if tp.topic == self.topic}
        highwater = {p: _highwater(consumer, tp) for p, tp in tps.items()}
        pause, resume = decide(
            self.progress, self.next_offset, highwater, self.paused & set(tps), self.budget_ms
        )
        self.paused &= set(tps)
        if not pause and not resume:
            return
        log.debug(
            "partitions of %s: pausing %s, resuming %s (budget %d ms)",
            self.topic,
            pause,
            resume,
            self.budget_ms,
        )
        # faust's aiokafka consumer lives on its own thread and loop; pausing there stops the
        # fetches of those partitions (faust's own active set is its flow control's).
        thread = consumer._thread
        aio = thread._ensure_consumer()

        async def apply() -> None:
            if pause:
                aio.pause(*(TopicPartition(self.topic, p) for p in pause))
            if resume:
                aio.resume(*(TopicPartition(self.topic, p) for p in resume))

        await thread.call_thread(apply)
        self.paused = (self.paused | pause) - resume


def _highwater(consumer: Any, tp: Any) -> int | None:
    try:
        value = consumer.highwater(tp)
    except (AssertionError, KeyError, ValueError):
        return None
    return int(value) if value is not None else None
