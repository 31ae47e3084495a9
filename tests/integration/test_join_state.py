"""The join's Redis state with several workers: an event is decided once however the
workers race, and the outbox of a worker that died is published by another, once."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from streams.codecs import RecordCodec
from streams.join.delivery import DeliveryCheck
from streams.join.metrics import JoinMetrics
from streams.join.processor import JoinProcessor
from streams.join.serve import join_state
from streams.pipeline import load_pipeline
from streams.publisher import AckedPublisher
from streams.scoring import InputRecord
from streams.settings import Settings
from streams.topics import EmptyPartitions, ensure_topics, record_counts
from tests.e2e.join_cases import outcome, prediction

pytestmark = pytest.mark.integration
DAY = 86_400_000


@pytest.fixture(autouse=True)
def _own_keys_removed(test_settings):
    yield
    client = redis.Redis.from_url(test_settings.redis_url.get_secret_value())
    keys = list(client.scan_iter(match=f"{test_settings.namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def worker(
    settings: Settings, inputs: int = 1, empty: EmptyPartitions | None = None
) -> JoinProcessor:
    """A join processor built as `rtscore join` builds it, reading ``inputs`` partitions of
    the predictions and the outcomes topics."""
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    topics = settings.topics
    partitions = {topics.predictions: inputs, topics.outcomes: inputs}
    n = settings.topic_partitions
    return JoinProcessor(
        settings,
        pipeline,
        join_state(settings, pipeline),
        AckedPublisher(settings.kafka_bootstrap),
        JoinMetrics(),
        partitions,
        DeliveryCheck(settings.kafka_bootstrap, {topics.labeled: n, topics.dlq: n}),
        empty,
    )


def records(settings: Settings, n: int, copy: int) -> tuple[list[InputRecord], list[InputRecord]]:
    import numpy as np

    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    rng = np.random.default_rng(0)
    topics = settings.topics
    preds = [
        InputRecord(
            topics.predictions, 0, i, DAY, b"1", codec.encode(prediction(i, DAY, 1, rng, 1))
        )
        for i in range(n)
    ]
    outs = [
        InputRecord(
            topics.outcomes,
            0,
            copy * n + i,
            2 * DAY,
            b"1",
            json.dumps(outcome(i, DAY, 2 * DAY + copy, 1, True)).encode(),
        )
        for i in range(n)
    ]
    return preds, outs


def test_racing_workers_decide_each_event_once(test_settings):
    a, b = worker(test_settings), worker(test_settings)
    n = 300
    preds, first = records(test_settings, n, copy=0)
    _, second = records(test_settings, n, copy=1)
    a._decide(preds)
    # Two outcome records per event, each worker gets one copy, at the same time.
    with ThreadPoolExecutor(2) as pool:
        out_a = pool.submit(a._decide, first)
        out_b = pool.submit(b._decide, second)
        labeled_a, labeled_b = out_a.result()[0], out_b.result()[0]
    topics = test_settings.topics
    n_labeled = sum(1 for o in labeled_a + labeled_b if o[0] == topics.labeled)
    counts = a.state.counts()
    assert n_labeled == n and counts["matched"] == n and counts["duplicate_outcome"] == n
    # Redelivering everything to a third worker decides nothing again.
    c = worker(test_settings)
    assert c._decide(preds + first + second)[0] == []
    assert c.state.counts()["matched"] == n


def test_a_dead_workers_outbox_is_published_by_another_once(test_settings):
    settings = test_settings.model_copy(update={"session_timeout_s": 6})
    asyncio.run(ensure_topics(settings))
    dead, alive = worker(settings), worker(settings)
    preds, outs = records(settings, 50, copy=0)
    topic = settings.topics.labeled

    async def die_then_recover() -> list[float]:
        # The dead worker decided 50 records; 20 reached Kafka before it was killed, none
        # left its outbox (killed between the broker's ack and the outbox removal).
        await dead.delivery.start()
        await dead.publisher.start()
        marks = await dead.delivery.marks()
        decided, _ = dead._decide(preds + outs, marks)
        assert len(decided) == 50
        await dead.publisher.publish(decided[:20])
        await dead.publisher.stop()
        await dead.delivery.stop()
        dead.state.heartbeat(dead.me, int(time.time() * 1000) - 60_000)
        await alive.publisher.start()
        alive.started = True
        try:
            await alive.recover()
            await alive.recover()  # nothing left: publishes nothing
        finally:
            await alive.publisher.stop()
        return [s.value for m in alive.metrics.recovered.collect() for s in m.samples]

    recovered = asyncio.run(die_then_recover())
    assert asyncio.run(record_counts(settings.kafka_bootstrap, [topic]))[topic] == 50
    assert 30.0 in recovered  # only the 30 that had not reached Kafka
    assert alive.state.outboxes() == {}
    assert dead.me not in alive.state.heartbeat(alive.me, int(time.time() * 1000))


def test_the_outbox_of_a_worker_killed_before_its_first_heartbeat_is_published(test_settings):
    """A worker can decide a batch within its first second and die before its heartbeat
    timer ticks: its entries have an owner no one knows. They are published all the same
    (CI once lost 5 labeled records and 8 dead letters this way), and a live worker's are not."""
    settings = test_settings.model_copy(update={"session_timeout_s": 6})
    asyncio.run(ensure_topics(settings))
    ghost, live, rescuer = worker(settings), worker(settings), worker(settings)
    preds, outs = records(settings, 30, copy=0)

    async def run() -> tuple[list[float], dict[int, dict[str, str]]]:
        await ghost.delivery.start()
        marks = await ghost.delivery.marks()
        await ghost.delivery.stop()
        assert len(ghost._decide(preds[:15] + outs[:15], marks)[0]) == 15  # never beat
        # A live worker beat before it decided (process does) and has not published yet.
        live.state.heartbeat(live.me, int(time.time() * 1000))
        assert len(live._decide(preds[15:] + outs[15:], marks)[0]) == 15
        await rescuer.publisher.start()
        rescuer.started = True
        try:
            await rescuer.recover()
        finally:
            await rescuer.publisher.stop()
        recovered = [s.value for m in rescuer.metrics.recovered.collect() for s in m.samples]
        return recovered, rescuer.state.outboxes()

    recovered, left = asyncio.run(run())
    topic = settings.topics.labeled
    assert asyncio.run(record_counts(settings.kafka_bootstrap, [topic]))[topic] == 15
    assert 15.0 in recovered
    owners = {json.loads(raw)["owner"] for entries in left.values() for raw in entries.values()}
    assert owners == {live.me}, "the live worker's entries are its own to publish"
