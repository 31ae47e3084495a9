"""Create rtscore's topics idempotently, with explicit partition counts and configs."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streams.errors import DependencyUnavailable
from streams.settings import Settings, Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    configs: dict[str, str]


def topic_plan(topics: Topics, partitions: int, retention_ms: int) -> list[TopicPlan]:
    """Every topic of DESIGN.md with its partition count and configs."""
    keep = {"retention.ms": str(retention_ms)}
    plans = [
        TopicPlan(name, partitions, dict(keep))
        for name in (
            topics.events,
            topics.outcomes,
            topics.predictions,
            topics.labeled,
            topics.dlq,
        )
    ]
    # Drift reports are global per window: one partition keeps them in order.
    plans.append(TopicPlan(topics.drift, 1, dict(keep)))
    plans.append(TopicPlan(topics.performance, 1, dict(keep)))
    # The latest alias per model is what matters; compaction keeps it forever.
    plans.append(TopicPlan(topics.model_events, 1, {"cleanup.policy": "compact"}))
    return plans


async def ensure_topics(settings: Settings, plans: list[TopicPlan] | None = None) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left alone."""
    plans = plans or topic_plan(
        settings.topics, settings.topic_partitions, settings.topic_retention_ms
    )
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}",
            hint="start it with `rtscore infra up` or set RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [p for p in plans if p.name not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(p.name, p.partitions, 1, topic_configs=p.configs) for p in missing]
            )
            _check_created(response)
            log.info("created topics %s", [p.name for p in missing])
        return [p.name for p in missing]
    finally:
        await admin.close()


def _check_created(response: object) -> None:
    # error code 36 = TOPIC_ALREADY_EXISTS: another process won the race; that is fine.
    for entry in getattr(response, "topic_errors", []):
        name, code = entry[0], entry[1]
        if code not in (0, 36):
            message = entry[2] if len(entry) > 2 else ""
            raise DependencyUnavailable(f"Kafka refused to create topic {name}: {code} {message}")


async def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete topics if they exist (the demo resets its own prefix with it)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def _offset_ranges(
    bootstrap: str, names: list[str], group: str | None = None
) -> tuple[dict[Any, tuple[int, int]], dict[Any, Any]]:
    """Each partition of ``names``: its (beginning, end) offsets; and ``group``'s committed
    offsets (empty without a group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group) if group else {}
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    if not tps:
        return {}, committed
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return {tp: (starts[tp], ends[tp]) for tp in tps}, committed


async def record_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Records currently held per topic (sum over partitions of end - beginning offsets)."""
    ranges, _ = await _offset_ranges(bootstrap, names)
    counts = dict.fromkeys(names, 0)
    for tp, (start, end) in ranges.items():
        counts[tp.topic] += end - start
    return counts


async def group_lag(bootstrap: str, group: str, names: list[str]) -> int | None:
    """Records of ``names`` a consumer group has not committed yet (None before its first
    commit on every partition): how far a processor is behind its input topics."""
    ranges, committed = await _offset_ranges(bootstrap, names, group)
    lag = 0
    for tp, (start, end) in ranges.items():
        if end == start:
            continue  # an empty partition has nothing to commit
        meta = committed.get(tp)
        if meta is None or meta.offset < 0:
            return None
        lag += max(0, end - meta.offset)
    return lag


async def empty_partitions(bootstrap: str, names: list[str]) -> dict[str, set[int]]:
    """Per topic, the partitions whose log is empty now (end offset == beginning offset:
    nothing was ever written, or retention removed all of it). A processor leaves them out
    of its event-time watermark: they have no record that could hold a window open.

    A topic with no record in any partition reports none: its producer has not started (the
    join starting beside the scoring worker finds no prediction yet), and leaving it out
    would let the other topic's times close every window."""
    ranges, _ = await _offset_ranges(bootstrap, names)
    empty: dict[str, set[int]] = {name: set() for name in names}
    written: set[str] = set()
    for tp, (start, end) in ranges.items():
        if end == start:
            empty[tp.topic].add(tp.partition)
        else:
            written.add(tp.topic)
    return {name: parts if name in written else set() for name, parts in empty.items()}


EmptyReader = Callable[[str, list[str]], Awaitable[dict[str, set[int]]]]


class EmptyPartitions:
    """The input topics' empty partitions as last read from the broker, for the processors'
    watermarks: read from their timers (never per batch), read by their batches.

    A partition this worker received a record from after the last read began is not empty,
    whatever that read said: it counts again from its first record, not from the next read.
    A partition is left out only once every read for ``idle_s`` found it empty: one that is
    merely not written yet (its producer is catching up on a backlog, partition by
    partition) would otherwise let the others close windows its records still belong to.
    """

    def __init__(
        self,
        bootstrap: str,
        names: list[str],
        every_s: float = 5.0,
        read: EmptyReader = empty_partitions,
        idle_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.names = list(names)
        self.every_s = every_s
        self.idle_s = idle_s
        self._read = read
        self._known: dict[str, frozenset[int]] = {}
        self._read_at = -math.inf  # monotonic time the last successful read began
        self._tried_at = -math.inf
        self._seen: dict[tuple[str, int], float] = {}
        # (topic, partition) -> when the first read of its current empty spell began
        self._empty_since: dict[tuple[str, int], float] = {}

    def empty(self, topic: str) -> frozenset[int]:
        """The partitions of ``topic`` to leave out of the watermark now."""
        known = self._known.get(topic, frozenset())
        if not known:
            return known
        return frozenset(
            p
            for p in known
            if self._seen.get((topic, p), -math.inf) < self._read_at
            and self._read_at - self._empty_since.get((topic, p), self._read_at) >= self.idle_s
        )

    def saw(self, topic: str, partitions: Iterable[int]) -> None:
        """Note that a batch had records of these partitions (cheap: one dict write each)."""
        now = time.monotonic()
        for p in partitions:
            self._seen[(topic, p)] = now

    def due(self) -> bool:
        return time.monotonic() - self._tried_at >= self.every_s

    async def refresh(self) -> bool:
        """Read the empty partitions again; True when what :meth:`empty` says changed. Never
        raises: on a broker error the last known set stays, with a warning."""
        began = time.monotonic()
        self._tried_at = began
        before = {t: self.empty(t) for t in self.names}
        try:
            found = await self._read(self.bootstrap, self.names)
        except Exception as exc:  # a timer must never die of a broker hiccup
            log.warning(
                "cannot read which partitions of %s are empty (%r): keeping the last known "
                "ones and retrying in %.0f s; check that Kafka at %s is reachable",
                self.names,
                exc,
                self.every_s,
                self.bootstrap,
            )
            return False
        self._known = {t: frozenset(found.get(t, ())) for t in self.names}
        self._empty_since = {
            (t, p): self._empty_since.get((t, p), began)
            for t, parts in self._known.items()
            for p in parts
            if self._seen.get((t, p), -math.inf) < self._empty_since.get((t, p), began)
        }
        self._read_at = began
        return {t: self.empty(t) for t in self.names} != before
