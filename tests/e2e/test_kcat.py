"""A real external client: a JSON event produced with kcat is scored, and its prediction is
read back with kcat."""

from __future__ import annotations

import asyncio
import json
import subprocess

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.registry import Registry
from streams.codecs import RecordCodec
from streams.pipeline import load_pipeline
from streams.topics import ensure_topics
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def register_small_model(settings) -> int:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(pipeline.features)))
    y = (X[:, 0] > 0.5).astype(int)
    registry = Registry(settings.registry_root)
    version = registry.register(
        pipeline.model_name,
        LogisticRegression().fit(X, y),
        {
            "feature_spec_hash": pipeline.feature_spec_hash,
            "feature_names": pipeline.feature_names,
            "metrics": {},
            "training_data": {"source": "synthetic vectors made by this test"},
        },
    )
    registry.set_alias(version.name, "champion", version.version)
    return version.version


def test_kcat_event_in_prediction_out(test_settings, kcat, tmp_path):
    settings = test_settings
    topics = settings.topics
    asyncio.run(ensure_topics(settings))
    version = register_small_model(settings)
    event = {
        "transaction_id": 424242,
        "tx_datetime": "2018-04-07T03:15:00Z",
        "customer_id": 17,
        "terminal_id": 3,
        "tx_amount": 251.5,
    }
    subprocess.run(
        # murmur2_random: the Java client's partitioner, so key 17 lands where rtscore's
        # own producers put customer 17
        [
            kcat,
            "-P",
            "-b",
            settings.kafka_bootstrap,
            "-t",
            topics.events,
            "-k",
            "17",
            "-X",
            "partitioner=murmur2_random",
        ],
        input=json.dumps(event).encode(),
        check=True,
        timeout=30,
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_outputs(1, timeout=90)
    finally:
        worker.stop()
    out = subprocess.run(
        [
            kcat,
            "-C",
            "-b",
            settings.kafka_bootstrap,
            "-t",
            topics.predictions,
            "-o",
            "beginning",
            "-c",
            "1",
            "-e",
            "-f",
            "%k\t%T\t%s",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    key, timestamp, value = out.split(b"\t", 2)
    prediction = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc").decode(value)
    assert key == b"17"
    assert prediction["event_id"] == "424242"
    assert prediction["model_version"] == version
    # amount, Saturday, 03:15 is night, then its customer's windows hold only itself and
    # its terminal's windows (ending 7 days earlier) nothing
    assert prediction["features"][:3] == [251.5, 1.0, 1.0]
    if len(prediction["features"]) == 15:
        assert prediction["features"][3:] == [1.0, 251.5] * 3 + [0.0, 0.0] * 3
    assert int(timestamp) == prediction["event_time"] == 1523070900000
