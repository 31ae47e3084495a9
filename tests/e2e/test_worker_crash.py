"""At-least-once: a worker killed with SIGKILL mid-stream and restarted loses no event, and a
redelivered event gets the same prediction id (invariant 1, 7)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections import Counter

import pytest

from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.publish import publish_simulation
from streams.demo.simulator import SimConfig, simulate
from streams.topics import ensure_topics, record_counts
from tests.e2e.test_kcat import register_small_model
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def test_sigkill_mid_stream_then_restart_loses_nothing(test_settings, tmp_path):
    settings = test_settings.model_copy(update={"batch_max": 500})
    topics = settings.topics
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    cfg = dataclasses.replace(SimConfig.light(seed=11), n_days=30)
    sim = simulate(cfg)
    asyncio.run(publish_simulation(settings.kafka_bootstrap, topics, sim, cfg))
    n = len(sim)

    first = WorkerProcess(settings, tmp_path / "first.log")
    deadline = time.monotonic() + 90
    while (
        asyncio.run(record_counts(settings.kafka_bootstrap, [topics.predictions]))[
            topics.predictions
        ]
        < n // 3
    ):
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.05)
    first.stop(signal.SIGKILL)
    killed_at = asyncio.run(record_counts(settings.kafka_bootstrap, [topics.predictions]))
    assert killed_at[topics.predictions] < n, "the worker finished before it was killed"

    second = WorkerProcess(settings, tmp_path / "second.log")
    try:
        second.wait_outputs(n, timeout=120)
        codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        deadline = time.monotonic() + 60
        while True:
            predictions = [
                codec.decode(r[1])
                for r in asyncio.run(
                    read_range(settings.kafka_bootstrap, topics.predictions)
                ).records
            ]
            per_event = Counter(p["event_id"] for p in predictions)
            if len(per_event) == n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        assert second.stop() == 0, second.log_tail()
    assert set(per_event) == {str(i) for i in sim.transaction_id.tolist()}
    ids = {}
    for p in predictions:  # a redelivered event: same prediction id, same features and score
        first_id, first_features, first_score = ids.setdefault(
            p["event_id"], (p["prediction_id"], p["features"], p["score"])
        )
        assert first_id == p["prediction_id"]
        assert len(first_features) == len(p["features"])
        assert max(abs(a - b) for a, b in zip(first_features, p["features"], strict=True)) <= 1e-9
        # The same vector in another batch: BLAS may sum in another order (last bits only).
        assert abs(first_score - p["score"]) <= 1e-12
    assert asyncio.run(record_counts(settings.kafka_bootstrap, [topics.dlq]))[topics.dlq] == 0
