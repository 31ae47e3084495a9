"""The ceiling: a raw aiokafka consume -> produce pass-through that does no work on the events.

The same delivery contract as the worker (outputs acknowledged before the input offsets are
committed, acks=all, idempotent producer), so it is the best a Python process can do on this
broker with that contract.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.settings import Settings

MAX_RECORDS = 1000


def consumer(settings: Settings, group: str, *, auto_commit: bool = False) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topics.events,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=auto_commit,
        max_partition_fetch_bytes=settings.fetch_bytes_per_partition,
    )


def producer(settings: Settings) -> AIOKafkaProducer:
    # the worker's publisher settings (streams.publisher.AckedPublisher)
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=512 * 1024,
    )


async def run_ceiling(settings: Settings, stop: asyncio.Event) -> None:
    out_topic = settings.topics.predictions
    source, sink = consumer(settings, f"{settings.topic_prefix}-ceiling"), producer(settings)
    await source.start()
    await sink.start()
    try:
        while not stop.is_set():
            batches = await source.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            futures = [
                await sink.send(out_topic, r.value, key=r.key, timestamp_ms=r.timestamp)
                for records in batches.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await source.commit()
    finally:
        await sink.stop()
        await source.stop()
