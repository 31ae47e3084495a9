"""Online features equal offline ones, event by event, through the real worker on real Kafka
and Redis — with out-of-order and duplicated delivery (invariants 2, 3, 4), and after a
SIGKILL mid-stream (invariant 4, 7)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections import Counter

import numpy as np
import pytest
import redis

from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.publish import publish
from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.features.offline import offline_features
from streams.pipeline import load_pipeline
from streams.topics import ensure_topics, record_counts
from streams.validation import EventDecoder
from tests.e2e.test_kcat import register_small_model
from tests.e2e.test_scoring_e2e import _free_port, _scrape_series
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e
MINUTE_MS = 60_000


def _delivery(events: list[dict], rng: np.random.Generator, lateness_ms: int) -> list[dict]:
    """Events in the order a producer delivers them: 10 % held back by up to 90 % of the
    allowed lateness, 1.5 % delivered twice (the copy a little later)."""
    n = len(events)
    arrive = np.array([e["tx_datetime"] for e in events], dtype=np.float64)
    late = rng.random(n) < 0.10
    arrive[late] += rng.uniform(1_000, 0.9 * lateness_ms, late.sum())
    dup = np.flatnonzero(rng.random(n) < 0.015)
    copies = arrive[dup] + rng.uniform(1_000, 5 * MINUTE_MS, len(dup))
    order = np.argsort(np.concatenate([arrive, copies]), kind="stable")
    pool = events + [events[i] for i in dup]
    return [pool[i] for i in order]


def _publish_events(settings, events: list[dict]) -> None:
    asyncio.run(
        publish(
            settings.kafka_bootstrap,
            settings.topics.events,
            events,
            key_field="customer_id",
            time_field="tx_datetime",
        )
    )


def _offline_by_offset(
    settings, pipeline, outcomes: list[dict]
) -> dict[tuple[int, int], np.ndarray]:
    """The offline path's vector of every record of the events topic, by (partition, offset)."""
    data = asyncio.run(read_range(settings.kafka_bootstrap, settings.topics.events))
    decoder = EventDecoder(pipeline.events, max_bytes=settings.max_event_bytes)
    events = [decoder.decode(r[1]) for r in data.records]  # partition by partition, in offset order
    result = offline_features(pipeline, events, outcomes)
    return {(r[3], r[4]): result.X[i] for i, r in enumerate(data.records)}


def _assert_same_vectors(pipeline, predictions: list[dict], offline: dict) -> None:
    """Each prediction's vector equals the offline one (|Δ| <= 1e-9); on failure, say where."""
    online = np.array([p["features"] for p in predictions])
    expected = np.array([offline[(p["source_partition"], p["source_offset"])] for p in predictions])
    bad = np.abs(online - expected) > 1e-9
    if bad.any():
        columns = {pipeline.feature_names[j]: int(n) for j, n in enumerate(bad.sum(axis=0)) if n}
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise AssertionError(
            f"{int(bad.any(axis=1).sum())} of {len(predictions)} vectors differ, by column "
            f"{columns}; first: event {predictions[i]['event_id']} online {online[i].tolist()} "
            f"offline {expected[i].tolist()}"
        )


def _predictions(settings) -> list[dict]:
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    data = asyncio.run(read_range(settings.kafka_bootstrap, settings.topics.predictions))
    return [codec.decode(r[1]) for r in data.records]


def _start_with_outcomes(settings, outcomes, tmp_path, name):
    """Outcomes first, applied by the worker before any event arrives (so every outcome an
    event may count has arrived by then, online as offline)."""
    asyncio.run(
        publish(
            settings.kafka_bootstrap,
            settings.topics.outcomes,
            outcomes,
            key_field="customer_id",
            time_field="outcome_datetime",
        )
    )
    worker = WorkerProcess(settings, tmp_path / f"{name}.log")
    deadline = time.monotonic() + 60
    while _scrape_series(settings.metrics_port).get(
        'rtscore_outcomes_in_total{pipeline="fraud"}', 0
    ) < len(outcomes):
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    return worker


def test_online_vectors_equal_offline_with_out_of_order_and_duplicates(test_settings, tmp_path):
    # Batches of 500: what the worker buffers spans ~1.5 simulated days of one partition,
    # well inside the 7-day gap the terminal windows leave (see streams/pacing.py).
    settings = test_settings.model_copy(update={"metrics_port": _free_port(), "batch_max": 500})
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    assert len(pipeline.features) == 15 and pipeline.stateful
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    cfg = dataclasses.replace(
        SimConfig.light(seed=5, n_customers=1000, n_terminals=2000), n_days=30
    )
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    assert len(events) >= 50_000
    delivered = _delivery(events, np.random.default_rng(1), pipeline.state.allowed_lateness_ms)

    worker = _start_with_outcomes(settings, outcomes, tmp_path, "worker")
    try:
        _publish_events(settings, delivered)
        worker.wait_outputs(len(delivered), timeout=240)
        series = _scrape_series(settings.metrics_port)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    offline = _offline_by_offset(settings, pipeline, outcomes)
    predictions = _predictions(settings)
    assert len(predictions) == len(delivered) == len(offline)
    _assert_same_vectors(pipeline, predictions, offline)
    # the stream really was out of order and duplicated, in the topic the worker read
    data = asyncio.run(read_range(settings.kafka_bootstrap, settings.topics.events)).records
    by_partition: dict[int, list[int]] = {}
    for _k, _v, ts, partition, _o in data:
        by_partition.setdefault(partition, []).append(ts)
    behind = sum(
        int(np.count_nonzero(np.asarray(ts) < np.maximum.accumulate(ts)))
        for ts in by_partition.values()
    )
    assert behind >= 0.05 * len(events)
    assert len(delivered) - len(events) >= 0.01 * len(events)
    assert series.get('rtscore_late_events_total{pipeline="fraud"}', 0) == 0
    assert Counter(p["event_id"] for p in predictions) == Counter(
        str(e["transaction_id"]) for e in delivered
    )


def test_sigkill_and_restart_leave_features_as_if_each_event_ran_once(
    test_settings, redis_url, tmp_path
):
    settings = test_settings.model_copy(update={"metrics_port": _free_port(), "batch_max": 300})
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    cfg = dataclasses.replace(
        SimConfig.light(seed=9, n_customers=1000, n_terminals=2000), n_days=15
    )
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)

    first = _start_with_outcomes(settings, outcomes, tmp_path, "first")
    _publish_events(settings, events)
    deadline = time.monotonic() + 120
    topic = settings.topics.predictions
    while asyncio.run(record_counts(settings.kafka_bootstrap, [topic]))[topic] < len(events) // 3:
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.05)
    first.stop(signal.SIGKILL)
    assert asyncio.run(record_counts(settings.kafka_bootstrap, [topic]))[topic] < len(events)

    second = WorkerProcess(settings, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 180
        while True:
            predictions = _predictions(settings)
            if len({p["event_id"] for p in predictions}) == len(events):
                break
            assert time.monotonic() < deadline, second.log_tail()
            time.sleep(0.5)
    finally:
        assert second.stop() == 0, second.log_tail()

    # every prediction, redelivered ones included, carries the vector of a single pass
    _assert_same_vectors(
        pipeline, _predictions(settings), _offline_by_offset(settings, pipeline, outcomes)
    )
    # and the state holds each event once: one id per event across the customers' sets
    client = redis.Redis.from_url(redis_url)
    stored = sum(
        client.zcard(key)
        for key in client.scan_iter(
            match=f"{settings.namespace}:{pipeline.name}:customer:*:ev", count=1000
        )
    )
    assert stored == len(events)
