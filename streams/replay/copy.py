"""Copy the records of a time range from one topic to another, partition for partition.

Each record keeps its key, value, timestamp and headers and goes to the same partition
number, in its source order. Progress is checkpointed after every acknowledged chunk; a
resumed copy counts what the target partitions really hold beyond their starting offsets, so
records acknowledged (or written) after the last checkpoint are not copied twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigError, DependencyUnavailable, RtscoreError

log = logging.getLogger(__name__)
CHUNK = 5_000  # records per acknowledged chunk (and checkpoint)
FETCH_TIMEOUT_MS = 500
SLICE_S = 0.01


@dataclass
class ReplayState:
    """What a replay has done; stored as JSON so that ``--resume`` continues it."""

    source: str
    target: str
    start_ms: int
    end_ms: int
    plan: dict[int, tuple[int, int]]  # source partition -> [first, end) offsets
    target_base: dict[int, int]  # target partition -> its end offset when the replay began
    next_offset: dict[int, int] = field(default_factory=dict)  # next source offset to read
    copied: dict[int, int] = field(default_factory=dict)  # acknowledged copies per partition
    done: bool = False

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ReplayState:
        raw = json.loads(path.read_text())
        ints = ("plan", "target_base", "next_offset", "copied")
        for key in ints:
            raw[key] = {int(p): tuple(v) if key == "plan" else v for p, v in raw[key].items()}
        return cls(**raw)

    @property
    def total(self) -> int:
        return sum(end - first for first, end in self.plan.values())

    def scanned(self) -> int:
        return sum(self.next_offset[p] - first for p, (first, _) in self.plan.items())


@dataclass(frozen=True)
class Pace:
    """None: as fast as possible; ``rate``: records/s; ``speed``: x event time."""

    rate: float | None = None
    speed: float | None = None


class _Clock:
    def __init__(self, pace: Pace, start_ms: int) -> None:
        self.pace, self.start_ms = pace, start_ms
        self.started = time.monotonic()
        self.sent = 0
        self.newest = start_ms

    def wait_s(self, timestamp_ms: int) -> float:
        """Seconds to wait before the next record (of ``timestamp_ms``) is due."""
        now = time.monotonic() - self.started
        if self.pace.rate:
            return (self.sent + 1) / self.pace.rate - now
        if self.pace.speed:
            self.newest = max(self.newest, timestamp_ms)  # a record behind is due with it
            return (self.newest - self.start_ms) / 1000.0 / self.pace.speed - now
        return 0.0


async def copy_range(
    bootstrap: str,
    state: ReplayState,
    state_path: Path,
    pace: Pace,
    *,
    progress: Callable[[int], None] | None = None,
) -> ReplayState:
    """Copy what ``state`` has left to copy; returns the final state (``done``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="rtscore-replay",
        acks="all",
        enable_idempotence=True,  # retries neither duplicate nor reorder a partition's records
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    try:
        await consumer.start()
        await producer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        await producer.stop()
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap}: {exc}",
            hint="start it with `rtscore infra up` or set RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        await _skip_already_written(consumer, state)
        await _copy(consumer, producer, state, state_path, pace, progress)
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"replay {state.source} -> {state.target} failed: {exc!r}",
            hint="what was acknowledged is checkpointed: run the same command with --resume",
        ) from exc
    finally:
        await producer.stop()
        await consumer.stop()
    state.done = True
    state.save(state_path)
    return state


async def target_ends(consumer: AIOKafkaConsumer, topic: str, parts: list[int]) -> dict[int, int]:
    ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
    return {tp.partition: off for tp, off in ends.items()}


async def _skip_already_written(consumer: AIOKafkaConsumer, state: ReplayState) -> None:
    """Move each partition's checkpoint past records the target holds beyond it."""
    held = await target_ends(consumer, state.target, list(state.plan))
    for p, (first, _end) in state.plan.items():
        state.next_offset.setdefault(p, first)
        state.copied.setdefault(p, 0)
        extra = held[p] - state.target_base[p] - state.copied[p]
        if extra < 0:
            raise ConfigError(
                f"{state.target} partition {p} holds {held[p] - state.target_base[p]} replayed "
                f"records but {state.copied[p]} were acknowledged: records were deleted",
                hint="replay into a fresh topic",
            )
        if extra:
            await _advance(consumer, state, p, extra)


async def _advance(consumer: AIOKafkaConsumer, state: ReplayState, p: int, extra: int) -> None:
    tp = TopicPartition(state.source, p)
    end = state.plan[p][1]
    consumer.assign([tp])
    consumer.seek(tp, state.next_offset[p])
    while extra:
        batch = (await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)).get(tp, [])
        for m in batch:
            if m.offset >= end or not extra:
                break
            state.next_offset[p] = m.offset + 1
            if state.start_ms <= m.timestamp < state.end_ms:
                state.copied[p] += 1
                extra -= 1
        if extra and (not batch or await consumer.position(tp) >= end):
            raise ConfigError(
                f"{state.target} partition {p} holds more records than the range has: "
                "another producer writes to it",
                hint="replay into a topic nothing else writes to",
            )
    log.info("partition %d: %d records were already in %s", p, state.copied[p], state.target)


async def _copy(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    state: ReplayState,
    state_path: Path,
    pace: Pace,
    progress: Callable[[int], None] | None,
) -> None:
    tps = {p: TopicPartition(state.source, p) for p in state.plan}
    consumer.assign(list(tps.values()))
    open_parts = set()
    for p, tp in tps.items():
        if state.next_offset[p] < state.plan[p][1]:
            consumer.seek(tp, state.next_offset[p])
            open_parts.add(p)
    buffers: dict[int, deque[Any]] = {p: deque() for p in tps}
    clock = _Clock(pace, state.start_ms)
    pending: list[asyncio.Future[Any]] = []
    unacked: dict[int, int] = dict.fromkeys(tps, 0)
    scanned = dict(state.next_offset)
    while open_parts or any(buffers.values()):
        # Every partition still to read has a record buffered, so the earliest head is known.
        await _fill(consumer, tps, state, buffers, open_parts)
        p = _earliest(buffers) if pace.rate or pace.speed else next(p for p in tps if buffers[p])
        m = buffers[p].popleft()
        scanned[p] = m.offset + 1
        if state.start_ms <= m.timestamp < state.end_ms:
            wait = clock.wait_s(m.timestamp)
            if wait > SLICE_S:
                await asyncio.sleep(wait)
            pending.append(
                await producer.send(
                    state.target,
                    m.value,
                    key=m.key,
                    partition=p,
                    timestamp_ms=m.timestamp,
                    headers=list(m.headers or ()),
                )
            )
            clock.sent += 1
            unacked[p] += 1
        if len(pending) >= (200 if pace.rate or pace.speed else CHUNK):
            await _checkpoint(pending, unacked, scanned, state, state_path, progress)
    await _checkpoint(pending, unacked, scanned, state, state_path, progress)


async def _fill(
    consumer: AIOKafkaConsumer,
    tps: dict[int, TopicPartition],
    state: ReplayState,
    buffers: dict[int, deque[Any]],
    open_parts: set[int],
) -> None:
    idle_since = time.monotonic()
    while True:
        empty = [p for p in open_parts if not buffers[p]]
        if not empty:
            return
        batch = await consumer.getmany(*(tps[p] for p in empty), timeout_ms=FETCH_TIMEOUT_MS)
        for tp, messages in batch.items():
            end = state.plan[tp.partition][1]
            buffers[tp.partition].extend(m for m in messages if m.offset < end)
        for p in empty:
            if await consumer.position(tps[p]) >= state.plan[p][1]:
                open_parts.discard(p)
                consumer.pause(tps[p])
        if batch:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 60:
            raise DependencyUnavailable(
                f"no records from {state.source} partitions {sorted(empty)} for 60 s",
                hint="check the broker (`rtscore infra status`), then run again with --resume",
            )


def _earliest(buffers: dict[int, deque[Any]]) -> int:
    return min((b[0].timestamp, p) for p, b in buffers.items() if b)[1]


async def _checkpoint(
    pending: list[asyncio.Future[Any]],
    unacked: dict[int, int],
    scanned: dict[int, int],
    state: ReplayState,
    state_path: Path,
    progress: Callable[[int], None] | None,
) -> None:
    try:
        await asyncio.gather(*pending)
    except KafkaError as exc:
        if exc.retriable:
            raise
        raise RtscoreError(
            f"Kafka refused a record for {state.target}: {exc!r}",
            hint="check the target topic's configuration (max.message.bytes, ACLs)",
        ) from exc
    pending.clear()
    for p, n in unacked.items():
        state.copied[p] += n
        unacked[p] = 0
    # scanned covers every record before it: each was sent and is now acknowledged, or skipped
    state.next_offset.update(scanned)
    state.save(state_path)
    if progress is not None:
        progress(state.scanned())
