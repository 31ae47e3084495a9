"""Two drift processors in one consumer group over three partitions, on the real broker and
Redis: one report per window, global counts (every partition, both workers, no row twice after
the rebalance between them), and each injected change alerts in its window: a feature shift,
a burst of dead letters (a schema break), a label rate that triples (labels only)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sklearn.linear_model import LogisticRegression

from models.profile import build_profile
from models.registry import Registry
from streams.codecs import RecordCodec
from streams.drift.config import drift_config
from streams.pipeline import load_pipeline
from streams.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.e2e
DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01 UTC
WINDOWS, PARTITIONS, ROWS = 6, 3, 300  # rows per window and partition
SHIFTED = 3  # TX_AMOUNT doubles in this window
SCHEMA_BREAK = 1  # 40 undecodable input records in this window
LABEL_SHIFT = 1  # a fifth of this window's events are positive (else 5 %)


def _rows(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    X = rng.lognormal(1.0, 0.5, (n, width))
    X[:, 0] = rng.lognormal(3.5, 0.8, n)
    return X


def _register(settings: Settings, rng: np.random.Generator) -> LogisticRegression:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    names = pipeline.feature_names
    X = _rows(rng, 20_000, len(names))
    y = (rng.uniform(0, 1, len(X)) < 0.05).astype(int)
    model = LogisticRegression(max_iter=200).fit(X[:2000], y[:2000])
    registry = Registry(settings.registry_root)
    version = registry.register(
        pipeline.model_name,
        model,
        {
            "feature_names": names,
            "feature_spec_hash": pipeline.feature_spec_hash,
            "metrics": {},
            "training_data": {"synthetic": True},
        },
        profile=build_profile(X, names, model.predict_proba(X)[:, 1], y),
    )
    registry.set_alias(pipeline.model_name, "champion", version.version)
    return model


async def _produce(
    settings: Settings,
    rng: np.random.Generator,
    width: int,
    model: LogisticRegression,
    windows: range,
) -> None:
    """Predictions and outcomes per partition in time order; dead letters of a schema break."""
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    dead_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")
    topics = settings.topics
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for p in range(PARTITIONS):
            offset = windows.start * ROWS
            for w in windows:
                X = _rows(rng, ROWS, width)
                if w == SHIFTED:
                    X[:, 0] *= 2.0
                times = START + w * DAY + np.sort(rng.integers(0, DAY, ROWS))
                scores = model.predict_proba(X)[:, 1]
                positive = rng.uniform(0, 1, ROWS) < (0.2 if w == LABEL_SHIFT else 0.05)
                for x, t, score in zip(X, times, scores, strict=True):
                    record = {
                        "prediction_id": f"{p}-{offset}",
                        "pipeline": "fraud",
                        "event_id": f"{p}-{offset}",
                        "entity_key": str(p),
                        "event_time": int(t),
                        "model_name": "fraud",
                        "model_version": 1,
                        "variant": "champion",
                        "score": float(score),
                        "features": [float(v) for v in x],
                        "source_partition": p,
                        "source_offset": offset,
                        "ingest_time": int(t),
                        "scored_time": int(t),
                        "batch_size": 1,
                        "batch_latency_ms": 1.0,
                        "shadows": [],
                    }
                    await producer.send(topics.predictions, codec.encode(record), partition=p)
                    offset += 1
                for i, t in enumerate(times[positive]):
                    outcome = {
                        "transaction_id": p * 1_000_000 + w * 1000 + i,
                        "outcome_datetime": int(t) + DAY // 2,
                        "tx_datetime": int(t),
                        "customer_id": p,
                        "terminal_id": 1,
                        "is_fraud": True,
                        "scenario": 1,
                    }
                    await producer.send(topics.outcomes, json.dumps(outcome).encode(), partition=p)
        if SCHEMA_BREAK in windows:
            t = START + SCHEMA_BREAK * DAY + DAY // 2
            # this pipeline's events, another pipeline's, and outcomes: only the first count
            for i, (pipeline, source) in enumerate(
                [("fraud", topics.events)] * 40
                + [("other", topics.events)] * 10
                + [("fraud", topics.outcomes)] * 10
            ):
                dead = {
                    "original_value": b"\x00garbage",
                    "original_key": None,
                    "source_topic": source,
                    "source_partition": i % PARTITIONS,
                    "source_offset": i,
                    "source_timestamp": t + i,
                    "stage": "decode",
                    "reason": "undecodable",
                    "error": "not a Transaction",
                    "pipeline": pipeline,
                    "dead_lettered_time": t,
                }
                await producer.send(topics.dlq, dead_codec.encode(dead), partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()


async def _members(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        group = f"{settings.topic_prefix}-fraud-drift"
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return len(described[0].groups[0][5]) if described and described[0].groups else 0


async def _reports(settings: Settings, want: int, timeout: float) -> list[dict]:
    codec = RecordCodec.from_file(settings.schemas_dir, "drift_report.avsc")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    tp = TopicPartition(settings.topics.drift, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    reports: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(reports) < want:
            batch = await consumer.getmany(tp, timeout_ms=500)
            reports += [codec.decode(m.value) for m in batch.get(tp, [])]
        # anything more than one report per window would arrive now
        batch = await consumer.getmany(tp, timeout_ms=3000)
        reports += [codec.decode(m.value) for m in batch.get(tp, [])]
    finally:
        await consumer.stop()
    return reports


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env()}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "-v", "drift", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_two_processors_report_each_window_once_with_global_counts(
    test_settings: Settings, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    # one-day windows; the report of day d carries the labels of day d - 1
    pipeline_file = tmp_path / "fraud.toml"
    before, _, drift = test_settings.pipeline.read_text().partition("[drift]\n")
    drift = re.sub(r'(?m)^window = "\w+"', 'window = "1d"', drift, count=1)
    drift = re.sub(r'(?m)^label_lag = "\w+"', 'label_lag = "1d"', drift, count=1)
    pipeline_file.write_text(before + "[drift]\n" + drift)
    config = drift_config(load_pipeline(pipeline_file, test_settings.schemas_dir))
    assert (config.window_ms, config.label_lag_windows) == (DAY, 1)
    settings = test_settings.model_copy(update={"pipeline": pipeline_file})
    width = len(load_pipeline(settings.pipeline, settings.schemas_dir).feature_names)
    model = _register(settings, rng)
    asyncio.run(ensure_topics(settings))
    asyncio.run(_produce(settings, rng, width, model, range(0, 2)))

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    procs = [_start(settings, tmp_path / "drift-a.log")]
    try:
        # the second joins once the first is counting: the rebalance hands it partitions
        # whose last batches may be applied but not committed, to be read again
        deadline = time.monotonic() + 60
        pattern = f"{{{settings.namespace}:drift:*:offsets"
        while not list(client.scan_iter(match=pattern, count=5000)):
            assert time.monotonic() < deadline, (tmp_path / "drift-a.log").read_text()[-3000:]
            assert procs[0].poll() is None, (tmp_path / "drift-a.log").read_text()[-3000:]
            time.sleep(0.2)
        procs.append(_start(settings, tmp_path / "drift-b.log"))
        while asyncio.run(_members(settings)) < 2:
            assert time.monotonic() < deadline, (tmp_path / "drift-b.log").read_text()[-3000:]
            time.sleep(0.5)
        # the rest of the stream is split between the two
        asyncio.run(_produce(settings, rng, width, model, range(2, WINDOWS)))
        reports = asyncio.run(_reports(settings, WINDOWS - 1, timeout=90))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for key in client.scan_iter(match=f"{{{settings.namespace}:drift:*", count=5000):
            client.delete(key)

    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("drift-*.log")))
    starts = [r["window_start"] for r in reports]
    # the last window stays open: no partition has passed its end
    assert starts == [START + w * DAY for w in range(WINDOWS - 1)], logs
    assert [r["rows"] for r in reports] == [PARTITIONS * ROWS] * (WINDOWS - 1), logs
    drifted = {(r["window_start"] - START) // DAY: set(r["drifted"]) for r in reports}
    # the score is computed from the amount: it may drift with it
    assert {"TX_AMOUNT"} <= drifted.pop(SHIFTED) <= {"TX_AMOUNT", "__score__"}, logs
    assert drifted == {
        0: set(),
        SCHEMA_BREAK: {"dead_letters:undecodable"},
        LABEL_SHIFT + 1: {"__label__"},
        4: set(),
    }, logs
    by_window = {(r["window_start"] - START) // DAY: r for r in reports}
    assert by_window[SCHEMA_BREAK]["status"] == "alert"  # a schema break alerts the pipeline
    assert by_window[SCHEMA_BREAK]["dead_letters"][0]["count"] == 40
    labels = by_window[LABEL_SHIFT + 1]["labels"]
    assert labels["window_start"] == START + LABEL_SHIFT * DAY
    assert labels["rows"] == PARTITIONS * ROWS and labels["status"] == "alert"
    assert by_window[0]["labels"] is None  # no earlier window
    amount = next(f for f in by_window[SHIFTED]["features"] if f["name"] == "TX_AMOUNT")
    assert amount["status"] == "alert"
