"""Each window is compared with the version that decided its first prediction, on the real
Redis and a real registry: two versions with different bin edges, rows of another version
arriving later into a window, a second worker, a version without a profile, and two workers
racing to pin one window."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import redis
from sklearn.linear_model import LogisticRegression

from models.profile import build_profile
from models.registry import Registry
from streams.codecs import RecordCodec
from streams.drift.config import DriftConfig
from streams.drift.histogram import aggregate
from streams.drift.metrics import DriftMetrics
from streams.drift.processor import DriftProcessor, Record
from streams.drift.report import build_report
from streams.drift.serve import load_references
from streams.drift.window_state import WindowState
from streams.pipeline import Pipeline, load_pipeline
from streams.settings import Settings

pytestmark = pytest.mark.integration
DAY = 86_400_000
A, B, C, LATER = 0, DAY, 2 * DAY, 3 * DAY  # window starts


@pytest.fixture
def client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    for key in c.scan_iter(match=f"{{{unique_prefix}:*", count=5000):
        c.delete(key)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []

    async def publish(self, outgoing: Sequence[tuple[str, bytes | None, bytes, int]]) -> None:
        self.sent.extend(outgoing)


def _register(
    registry: Registry, pipeline: Pipeline, X: np.ndarray, with_profile: bool = True
) -> int:
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    model = LogisticRegression(max_iter=200).fit(X[:1000], y[:1000])
    scores = model.predict_proba(X)[:, 1]
    profile = build_profile(X, pipeline.feature_names, scores, y) if with_profile else None
    meta = {
        "feature_names": pipeline.feature_names,
        "feature_spec_hash": pipeline.feature_spec_hash,
        "metrics": {},
        "training_data": {"synthetic": True},
    }
    return registry.register(pipeline.model_name, model, meta, profile=profile).version


class Rows:
    """Predictions of one partition, in offset order, remembered by window for the checks."""

    def __init__(self, settings: Settings, partition: int, width: int) -> None:
        self.codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        self.topic = settings.topics.predictions
        self.partition, self.width, self.offset = partition, width, 0
        self.rng = np.random.default_rng(partition)

    def batch(self, window: int, n: int, version: int, kept: dict[int, list[Any]]) -> list[Record]:
        X = self.rng.lognormal(1.0, 0.5, (n, self.width))
        scores = self.rng.uniform(0, 1, n)
        kept.setdefault(window, []).append((X, scores))
        out = []
        for i in range(n):
            t = window + int(i * DAY / n)
            value = self.codec.encode(
                {
                    "prediction_id": f"{self.partition}-{self.offset}",
                    "pipeline": "fraud",
                    "event_id": f"{self.partition}-{self.offset}",
                    "entity_key": str(i),
                    "event_time": t,
                    "model_name": "fraud",
                    "model_version": version,
                    "variant": "champion",
                    "score": float(scores[i]),
                    "features": [float(v) for v in X[i]],
                    "source_partition": self.partition,
                    "source_offset": self.offset,
                    "ingest_time": t,
                    "scored_time": t,
                    "batch_size": n,
                    "batch_latency_ms": 1.0,
                    "shadows": [],
                }
            )
            out.append(Record(self.topic, self.partition, self.offset, value))
            self.offset += 1
        return out


def test_each_window_is_binned_on_and_compared_with_its_first_deciders_profile(
    test_settings: Settings,
    client: redis.Redis,
    unique_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = test_settings
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    width = len(pipeline.feature_names)
    registry = Registry(settings.registry_root)
    train = np.random.default_rng(7).lognormal(1.0, 0.5, (3000, width))
    v1 = _register(registry, pipeline, train)
    v2 = _register(registry, pipeline, 3.0 * train)  # other edges
    v3 = _register(registry, pipeline, train, with_profile=False)
    registry.set_alias(pipeline.model_name, "champion", v1)

    def worker() -> DriftProcessor:
        metrics = DriftMetrics()
        p = DriftProcessor(
            settings,
            pipeline,
            DriftConfig(window_ms=DAY, grace_ms=0),
            load_references(settings, pipeline, metrics),
            WindowState(client, unique_prefix, pipeline.name),
            Recorder(),  # type: ignore[arg-type]
            metrics,
            2,
        )
        p.outcome_decoder = None
        return p

    a, b = worker(), worker()
    # Without label drift a reported window's counts are deleted: keep what it reported.
    reported: dict[int, dict[str, float]] = {}
    for w in (a, b):

        def finish(window: int, forget: int | None, state: WindowState = w.state) -> None:
            reported[window] = state.counts(window)
            WindowState.finish(state, window, forget)

        w.state.finish = finish  # type: ignore[method-assign]
    # a promotion after the start changes nothing: windows follow their rows' deciders
    registry.set_alias(pipeline.model_name, "champion", v2)
    kept: dict[int, list[Any]] = {}
    p0, p1 = Rows(settings, 0, width), Rows(settings, 1, width)
    run = asyncio.run
    run(a.predictions(p0.batch(A, 300, v1, kept)))
    run(a.predictions(p0.batch(B, 300, v2, kept)))
    # on the other worker: v2 rows later into A (pinned to v1), then window C decided by v3,
    # which has no profile, then rows that pass every window
    run(b.predictions([*p1.batch(A, 40, v2, kept), *p1.batch(C, 120, v3, kept)]))
    run(b.predictions(p1.batch(LATER, 5, v2, kept)))
    run(a.predictions(p0.batch(LATER, 5, v2, kept)))
    run(a.close_ready())
    run(b.close_ready())

    codec = RecordCodec.from_file(settings.schemas_dir, "drift_report.avsc")
    sent = [codec.decode(v) for w in (a, b) for _, _, v, _ in w.publisher.sent]  # type: ignore[attr-defined]
    reports = {r["window_start"]: r for r in sent}
    assert len(sent) == len(reports) == 3
    assert {w: (r["model_version"], r["rows"]) for w, r in reports.items()} == {
        A: (v1, 340),
        B: (v2, 300),
        C: (v1, 120),  # the champion at the start: no row lost
    }
    ref1, ref2 = a.references.get("fraud", v1), a.references.get("fraud", v2)
    assert ref1.layout.columns[0].edges.tolist() != ref2.layout.columns[0].edges.tolist()
    config = a.config
    for window, ref in [(A, ref1), (B, ref2), (C, ref1)]:
        X = np.vstack([x for x, _ in kept[window]])
        s = np.concatenate([s for _, s in kept[window]])
        offline = aggregate(ref.layout, X, s)
        online = reported[window]
        assert a.state.counts(window) == {}, "forgotten once reported (no label drift)"
        assert online.keys() == offline.keys(), window
        assert online == pytest.approx(offline), window
        expected = build_report("fraud", ref, config, window, offline)
        got = reports[window]
        assert [f["psi"] for f in got["features"]] == pytest.approx(
            [f["psi"] for f in expected["features"]]
        )
        assert got["score"]["ks_statistic"] == pytest.approx(expected["score"]["ks_statistic"])
        assert got["score"]["psi"] == pytest.approx(expected["score"]["psi"])

    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(f"fraud v{v3}" in m for m in warned) == 1, warned
    fallbacks = b.metrics.registry.get_sample_value(
        "rtscore_drift_reference_fallbacks_total",
        {"pipeline": "fraud", "model_name": "fraud", "model_version": str(v3)},
    )
    assert fallbacks == 1.0
    # reported windows forget their pins, and late rows do not pin them again
    run(a.predictions(p0.batch(A, 3, v2, kept)))
    assert [a.state.pinned(w) for w in (A, B, C)] == [None, None, None]


def test_two_workers_racing_to_pin_a_window_pin_one_version(
    client: redis.Redis, unique_prefix: str
) -> None:
    a = WindowState(client, unique_prefix, "p")
    b = WindowState(client, unique_prefix, "p")
    windows = [w * DAY for w in range(40)]
    barrier = threading.Barrier(2)
    results: dict[str, dict[int, tuple[str, int] | None]] = {}

    def race(name: str, state: WindowState, version: int) -> None:
        barrier.wait()
        results[name] = state.pin(dict.fromkeys(windows, ("m", version)))

    threads = [
        threading.Thread(target=race, args=("a", a, 1)),
        threading.Thread(target=race, args=("b", b, 2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"] == results["b"]
    for w in windows:
        assert results["a"][w] in (("m", 1), ("m", 2))
        assert a.pinned(w) == b.pinned(w) == results["a"][w]
    # a later batch of another version keeps the pin
    assert b.pin({0: ("m", 3)}) == {0: results["a"][0]}
    a.finish(0, None)
    assert b.pin({0: ("m", 3)}) == {0: None}, "a reported window is not pinned again"
    assert a.pinned(0) is None
