"""The compacted model-events topic: publish a model's serving state, read the latest one, and
follow changes as they come.

Key = model name, value = the whole :class:`ServingState` (schemas/model_event.avsc), so
compaction keeps exactly what a worker starting now must serve. Readers use no consumer
group: every worker reads the one partition from the beginning on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.codecs import RecordCodec
from streams.errors import DependencyUnavailable, InvalidEvent
from streams.serving_state import ServingState

log = logging.getLogger(__name__)

SCHEMA = "model_event.avsc"
_POLL_MS = 200


def codec(schemas_dir: Path) -> RecordCodec:
    return RecordCodec.from_file(schemas_dir, SCHEMA)


async def publish_state(
    bootstrap: str, topic: str, state: ServingState, model_codec: RecordCodec
) -> None:
    """Write ``state`` and return once every in-sync replica has it."""
    value = model_codec.encode(state.to_record(), strict=True)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=15000
    )
    try:
        await producer.start()
        await producer.send_and_wait(
            topic, value, key=state.model_name.encode(), timestamp_ms=state.time_ms or None
        )
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot publish the serving state of {state.model_name} to {topic} at {bootstrap}: "
            f"{exc}",
            hint="start Kafka (`rtscore infra up`), then run the command again",
        ) from exc
    finally:
        await producer.stop()


async def read_latest(
    bootstrap: str, topic: str, model_name: str, model_codec: RecordCodec
) -> tuple[ServingState | None, int]:
    """The latest state of ``model_name`` on the topic (None if none) and the offset to
    follow from."""
    consumer = _consumer(bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        await consumer.start()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        latest: ServingState | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for message in batch.get(tp, []):
                if message.offset >= end:
                    break
                state = _decode(message.key, message.value, model_name, model_codec)
                latest = state or latest
        return latest, end
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot read {topic} at {bootstrap}: {exc}",
            hint="start Kafka (`rtscore infra up`) or check RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    finally:
        await consumer.stop()


async def follow(
    bootstrap: str,
    topic: str,
    model_name: str,
    model_codec: RecordCodec,
    start_offset: int,
    on_state: Callable[[ServingState], Awaitable[object]],
) -> None:
    """Call ``on_state`` with each newer state of ``model_name`` until cancelled.

    Only the last state of each fetch is passed on: states are whole, so an older one that
    was superseded in the same fetch needs no applying. Broker errors are logged and retried.
    """
    tp = TopicPartition(topic, 0)
    offset = start_offset
    while True:
        consumer = _consumer(bootstrap)
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS)
                latest: ServingState | None = None
                for message in batch.get(tp, []):
                    latest = _decode(message.key, message.value, model_name, model_codec) or latest
                    offset = message.offset + 1
                if latest is not None:
                    await on_state(latest)
        except Exception as exc:  # KafkaError above all; whatever it is, keep following
            log.warning("following %s failed (%r); retrying in 1s", topic, exc)
            await asyncio.sleep(1.0)
        finally:
            await consumer.stop()


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=_POLL_MS,
    )


def _decode(
    key: bytes | None, value: bytes | None, model_name: str, model_codec: RecordCodec
) -> ServingState | None:
    if key != model_name.encode() or value is None:  # another model's, or a tombstone
        return None
    try:
        return ServingState.from_record(model_codec.decode(value))
    except (InvalidEvent, KeyError) as exc:
        log.error("ignoring an unreadable model event for %s: %s", model_name, exc)
        return None
