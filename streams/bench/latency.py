"""End-to-end latency at a fixed offered load: a paced producer stamps each event when it
hands it to Kafka, a consumer of the contender's output notes when the event's output becomes
readable; percentiles of the difference."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.demo.publish import json_bytes

IdOf = Callable[[bytes], str]  # an output record's value -> the id of the event it is for
TICK_S = 0.002
DRAIN_S = 30.0  # after the last send, how long outputs may take before they count as lost


def ceiling_id(value: bytes) -> str:
    return str(json.loads(value)["transaction_id"])


@dataclass(frozen=True)
class Latency:
    offered_per_s: float
    sent: int
    received: int
    achieved_per_s: float  # what the producer managed to offer
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of ``topic``'s new records (positioned at the end now, no group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve the end now, not at the first fetch
    return consumer


async def measure_latency(
    bootstrap: str,
    in_topic: str,
    out_topic: str,
    records: Sequence[dict[str, Any]],
    rate: float,
    id_of: IdOf,
) -> Latency:
    """Send ``records`` at ``rate``/s and time each one until its output is readable."""
    reader = await _reader(bootstrap, out_topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent_at: dict[str, float] = {}
    latency: dict[str, float] = {}
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            batches = await reader.getmany(timeout_ms=50)
            now = time.monotonic()
            for batch in batches.values():
                for r in batch:
                    key = id_of(r.value)
                    t = sent_at.get(key)
                    if t is not None and key not in latency:
                        latency[key] = now - t
            if len(latency) >= len(records):
                done.set()

    reading = asyncio.create_task(read())
    futures = []
    started = time.monotonic()
    try:
        i = 0
        while i < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate) + 1)
            while i < due:
                r = records[i]
                sent_at[str(r["transaction_id"])] = time.monotonic()
                futures.append(
                    await producer.send(
                        in_topic,
                        json_bytes(r),
                        key=str(r["customer_id"]).encode(),
                        timestamp_ms=r["tx_datetime"],
                    )
                )
                i += 1
            await asyncio.sleep(TICK_S)
        offered_s = time.monotonic() - started
        await asyncio.gather(*futures)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), DRAIN_S)
    finally:
        done.set()
        await reading
        await producer.stop()
        await reader.stop()
    ms = np.array(sorted(latency.values())) * 1000.0 if latency else np.array([np.nan])
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return Latency(
        offered_per_s=rate,
        sent=len(records),
        received=len(latency),
        achieved_per_s=len(records) / max(offered_s, 1e-9),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(ms.max()),
    )
