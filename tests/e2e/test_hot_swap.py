"""Hot swap on the real broker and Redis: while events flow into two running workers, refused
promotions (feature-spec mismatch, tampered artifact) change nothing, `rtscore model promote`
switches both to v2 and `rtscore model rollback` back to v1 within 5 s each, without a
restart, and every event gets exactly one prediction naming the version that scored it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.registry import Registry
from models.topic_reader import read_range
from streams import model_events
from streams.cli import _parser
from streams.codecs import RecordCodec
from streams.demo.publish import json_bytes
from streams.errors import RtscoreError
from streams.pipeline import load_pipeline
from streams.settings import Settings
from streams.topics import ensure_topics, record_counts
from tests.e2e.test_scoring_e2e import _free_port, _scrape_series
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e

SWAP_LIMIT_MS = 5000
START_MS = 1_522_540_800_000  # 2018-04-01


def cli(settings: Settings, *argv: str) -> int:
    """`rtscore ARGV…` through the CLI's own parser and handler, with these settings."""
    args = _parser().parse_args(list(argv))
    return int(args.handler(settings, args))


def register(settings: Settings, seed: int, spec_hash: str | None = None) -> int:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    # vectors in the ranges the test's events produce, so scores spread over (0, 1)
    scale = np.array(
        [260.0 if "AMOUNT" in n else 40.0 if "NB_TX" in n else 1.0 for n in pipeline.feature_names]
    )
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(400, len(scale))) * scale
    y = (X[:, 0] + rng.normal(scale=30, size=len(X)) > 60 + 40 * seed).astype(int)
    version = Registry(settings.registry_root).register(
        pipeline.model_name,
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
        {
            "feature_spec_hash": spec_hash or pipeline.feature_spec_hash,
            "feature_names": pipeline.feature_names,
            "metrics": {},
            "training_data": {"source": f"synthetic vectors, seed {seed}"},
        },
    )
    return version.version


def tamper(version_dir: Path) -> None:
    """Flip one byte in the middle of the version's artifact, whatever its file is named."""
    (artifact,) = [
        p for p in version_dir.iterdir() if p.is_file() and p.suffix not in (".json", ".lock")
    ]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


class Feed:
    """Events produced continuously from a thread, ~rate per second, until stopped."""

    def __init__(self, settings: Settings, rate: float = 250.0) -> None:
        self.settings = settings
        self.rate = rate
        self.sent = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # reported by finish()
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            ids = itertools.count()
            chunk = max(1, int(self.rate / 20))
            while not self.stop.is_set():
                futures = []
                for _ in range(chunk):
                    i = next(ids)
                    event = {
                        "transaction_id": i,
                        "tx_datetime": START_MS + i * 1000,
                        "customer_id": i % 301,
                        "terminal_id": i % 53,
                        "tx_amount": float(5 + (i * 7919) % 200),
                    }
                    futures.append(
                        await producer.send(
                            self.settings.topics.events,
                            json_bytes(event),
                            key=str(event["customer_id"]).encode(),
                            timestamp_ms=event["tx_datetime"],
                        )
                    )
                await asyncio.gather(*futures)
                self.sent += len(futures)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.error is None, f"the feed failed: {self.error!r}"
        return self.sent


def predictions(settings: Settings, codec: RecordCodec) -> list[dict]:
    topic = settings.topics.predictions
    return [
        codec.decode(r[1]) for r in asyncio.run(read_range(settings.kafka_bootstrap, topic)).records
    ]


def wait_for(
    settings: Settings, codec: RecordCodec, worker: WorkerProcess, done, timeout: float = 30.0
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        seen = predictions(settings, codec)
        if done(seen):
            return seen
        assert worker.proc.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"timed out with {len(seen)} predictions\n" + (
            worker.log_tail()
        )
        time.sleep(0.3)


def published(settings: Settings) -> tuple[int, int]:
    """(records on the model-events topic, time of the latest state of the model)."""
    topic = settings.topics.model_events
    count = asyncio.run(record_counts(settings.kafka_bootstrap, [topic]))[topic]
    codec = model_events.codec(settings.schemas_dir)
    state, _ = asyncio.run(
        model_events.read_latest(settings.kafka_bootstrap, topic, "fraud", codec)
    )
    return count, (state.time_ms if state else 0)


def wait_for_group(
    settings: Settings, members: int, workers: list[WorkerProcess], timeout: float = 60.0
) -> None:
    """Until the workers' consumer group is stable with ``members`` members."""
    group = f"{settings.topic_prefix}-fraud-scoring"

    async def describe() -> tuple[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([group])
            _error, _group, state, _type, _protocol, group_members, *_ = response.groups[0]
            return state, len(group_members)
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while asyncio.run(describe()) != ("Stable", members):
        for w in workers:
            assert w.proc.poll() is None, w.log_tail()
        assert time.monotonic() < deadline, "the workers did not form one group"
        time.sleep(0.5)


def runs(versions: list[int]) -> list[int]:
    return [v for v, _ in itertools.groupby(versions)]


def test_promote_and_rollback_swap_running_workers_within_5s(test_settings, tmp_path):
    settings = test_settings.model_copy(update={"batch_max": 200})
    asyncio.run(ensure_topics(settings))
    registry = Registry(settings.registry_root)
    v1 = register(settings, seed=1)
    registry.set_alias("fraud", "champion", v1)
    v2 = register(settings, seed=2)
    other_spec = register(settings, seed=3, spec_hash="0" * 64)
    tampered = register(settings, seed=4)
    tamper(registry.get("fraud", tampered).path)
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")

    # Two workers in the group, each with its own partitions; the feed starts once both have
    # joined, so no rebalance moves a partition while events flow.
    ports = [_free_port(), _free_port()]
    workers = [
        WorkerProcess(settings.model_copy(update={"metrics_port": port}), tmp_path / f"w{port}.log")
        for port in ports
    ]
    worker = workers[0]
    wait_for_group(settings, members=2, workers=workers)
    feed = Feed(settings)
    try:
        wait_for(settings, codec, worker, lambda seen: len(seen) >= 300, timeout=60)

        # refused: nothing written to the registry, nothing published, v1 keeps serving
        for version, why in ((other_spec, "trained on features"), (tampered, "tampered")):
            with pytest.raises(RtscoreError, match=why):
                cli(settings, "model", "promote", "fraud", str(version))
        assert registry.aliases("fraud") == {"champion": v1}
        assert published(settings) == (0, 0)
        time.sleep(1.0)

        assert cli(settings, "model", "promote", "fraud", str(v2)) == 0
        _, promoted_ms = published(settings)
        wait_for(settings, codec, worker, lambda s: sum(p["model_version"] == v2 for p in s) > 300)

        assert cli(settings, "model", "rollback", "fraud") == 0
        count, rolled_back_ms = published(settings)
        assert count == 2 and registry.aliases("fraud")["champion"] == v1

        def back_on_v1(seen: list[dict]) -> bool:
            late = [p for p in seen if p["scored_time"] > rolled_back_ms]
            return sum(p["model_version"] == v1 for p in late) > 300

        wait_for(settings, codec, worker, back_on_v1)
        sent = feed.finish()
        worker.wait_outputs(sent, timeout=60)
        # both workers scored: each owned partitions through the swaps
        scored = [
            _scrape_series(port).get('rtscore_events_in_total{pipeline="fraud"}', 0)
            for port in ports
        ]
        assert all(n > 0 for n in scored), scored
    finally:
        feed.stop.set()
        for w in workers:
            assert w.stop() == 0, w.log_tail()
    # each worker swapped on its own, from the topic
    for w in workers:
        log = w.log_path.read_text()
        assert "now serving fraud: champion=v2 (promote" in log, log[-3000:]
        assert "now serving fraud: champion=v1 (rollback" in log, log[-3000:]

    seen = predictions(settings, codec)
    # exactly one prediction per event: none lost, none duplicated by the swaps
    assert len(seen) == sent
    assert len({p["prediction_id"] for p in seen}) == sent
    assert Counter(p["event_id"] for p in seen) == Counter(str(i) for i in range(sent))
    assert {(p["variant"], len(p["shadows"])) for p in seen} == {("champion", 0)}

    # one switch point per partition and per change, in source-offset order: v1, v2, v1
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for p in seen:
        by_partition[p["source_partition"]].append(p)
    first_v2, first_back = [], []
    for partition, items in sorted(by_partition.items()):
        items.sort(key=lambda p: p["source_offset"])
        versions = [p["model_version"] for p in items]
        assert runs(versions) == [v1, v2, v1], f"partition {partition}: {runs(versions)}"
        switch = versions.index(v2)
        back = switch + versions[switch:].index(v1)
        first_v2.append(items[switch]["scored_time"])
        first_back.append(items[back]["scored_time"])
        # the scores are the serving version's own (each prediction names who scored it)
        for p in (items[switch - 1], items[switch], items[back]):
            estimator = registry.load("fraud", p["model_version"]).estimator
            expected = estimator.predict_proba(np.asarray([p["features"]]))[0, 1]
            assert p["score"] == pytest.approx(expected, abs=1e-12)

    promote_ms = min(first_v2) - promoted_ms
    rollback_ms = min(first_back) - rolled_back_ms
    print(f"swap latency: promote {promote_ms} ms, rollback {rollback_ms} ms")
    assert 0 <= promote_ms <= SWAP_LIMIT_MS
    assert 0 <= rollback_ms <= SWAP_LIMIT_MS
    # every partition switched within the limit too, not only the first one
    assert max(first_v2) - promoted_ms <= SWAP_LIMIT_MS
    assert max(first_back) - rolled_back_ms <= SWAP_LIMIT_MS
