"""Time ranges on the command line, and whether a topic still holds the start of one.

Kafka's retention deletes a partition's oldest records; a range that starts before the
oldest record still held cannot be read whole, and a backtest or replay of it would be
silently wrong. A partition whose log start offset is 0 has lost nothing: data that begins
after the range's start simply did not exist earlier.
"""

from __future__ import annotations

import datetime as dt

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigError, DependencyUnavailable


def parse_time(text: str, what: str) -> int:
    """Epoch ms from ``2018-04-01``, ``2018-04-01T06:00`` (UTC unless an offset is given) or
    an integer number of milliseconds."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    try:
        parsed = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{what} {text!r} is not a time",
            hint="write a UTC date or time (2018-04-01, 2018-04-01T06:00) or epoch milliseconds",
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def show_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def topic_partitions(bootstrap: str, topic: str) -> list[int] | None:
    """The partition numbers of ``topic``, or None if it does not exist (never creates it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap}: {exc}",
            hint="start it with `rtscore infra up` or set RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        # Listing first: describing a missing topic would create it on a broker that
        # auto-creates topics.
        if topic not in await admin.list_topics():
            return None
        described = (await admin.describe_topics([topic]))[0]
    finally:
        await admin.close()
    if described["error_code"] or not described["partitions"]:
        raise DependencyUnavailable(
            f"Kafka at {bootstrap} cannot describe {topic} (error {described['error_code']})",
            hint="the broker may be starting or electing leaders; retry in a moment",
        )
    return sorted(p["partition"] for p in described["partitions"])


async def earliest_held(bootstrap: str, topic: str) -> dict[int, tuple[int, int | None]]:
    """Per partition: (log start offset, timestamp of the oldest record held or None)."""
    partitions = await topic_partitions(bootstrap, topic)
    if partitions is None:
        raise ConfigError(
            f"topic {topic} does not exist on {bootstrap}",
            hint="check the topic name and RTSCORE_TOPIC_PREFIX",
        )
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        starts = await consumer.beginning_offsets(tps)
        # the first record at or after time 0 is the oldest one still held
        oldest = await consumer.offsets_for_times(dict.fromkeys(tps, 0))
    except KafkaConnectionError as exc:
        raise DependencyUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return {
        tp.partition: (starts[tp], None if oldest[tp] is None else oldest[tp].timestamp)
        for tp in tps
    }


async def check_retention(bootstrap: str, topic: str, start_ms: int, *, why: str) -> None:
    """Raise ConfigError if retention has deleted records of ``topic`` from ``start_ms`` on."""
    lost = {
        p: ts
        for p, (start, ts) in (await earliest_held(bootstrap, topic)).items()
        if start > 0 and ts is not None and ts > start_ms
    }
    if lost:
        earliest = max(lost.values())
        raise ConfigError(
            f"{topic} no longer holds {why} from {show_time(start_ms)}: retention has deleted "
            f"older records, and partition(s) {sorted(lost)} now start at {show_time(earliest)}",
            hint=f"start the range at {show_time(earliest)} or later, or raise the topic's "
            "retention.ms before the history you need ages out",
        )
