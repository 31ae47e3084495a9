"""A backtest reproduces production (invariant 5) and touches nothing of it: after a live run
of the real worker, backtesting the serving version over a range gives its online scores
event by event, and every Redis key and topic offset of the prefix is left as it was."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from models.registry import Registry
from models.training import fit
from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.pipeline import load_pipeline
from streams.redis_keys import namespace_keys
from streams.topics import ensure_topics
from tests.e2e.test_features_e2e import _predictions, _publish_events, _start_with_outcomes

pytestmark = pytest.mark.e2e


def _port() -> int:
    """A free port below the ephemeral range (and away from the CI infra's ports)."""
    while True:
        port = random.randint(21000, 25999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if all(p not in (port, port + 1, port + 2) for p in (26379, 29092)):
            return port


def _redis_dump(client: redis.Redis, namespace: str) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in namespace_keys(client, namespace)}


async def _end_offsets(bootstrap: str, prefix: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{prefix}.")]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): off for tp, off in ends.items()}


def _register_trained_model(settings, pipeline, events, outcomes, sim, until_ms) -> int:
    """A model fitted on the first weeks (so its scores spread over (0, 1))."""
    result = offline_features(pipeline, events, outcomes)
    times = np.array([e["tx_datetime"] for e in events])
    train = times < until_ms
    model = fit(result.X[train], sim.is_fraud[train].astype(int))
    registry = Registry(settings.registry_root)
    version = registry.register(
        pipeline.model_name,
        model,
        {
            "feature_spec_hash": pipeline.feature_spec_hash,
            "feature_names": pipeline.feature_names,
            "metrics": {},
            "training_data": {"source": "the simulation's first weeks, by this test"},
        },
    )
    registry.set_alias(version.name, "champion", version.version)
    return version.version


def test_backtest_equals_online_scores_and_changes_nothing(test_settings, redis_url, tmp_path):
    # Three partitions of a sparse simulation (~100 events a day per partition): the worker
    # holds partitions in step (streams/pacing.py), so its terminal windows are exact.
    settings = test_settings.model_copy(
        update={"metrics_port": _port(), "batch_max": 200, "topic_partitions": 3}
    )
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    asyncio.run(ensure_topics(settings))
    cfg = dataclasses.replace(SimConfig.light(seed=3, n_customers=150, n_terminals=300), n_days=45)
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    day0 = cfg.start_ms
    version = _register_trained_model(
        settings, pipeline, events, outcomes, sim, day0 + 20 * MS_PER_DAY
    )

    worker = _start_with_outcomes(settings, outcomes, tmp_path, "worker")
    try:
        _publish_events(settings, events)
        worker.wait_outputs(len(events), timeout=180)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    client = redis.Redis.from_url(redis_url)
    redis_before = _redis_dump(client, settings.namespace)
    offsets_before = asyncio.run(_end_offsets(settings.kafka_bootstrap, settings.topic_prefix))
    assert redis_before and offsets_before[(settings.topics.predictions, 0)] > 0

    # The range starts 40 days in: its 37-day warm-up leaves the first 3 days unread.
    start, end = day0 + 40 * MS_PER_DAY, day0 + 45 * MS_PER_DAY
    assert start - pipeline.lookback_ms > day0
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "backtest", "--from", str(start), "--to",
         str(end), "--models", "champion", "--out", str(out), "--scores"],
        env={**os.environ, **settings.as_env()}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout

    # Isolation: byte for byte the same keys and values, and the same end offsets.
    assert _redis_dump(client, settings.namespace) == redis_before
    assert asyncio.run(_end_offsets(settings.kafka_bootstrap, settings.topic_prefix)) == (
        offsets_before
    )

    # Invariant 5: the first online prediction of every event in range, by event id.
    online: dict[str, tuple[int, float]] = {}
    for p in _predictions(settings):
        if start <= p["event_time"] < end:
            assert p["model_version"] == version
            seen = online.get(p["event_id"])
            if seen is None or p["source_offset"] < seen[0]:
                online[p["event_id"]] = (p["source_offset"], p["score"])
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    column = f"v{version} (champion)"
    offline = {r["event_id"]: float(r[column]) for r in rows}
    assert len(offline) == len(rows) > 1000
    assert offline.keys() == online.keys()
    ids = sorted(offline)
    a = np.array([offline[i] for i in ids])
    b = np.array([online[i][1] for i in ids])
    worst = int(np.argmax(np.abs(a - b)))
    assert np.abs(a - b).max() <= 1e-9, (
        f"{int(np.count_nonzero(np.abs(a - b) > 1e-9))} of {len(a)} scores differ; worst: "
        f"event {ids[worst]} backtest {a[worst]} online {b[worst]} ({settings.topic_prefix})"
    )
    # the scores are spread out, not saturated at 0 or 1, so the comparison can fail
    assert len(np.unique(a)) > len(a) // 2 and np.std(np.log(a / (1 - a))) > 0.5

    report = json.loads((out / "report.json").read_text())
    assert report["rows"]["events"] == len(rows)
    assert report["rows"]["events_read_with_warm_up"] < len(events)  # the first days unread
    assert report["models"][0]["version"] == version
    overall = report["metrics"]["models"][column]["overall"]
    assert overall["rows"] == len(rows) and overall["positives"] > 0
    assert 0.5 < overall["auc_roc"] <= 1.0
    assert (out / "report.html").read_text().count("<svg") >= 6
