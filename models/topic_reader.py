"""Read every record of a topic whose Kafka timestamp falls in a time range, for training sets.

A read is a snapshot: it stops at the end offsets of the moment it starts, so a live topic's
tail does not keep it going, and it reports the per-partition offsets it covered (lineage,
invariant 6). It uses no consumer group and commits nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigError, DependencyUnavailable

log = logging.getLogger(__name__)

# (key, value, timestamp_ms, partition, offset)
Record = tuple[bytes | None, bytes | None, int, int, int]
Headers = tuple[tuple[str, bytes], ...]

_FETCH_TIMEOUT_MS = 1000
_PARTITION_FETCH_BYTES = 8 * 1024 * 1024  # big fetches: the reader is throughput-bound


@dataclass(frozen=True)
class TopicSlice:
    """Records of ``topic`` with ``start_ms`` <= timestamp < ``end_ms``.

    ``offsets`` maps each partition to the [first, end) offsets that were read: first is the
    earliest offset with a timestamp >= start_ms, end the partition's end at read time.
    ``records`` are in partition order, then offset order.
    """

    topic: str
    start_ms: int
    end_ms: int
    offsets: dict[int, tuple[int, int]]
    records: list[Record]
    # (partition, offset) -> the record's headers, for the records that have any: a header
    # can decide how the worker decodes a record (content-type), so offline reads keep them.
    headers: dict[tuple[int, int], Headers] = field(default_factory=dict)


async def read_range(
    bootstrap: str,
    topic: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    idle_timeout_s: float = 60.0,
) -> TopicSlice:
    """Read ``topic`` for record timestamps in [start_ms, end_ms) (None: unbounded).

    Timestamps need not increase within a partition (producers set them): every record from
    the first offset at or after ``start_ms`` up to the snapshot end is fetched and filtered,
    which is exact because Kafka's time lookup returns the earliest offset at or after a time.
    ``progress`` is called after each fetched batch with the number of records fetched so far
    (in range or not); the total to fetch is the sum of end - first over ``offsets``.
    """
    lo = 0 if start_ms is None else start_ms
    hi = 2**63 - 1 if end_ms is None else end_ms
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
    )
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap} to read {topic}: {exc}",
            hint="start it with `rtscore infra up` or set RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        offsets = await _plan(consumer, bootstrap, topic, start_ms)
        headers: dict[tuple[int, int], Headers] = {}
        records = await _fetch(consumer, topic, offsets, lo, hi, progress, idle_timeout_s, headers)
    except KafkaError as exc:
        raise DependencyUnavailable(f"reading {topic} from {bootstrap} failed: {exc}") from exc
    finally:
        await consumer.stop()
    return TopicSlice(topic, lo, hi, offsets, records, headers)


async def _plan(
    consumer: AIOKafkaConsumer, bootstrap: str, topic: str, start_ms: int | None
) -> dict[int, tuple[int, int]]:
    """[first, end) offsets per partition; seeks each partition to its first offset."""
    partitions = await _partitions(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    # The end snapshot is taken first: a record appended later is outside this read.
    ends = await consumer.end_offsets(tps)
    if start_ms is None:
        firsts = await consumer.beginning_offsets(tps)
    else:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        firsts = {tp: ends[tp] if hit is None else hit.offset for tp, hit in found.items()}
    plan: dict[int, tuple[int, int]] = {}
    for tp in tps:
        first = min(firsts[tp], ends[tp])
        plan[tp.partition] = (first, ends[tp])
        consumer.seek(tp, first)
    return plan


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    # The consumer's own metadata only learns a topic once it is assigned, and assigning
    # needs the partitions: the admin client is the public way to ask.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        # Listing first: describing a missing topic would create it on a broker that
        # auto-creates topics, and a mistyped name would leave an empty topic behind.
        exists = topic in await admin.list_topics()
        described = (await admin.describe_topics([topic]))[0] if exists else None
    finally:
        await admin.close()
    if described is None:
        raise ConfigError(
            f"topic {topic} does not exist on {bootstrap}",
            hint="check RTSCORE_TOPIC_PREFIX, or produce events first (`rtscore simulate`)",
        )
    if described["error_code"] or not described["partitions"]:
        raise DependencyUnavailable(
            f"Kafka at {bootstrap} cannot describe {topic} (error {described['error_code']})",
            hint="the broker may be starting or electing leaders; retry in a moment",
        )
    return sorted(p["partition"] for p in described["partitions"])


async def _fetch(
    consumer: AIOKafkaConsumer,
    topic: str,
    offsets: dict[int, tuple[int, int]],
    lo: int,
    hi: int,
    progress: Callable[[int], None] | None,
    idle_timeout_s: float,
    headers: dict[tuple[int, int], Headers],
) -> list[Record]:
    """The records in range, in partition then offset order; their headers into ``headers``."""
    kept: dict[int, list[Record]] = {p: [] for p in offsets}
    pending = {TopicPartition(topic, p) for p, (first, end) in offsets.items() if first < end}
    # A paused partition is not fetched: nothing past a partition's end is downloaded.
    consumer.pause(
        *(TopicPartition(topic, p) for p, (first, end) in offsets.items() if first >= end)
    )
    fetched = 0
    last_progress = time.monotonic()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=_FETCH_TIMEOUT_MS)
        for tp, messages in batch.items():
            end = offsets[tp.partition][1]
            out = kept[tp.partition]
            for m in messages:
                if m.offset >= end:
                    break
                if lo <= m.timestamp < hi:
                    out.append((m.key, m.value, m.timestamp, m.partition, m.offset))
                    if m.headers:
                        headers[(m.partition, m.offset)] = tuple(m.headers)
                fetched += 1
        # Position, not the last record, decides: compaction and transaction markers leave
        # offsets without records.
        for tp in list(pending):
            if await consumer.position(tp) >= offsets[tp.partition][1]:
                pending.discard(tp)
                consumer.pause(tp)
        if batch:
            last_progress = time.monotonic()
            if progress is not None:
                progress(fetched)
        elif time.monotonic() - last_progress > idle_timeout_s:
            raise DependencyUnavailable(
                f"no records from {topic} for {idle_timeout_s:.0f} s with partitions "
                f"{sorted(tp.partition for tp in pending)} not read to their end",
                hint="check the broker's health (`rtscore infra status`), then retry",
            )
    log.info("read %d records of %s, kept %d", fetched, topic, sum(map(len, kept.values())))
    return [r for p in sorted(kept) for r in kept[p]]
