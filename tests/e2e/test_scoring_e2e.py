"""End to end on the real broker: simulated events + invalid ones of every kind through the
worker process; every valid event gets exactly one prediction, every invalid one a dead
letter with its bytes kept whole (invariant 1, 6, 7)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import urllib.request
from collections import Counter

import pytest

from models.from_topics import TrainPlan, train_from_topics
from models.registry import Registry
from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.bad_events import BAD_KINDS, bad_records
from streams.demo.publish import publish, publish_simulation
from streams.demo.simulator import SimConfig, simulate, transaction_records
from streams.pipeline import load_pipeline
from streams.scoring import prediction_id
from streams.topics import ensure_topics
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
BAD_PER_KIND = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape_series(port: int) -> dict[str, float]:
    """/metrics as {series: value}; empty while the worker has not opened the port yet."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    series = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def _scrape(port: int, events: int) -> dict[str, float]:
    """/metrics once the counters have caught up with the topics."""
    deadline = time.monotonic() + 10
    while True:
        series = _scrape_series(port)
        if series.get('rtscore_events_in_total{pipeline="fraud"}') == events:
            return series
        if time.monotonic() > deadline:
            return series
        time.sleep(0.2)


def test_every_event_yields_one_prediction_or_one_dead_letter(test_settings, tmp_path):
    settings = test_settings
    topics = settings.topics
    asyncio.run(ensure_topics(settings))
    cfg = dataclasses.replace(SimConfig.light(seed=7), n_days=21)
    sim = simulate(cfg)
    assert len(sim) >= 10_000
    asyncio.run(publish_simulation(settings.kafka_bootstrap, topics, sim, cfg))

    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    plan = TrainPlan.by_days(cfg.start_ms, 7, 7, 7, "logistic_regression")
    version, _ = asyncio.run(train_from_topics(settings, pipeline, plan, progress=lambda _: None))
    Registry(settings.registry_root).set_alias(version.name, "champion", version.version)

    valid = transaction_records(sim)
    bad = bad_records(valid[:2000], BAD_PER_KIND, seed=3)
    raw = [
        {"customer_id": b["customer_id"], "tx_datetime": b["tx_datetime"], "raw": data}
        for b, data, _ in bad
    ]
    asyncio.run(
        publish(
            settings.kafka_bootstrap,
            topics.events,
            raw,
            key_field="customer_id",
            time_field="tx_datetime",
            codec=lambda r: r["raw"],
        )
    )

    port = _free_port()
    settings = settings.model_copy(update={"metrics_port": port})
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        counts = worker.wait_outputs(len(valid) + len(bad))
        metrics = _scrape(port, len(valid) + len(bad))
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert counts == {topics.predictions: len(valid), topics.dlq: len(bad)}
    assert metrics['rtscore_events_in_total{pipeline="fraud"}'] == len(valid) + len(bad)
    assert metrics[
        'rtscore_predictions_out_total{model="fraud",pipeline="fraud",variant="champion",'
        f'version="{version.version}"}}'
    ] == len(valid)
    for reason in BAD_KINDS:
        assert (
            sum(
                v
                for k, v in metrics.items()
                if k.startswith("rtscore_dead_letters_total") and f'reason="{reason}"' in k
            )
            == BAD_PER_KIND
        )

    p_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    d_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")
    predictions = [
        p_codec.decode(r[1])
        for r in asyncio.run(read_range(settings.kafka_bootstrap, topics.predictions)).records
    ]
    letters = [
        d_codec.decode(r[1])
        for r in asyncio.run(read_range(settings.kafka_bootstrap, topics.dlq)).records
    ]

    # exactly one prediction per valid event, none extra, each naming the serving version
    per_event = Counter(p["event_id"] for p in predictions)
    assert per_event == Counter(str(e["transaction_id"]) for e in valid)
    assert {(p["model_name"], p["model_version"], p["variant"]) for p in predictions} == {
        (version.name, version.version, "champion")
    }
    for p in predictions[:500]:
        assert p["prediction_id"] == prediction_id(pipeline.name, p["event_id"])
        assert 0.0 <= p["score"] <= 1.0 and len(p["features"]) == len(pipeline.features)
    # one dead letter per invalid record, bytes kept whole, reason right, source pointing at it
    assert Counter(d["reason"] for d in letters) == dict.fromkeys(BAD_KINDS, BAD_PER_KIND)
    assert Counter(d["original_value"] for d in letters) == Counter(data for _, data, _ in bad)
    sent_reason = {data: reason for _, data, reason in bad}
    events = asyncio.run(read_range(settings.kafka_bootstrap, topics.events)).records
    at = {(partition, offset): value for _k, value, _ts, partition, offset in events}
    for d in letters:
        assert sent_reason[d["original_value"]] == d["reason"]
        assert at[(d["source_partition"], d["source_offset"])] == d["original_value"]
        assert d["stage"] in {"decode", "validate"} and len(d["error"]) > 20
