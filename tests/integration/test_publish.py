"""The publisher writes simulated records to a real broker keyed, event-timed and in key order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.demo.publish import _interleave, _Message, publish, publish_simulation
from streams.demo.simulator import (
    SimConfig,
    Simulation,
    outcome_records,
    simulate,
)
from streams.errors import DependencyUnavailable
from streams.settings import Topics

PARTITIONS = 3


async def _create(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # Simulated event times are years old: keep them instead of expiring them at once.
        await admin.create_topics(
            [NewTopic(n, PARTITIONS, 1, topic_configs={"retention.ms": "-1"}) for n in names]
        )
    finally:
        await admin.close()


async def _delete(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        assert sum(ends.values()) == expected
        out: list = []
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    t = Topics.for_prefix(f"test-publish-{uuid.uuid4().hex[:10]}")
    names = [t.events, t.outcomes]
    asyncio.run(_create(kafka_bootstrap, names))
    try:
        yield t
    finally:
        asyncio.run(_delete(kafka_bootstrap, names))


@pytest.fixture(scope="module")
def small() -> tuple[Simulation, SimConfig]:
    cfg = SimConfig.light(n_customers=100, n_days=20, outcomes_for="all")
    return simulate(cfg), cfg


def _check_topic(received: list, expected: list[dict], time_field: str) -> None:
    assert len(received) == len(expected)
    by_id = {r["transaction_id"]: r for r in expected}
    seen = set()
    per_key: dict[bytes, list[int]] = defaultdict(list)
    partition_of_key: dict[bytes, int] = {}
    for msg in sorted(received, key=lambda m: (m.partition, m.offset)):
        value = json.loads(msg.value)
        record = by_id[value["transaction_id"]]
        assert value == record
        assert msg.key == str(record["customer_id"]).encode()
        assert msg.timestamp == record[time_field]
        assert partition_of_key.setdefault(msg.key, msg.partition) == msg.partition
        per_key[msg.key].append(value["transaction_id"])
        seen.add(value["transaction_id"])
    assert seen == set(by_id)
    # Per key, the partition holds the records in the order they were published.
    publish_order = {r["transaction_id"]: i for i, r in enumerate(expected)}
    for ids in per_key.values():
        positions = [publish_order[i] for i in ids]
        assert positions == sorted(positions)


@pytest.mark.integration
def test_history_then_read_back(kafka_bootstrap: str, topics: Topics, small) -> None:
    sim, cfg = small
    rows = np.flatnonzero(sim.day_index() < 15)
    seen: list[int] = []
    n_tx, n_out = asyncio.run(
        publish_simulation(kafka_bootstrap, topics, sim, cfg, rows=rows, progress=seen.append)
    )
    txs = [
        {
            "transaction_id": int(i),
            "tx_datetime": int(sim.tx_time_ms[i]),
            "customer_id": int(sim.customer_id[i]),
            "terminal_id": int(sim.terminal_id[i]),
            "tx_amount": float(sim.tx_amount[i]),
        }
        for i in rows
    ]
    outs = outcome_records(sim, cfg, rows)
    assert (n_tx, n_out) == (len(rows), len(rows))  # outcomes_for="all"
    assert seen and seen[-1] == n_tx + n_out and seen == sorted(seen)

    _check_topic(asyncio.run(_read_all(kafka_bootstrap, topics.events, n_tx)), txs, "tx_datetime")
    _check_topic(
        asyncio.run(_read_all(kafka_bootstrap, topics.outcomes, n_out)), outs, "outcome_datetime"
    )


@pytest.mark.integration
def test_paced_stream_keeps_its_rate(kafka_bootstrap: str, topics: Topics, small) -> None:
    sim, cfg = small
    # Labels after ~30 minutes, so outcomes interleave with the transactions.
    cfg = dataclasses.replace(cfg, outcome_delay_days=0.02)
    rows = np.flatnonzero((sim.day_index() >= 10) & (sim.day_index() < 13))
    rate = 500.0
    began = time.monotonic()
    n_tx, n_out = asyncio.run(
        publish_simulation(kafka_bootstrap, topics, sim, cfg, rows=rows, rate=rate)
    )
    elapsed = time.monotonic() - began
    total = n_tx + n_out
    assert (n_tx, n_out) == (len(rows), len(rows))
    # Producer start/stop add a little; pacing itself neither bursts nor drags.
    assert total / rate * 0.95 < elapsed < total / rate + 3.0
    received = asyncio.run(_read_all(kafka_bootstrap, topics.outcomes, n_out))
    assert sorted(json.loads(m.value)["transaction_id"] for m in received) == rows.tolist()
    assert all(m.timestamp == json.loads(m.value)["outcome_datetime"] for m in received)


def test_live_stream_sends_outcomes_once_their_time_has_come() -> None:
    def msg(topic: str, t: int) -> _Message:
        return _Message(topic, b"k", b"", t)

    txs = [msg("tx", t) for t in (10, 20, 30)]
    outs = [msg("out", t) for t in (5, 20, 25, 40, 50)]
    merged = [(m.topic, m.timestamp_ms) for m in _interleave(iter(txs), iter(outs))]
    assert merged == [
        ("out", 5),
        ("tx", 10),
        ("out", 20),
        ("tx", 20),
        ("out", 25),
        ("tx", 30),
        ("out", 40),
        ("out", 50),
    ]


@pytest.mark.integration
def test_publish_plain_records_with_a_codec(kafka_bootstrap: str, topics: Topics) -> None:
    records = [{"id": i, "k": f"user-{i % 7}", "t": 1_600_000_000_000 + i} for i in range(12_000)]
    progress: list[int] = []
    sent = asyncio.run(
        publish(
            kafka_bootstrap,
            topics.events,
            records,
            key_field="k",
            time_field="t",
            codec=lambda r: str(r["id"]).encode(),
            progress=progress.append,
        )
    )
    assert sent == len(records)
    assert progress == [5_000, 10_000, 12_000]
    received = asyncio.run(_read_all(kafka_bootstrap, topics.events, sent))
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for msg in sorted(received, key=lambda m: (m.partition, m.offset)):
        assert msg.timestamp == 1_600_000_000_000 + int(msg.value)
        per_key[msg.key].append(int(msg.value))
    assert set(per_key) == {f"user-{j}".encode() for j in range(7)}
    assert all(ids == sorted(ids) for ids in per_key.values())


@pytest.mark.integration
def test_unreachable_broker_is_a_retriable_error() -> None:
    with pytest.raises(DependencyUnavailable) as info:
        asyncio.run(publish("127.0.0.1:1", "nowhere", [], key_field="k", time_field="t"))
    assert info.value.retriable
