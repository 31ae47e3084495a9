"""A/B arms and a shadow in real predictions: a worker started on a published serving state
(champion v1, challenger v2, split 80/20, the challenger in shadow on every event) decides
with each entity's arm, sticky per entity, and records the challenger's shadow score, equal
row by row to what v2 scores offline on the same feature vectors."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict

import numpy as np
import pytest

from models.registry import Registry
from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.publish import publish
from streams.topics import ensure_topics
from tests.e2e.test_hot_swap import START_MS, cli, register
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e

N_EVENTS = 3000
N_CUSTOMERS = 400


def test_split_arms_and_shadow_scores_in_real_predictions(test_settings, tmp_path):
    settings = test_settings
    asyncio.run(ensure_topics(settings))
    registry = Registry(settings.registry_root)
    v1 = register(settings, seed=1)
    registry.set_alias("fraud", "champion", v1)
    v2 = register(settings, seed=2)
    assert cli(settings, "model", "challenger", "fraud", str(v2)) == 0
    assert cli(settings, "model", "split", "fraud", "champion=80", "challenger=20") == 0
    assert cli(settings, "model", "shadow", "fraud", "challenger=1") == 0

    events = [
        {
            "transaction_id": i,
            "tx_datetime": START_MS + i * 1000,
            "customer_id": i % N_CUSTOMERS,
            "terminal_id": i % 37,
            "tx_amount": float(3 + (i * 7919) % 250),
        }
        for i in range(N_EVENTS)
    ]
    asyncio.run(
        publish(
            settings.kafka_bootstrap,
            settings.topics.events,
            events,
            key_field="customer_id",
            time_field="tx_datetime",
        )
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        counts = worker.wait_outputs(N_EVENTS, timeout=60)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert counts == {settings.topics.predictions: N_EVENTS, settings.topics.dlq: 0}

    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    seen = [
        codec.decode(r[1])
        for r in asyncio.run(
            read_range(settings.kafka_bootstrap, settings.topics.predictions)
        ).records
    ]
    assert len({p["event_id"] for p in seen}) == N_EVENTS

    # the arm is sticky per entity, and the challenger's share of entities fits its weight
    arms: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for p in seen:
        arms[p["entity_key"]].add((p["variant"], p["model_version"]))
    assert all(len(a) == 1 for a in arms.values())
    assert set().union(*arms.values()) == {("champion", v1), ("challenger", v2)}
    challengers = sum(("challenger", v2) in a for a in arms.values())
    assert abs(challengers - 0.2 * N_CUSTOMERS) <= 4.5 * math.sqrt(N_CUSTOMERS * 0.2 * 0.8)

    # decisions are the arm's scores; the shadow is v2's, row by row, never the decision
    champion = registry.load("fraud", v1).estimator
    challenger = registry.load("fraud", v2).estimator
    X = np.asarray([p["features"] for p in seen])
    offline_v1 = champion.predict_proba(X)[:, 1]
    offline_v2 = challenger.predict_proba(X)[:, 1]
    for p, s1, s2 in zip(seen, offline_v1, offline_v2, strict=True):
        if p["variant"] == "champion":
            assert p["score"] == pytest.approx(s1, abs=1e-12)
            (shadow,) = p["shadows"]
            assert (shadow["model_name"], shadow["model_version"], shadow["variant"]) == (
                "fraud",
                v2,
                "challenger",
            )
            assert shadow["score"] == pytest.approx(s2, abs=1e-12)
        else:
            assert p["score"] == pytest.approx(s2, abs=1e-12)
            assert p["shadows"] == []
    assert np.abs(offline_v1 - offline_v2).max() > 0.01, "the two versions must differ"
