"""`rtscore train` on a real broker: what a registered version records about its training
(invariant 6), and that the training set read from the topics is the one the simulation
holds."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import numpy as np
import pytest

from models.from_topics import TrainPlan, train_from_topics
from models.registry import Registry
from models.training import build_training_set
from streams.demo.publish import publish_simulation
from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.features import MS_PER_DAY
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.integration

TRAIN_DAY, DAYS = 38, 7  # the demo's plan: 37 days of lookback before the first training day


def test_a_version_records_its_whole_lineage(test_settings) -> None:
    cfg = dataclasses.replace(
        SimConfig.light(seed=3, n_customers=300, n_terminals=600), n_days=TRAIN_DAY + 3 * DAYS
    )
    sim = simulate(cfg)
    topics = test_settings.topics
    pipeline = load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas")
    plan = TrainPlan.by_days(cfg.start_ms + TRAIN_DAY * MS_PER_DAY, DAYS, DAYS, DAYS)
    asyncio.run(ensure_topics(test_settings))
    try:
        sent, _ = asyncio.run(publish_simulation(test_settings.kafka_bootstrap, topics, sim, cfg))
        said: list[str] = []
        version, metrics = asyncio.run(
            train_from_topics(test_settings, pipeline, plan, progress=said.append)
        )
    finally:
        asyncio.run(delete_topics(test_settings, [topics.events, topics.outcomes]))

    meta = version.metadata
    data = meta["training_data"]
    # The training set, recomputed from the simulation in memory, is the one read.
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    expected = build_training_set(
        pipeline, events, outcomes, start_ms=plan.train_start_ms, end_ms=plan.train_end_ms
    )
    assert data["sha256"] == expected.sha256
    assert (data["rows"], data["positives"]) == (expected.n_rows, expected.n_positive)
    assert data["label_rate"] == pytest.approx(expected.n_positive / expected.n_rows)
    day = sim.day_index()
    in_range = (day >= TRAIN_DAY) & (day < TRAIN_DAY + DAYS)
    assert data["rows"] == int(in_range.sum())
    assert data["positives"] == int(sim.is_fraud[in_range].sum()) > 0

    assert (data["topic"], data["outcomes_topic"]) == (topics.events, topics.outcomes)
    assert (data["start_ms"], data["end_ms"]) == (plan.train_start_ms, plan.train_end_ms)
    assert data["read_from_ms"] == plan.train_start_ms - pipeline.lookback_ms
    assert data["read_to_ms"] == plan.test_end_ms
    read = (day >= TRAIN_DAY - 37) & (day < TRAIN_DAY + 3 * DAYS)
    offsets = data["partition_offsets"]
    assert set(offsets) == {"0", "1", "2"}
    assert sum(end - first for first, end in offsets.values()) == int(read.sum()) <= sent
    assert set(data["outcomes_partition_offsets"]) == {"0", "1", "2"}
    assert data["labels"] == {
        "rule": "first outcome of the event's id within max_delay",
        "max_delay_ms": 30 * MS_PER_DAY,
        "on_missing": "negative",
    }

    assert meta["feature_spec_hash"] == pipeline.feature_spec_hash
    assert meta["feature_names"] == pipeline.feature_names
    assert meta["estimator"] == {
        "estimator": "logistic_regression",
        "params": {},
        "standardize": True,
    }
    assert meta["params"]["model__C"] == 1.0
    assert meta["code_version"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", meta["code_version"])
    assert {"python", "numpy", "scikit-learn", "scipy", "skops", "rtscore"} <= set(
        meta["libraries"]
    )
    assert meta["created_at"].endswith("+00:00")
    assert meta["artifact"]["format"] == "skops"
    assert set(metrics) >= {"auc_roc", "average_precision", "card_precision_at_k"}
    assert meta["metrics"] == metrics
    test = meta["test_data"]
    assert test["rows"] == metrics["n_rows"] and test["excluded"]["rows"] > 0
    assert (test["start_ms"], test["end_ms"]) == (plan.test_start_ms, plan.test_end_ms)
    assert any("left out" in line for line in said)

    registry = Registry(test_settings.registry_root)
    profile = registry.profile("fraud", version.version)
    assert profile is not None and profile["rows"] == data["rows"]
    assert profile["feature_names"] == pipeline.feature_names
    loaded = registry.load("fraud", version.version)
    scores = loaded.estimator.predict_proba(expected.X)[:, 1]
    assert np.all((scores >= 0) & (scores <= 1))
