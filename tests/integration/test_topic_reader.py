"""Reading a time range of a real topic: the exact records and per-partition offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from models.topic_reader import Record, read_range
from streams.errors import ConfigError

pytestmark = pytest.mark.integration

N = 2000
PARTITIONS = 3
BASE_MS = 1_533_081_600_000
START_MS = BASE_MS + 500_000
END_MS = BASE_MS + 1_500_000


def _timestamp(i: int) -> int:
    # One second apart, except every 97th record, 200 s late: producers set timestamps and
    # they need not increase within a partition.
    return BASE_MS + i * 1000 - (200_000 if i % 97 == 0 else 0)


async def _admin(bootstrap: str, create: str | None = None, delete: str | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(create, PARTITIONS, replication_factor=1)])
        if delete:
            await admin.delete_topics([delete])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str) -> list[Record]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for i in range(N):
            key, value = f"k{i % 50}".encode(), f'{{"i": {i}}}'.encode()
            future = await producer.send(
                topic, value, key=key, partition=i % PARTITIONS, timestamp_ms=_timestamp(i)
            )
            sent.append((key, value, _timestamp(i), future))
        # Not meta.timestamp: aiokafka 0.14 reports the first record's CreateTime for every
        # record of a batch (message_accumulator.done overwrites its loop variable).
        return [
            (key, value, ts, meta.partition, meta.offset)
            for key, value, ts, meta in [(k, v, t, await f) for k, v, t, f in sent]
        ]
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def produced(kafka_bootstrap: str) -> Iterator[tuple[str, list[Record]]]:
    topic = f"test-topic-reader-{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(kafka_bootstrap, create=topic))
    try:
        records = asyncio.run(_produce(kafka_bootstrap, topic))
        yield topic, records
    finally:
        asyncio.run(_admin(kafka_bootstrap, delete=topic))


def test_a_sub_range_is_read_exactly(kafka_bootstrap: str, produced) -> None:
    topic, records = produced
    fetched: list[int] = []

    got = asyncio.run(read_range(kafka_bootstrap, topic, START_MS, END_MS, progress=fetched.append))

    expected = {r for r in records if START_MS <= r[2] < END_MS}
    assert len(got.records) == len(expected) and set(got.records) == expected
    assert (got.topic, got.start_ms, got.end_ms) == (topic, START_MS, END_MS)
    # Partition order, then offset order.
    assert got.records == sorted(got.records, key=lambda r: (r[3], r[4]))
    # Per partition: from the earliest offset stamped at or after START_MS to the end.
    expected_offsets = {
        p: (
            min(r[4] for r in records if r[3] == p and r[2] >= START_MS),
            1 + max(r[4] for r in records if r[3] == p),
        )
        for p in range(PARTITIONS)
    }
    assert got.offsets == expected_offsets
    # Late-stamped records after the first offset were fetched and filtered out.
    assert any(r[2] < START_MS and r[4] >= got.offsets[r[3]][0] for r in records)
    assert fetched and fetched[-1] == sum(end - first for first, end in got.offsets.values())


def test_open_and_empty_ranges(kafka_bootstrap: str, produced) -> None:
    topic, records = produced

    everything = asyncio.run(read_range(kafka_bootstrap, topic))
    assert set(everything.records) == set(records) and len(everything.records) == N
    assert {p: first for p, (first, _) in everything.offsets.items()} == dict.fromkeys(
        range(PARTITIONS), 0
    )

    late = asyncio.run(read_range(kafka_bootstrap, topic, BASE_MS + N * 1000))
    assert late.records == []
    assert all(first == end for first, end in late.offsets.values())


def test_a_missing_topic_is_a_config_error(kafka_bootstrap: str) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        asyncio.run(read_range(kafka_bootstrap, f"test-no-such-{uuid.uuid4().hex[:10]}"))


def test_headers_are_kept_for_the_records_that_have_them(kafka_bootstrap: str) -> None:
    topic = f"test-topic-reader-h-{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(kafka_bootstrap, create=topic))

    async def produce() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            with_header = await producer.send_and_wait(
                topic, b"a", partition=1, headers=[("content-type", b"application/avro")]
            )
            without = await producer.send_and_wait(topic, b"b", partition=1)
        finally:
            await producer.stop()
        return [(m.partition, m.offset) for m in (with_header, without)]

    try:
        first, second = asyncio.run(produce())
        got = asyncio.run(read_range(kafka_bootstrap, topic))
    finally:
        asyncio.run(_admin(kafka_bootstrap, delete=topic))
    assert [r[1] for r in got.records] == [b"a", b"b"]
    assert got.headers == {first: (("content-type", b"application/avro"),)}
    assert second not in got.headers
