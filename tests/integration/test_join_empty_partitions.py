"""The join on the real Kafka and Redis when one partition of the predictions topic never
receives a record: it holds every prediction and performance window open until the worker
reads (from the broker) that the partition is empty; then they expire and close."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from streams.codecs import RecordCodec
from streams.join.processor import JoinProcessor
from streams.scoring import InputRecord
from streams.settings import Settings
from streams.topics import EmptyPartitions, ensure_topics, record_counts
from tests.e2e.join_cases import outcome, prediction
from tests.integration.test_join_state import _own_keys_removed  # noqa: F401 (autouse)
from tests.integration.test_join_state import worker as join_worker

pytestmark = pytest.mark.integration
DAY = 86_400_000
HOUR = 3_600_000
N = 20  # day-0 predictions; the even ones get an outcome, the odd ones expire


def worker(settings: Settings) -> JoinProcessor:
    t, n = settings.topics, settings.topic_partitions
    empty = EmptyPartitions(settings.kafka_bootstrap, [t.predictions, t.outcomes], idle_s=0)
    return join_worker(settings, inputs=n, empty=empty)


def workload(settings: Settings) -> list[InputRecord]:
    """Predictions on partitions 0 and 1 only (2 stays empty), outcomes on all three; day-40
    sentinels move every non-empty partition past day 0's windows and deadlines."""
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    rng = np.random.default_rng(0)
    t = settings.topics
    preds = [(i, i * HOUR, i % 2) for i in range(N)] + [
        (1000 + k, 40 * DAY, k % 2) for k in range(3)
    ]
    outs = [(i, i * HOUR, DAY + i * HOUR) for i in range(0, N, 2)] + [
        (1000 + k, 40 * DAY, 40 * DAY + HOUR) for k in range(3)
    ]
    out: list[InputRecord] = []
    for offset, (i, when, part) in enumerate(preds):
        value = codec.encode(prediction(i, when, 1, rng, 1))
        out.append(InputRecord(t.predictions, part, offset, when, b"1", value))
    for offset, (i, when, known) in enumerate(outs):
        value = json.dumps(outcome(i, when, known, 1, True)).encode()
        out.append(InputRecord(t.outcomes, offset % 3, offset, known, b"1", value))
    return out


async def produce(bootstrap: str, records: list[InputRecord]) -> None:
    """The same records on the broker: which partitions are empty is read from there."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(r.topic, r.value, key=r.key, partition=r.partition)
    finally:
        await producer.stop()


def test_an_empty_predictions_partition_no_longer_holds_the_windows(test_settings) -> None:
    settings = test_settings
    asyncio.run(ensure_topics(settings))
    records = workload(settings)
    t = settings.topics
    assert {r.partition for r in records if r.topic == t.predictions} == {0, 1}
    asyncio.run(produce(settings.kafka_bootstrap, records))
    join = worker(settings)

    async def run() -> tuple[dict[str, int], dict[str, int]]:
        await join.publisher.start()
        await join.delivery.start()
        join.started = True
        try:
            # Not yet read which partitions are empty: partition 2 holds everything open.
            await join.process(records)
            before = join.state.counts()
            assert join.watermark is None
            assert "expired" not in before
            assert join.state.closable_windows(join.reporter.closed(40 * DAY)) == [0]
            # The timer's read: predictions/2 is empty, so the watermark is day 40 and the
            # same steps as a batch expire the predictions and report day 0's window.
            await join.refresh_empty()
            return before, join.state.counts()
        finally:
            join.started = False
            await join.delivery.stop()
            await join.publisher.stop()

    before, after = asyncio.run(run())
    assert join.empty.empty(t.predictions) == {2} and join.empty.empty(t.outcomes) == set()
    assert join.watermark == 40 * DAY
    assert before["matched"] == N // 2 + 3
    assert after["expired"] == N // 2
    assert join.state.closable_windows(join.reporter.closed(40 * DAY)) == []
    got = asyncio.run(record_counts(settings.kafka_bootstrap, [t.labeled, t.performance]))
    assert got[t.labeled] == N + 3  # every prediction decided once: matched or expired
    assert got[t.performance] >= 1, "day 0's performance window was reported"
    assert join.state.outboxes() == {}
