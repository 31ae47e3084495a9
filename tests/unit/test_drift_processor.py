"""The drift processor's batch logic without a network: an in-memory window state with the
Redis one's semantics, a publisher that records. Reports once per window, redelivery adds
nothing, Redis outages pause, and a failure never escapes a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from models.profile import build_profile
from streams.codecs import RecordCodec
from streams.drift.config import DriftConfig
from streams.drift.histogram import Layout, aggregate, merge
from streams.drift.metrics import DriftMetrics
from streams.drift.processor import DriftProcessor, Record
from streams.drift.references import Loader, References
from streams.drift.report import Reference
from streams.drift.window_state import NEVER, Aggregate, Item, low_watermark
from streams.errors import ConfigError
from streams.pipeline import load_pipeline
from streams.settings import Settings
from streams.topics import EmptyPartitions
from tests import drift_cases as dc

DAY = dc.DAY_MS


class MemoryState:
    """WindowState's contract in a dict: per-window offsets, watermarks, claims, done marks."""

    def __init__(self) -> None:
        self.counts_: dict[tuple[int, bool], dict[str, float]] = {}
        self.forgotten: dict[tuple[int, bool], dict[str, float]] = {}  # what finish dropped
        self.offsets: dict[tuple[int, bool, str], int] = {}
        self.done: set[tuple[int, bool]] = set()
        self.claimed: set[int] = set()
        self.marks: dict[bool, dict[int, int]] = {False: {}, True: {}}
        self.open: set[int] = set()
        self.pins: dict[int, tuple[str, int]] = {}
        self.fail_next = 0

    def pin(self, candidates: Mapping[int, tuple[str, int]]) -> dict[int, tuple[str, int] | None]:
        out: dict[int, tuple[str, int] | None] = {}
        for window, version in candidates.items():
            if (window, False) in self.done:
                out[window] = None
            else:
                out[window] = self.pins.setdefault(window, version)
        return out

    def pinned(self, window: int) -> tuple[str, int] | None:
        return self.pins.get(window)

    def apply(
        self, topic: str, items: Sequence[Item], aggregate: Aggregate, labels: bool = False
    ) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise redis.ConnectionError("Redis is restarting")
        late = 0
        for window in sorted({i.window for i in items}):
            rows = [i for i in items if i.window == window]
            if (window, labels) in self.done:
                late += len(rows)
                continue
            fresh = []
            for r in rows:
                key = (window, labels, f"{topic}:{r.partition}")
                if r.offset > self.offsets.get(key, -1):
                    self.offsets[key] = r.offset
                    fresh.append(r.index)
            if fresh:
                old = self.counts_.get((window, labels), {})
                self.counts_[(window, labels)] = merge(old, aggregate(fresh))
            if not labels:
                self.open.add(window)
        return late

    def raise_watermarks(self, times: Mapping[int, int], outcomes: bool = False) -> None:
        marks = self.marks[outcomes]
        for p, t in times.items():
            marks[p] = max(marks.get(p, t), t)

    def closable(
        self,
        partitions: int,
        window_ms: int,
        grace_ms: int,
        outcome_partitions: int = 0,
        empty: Collection[int] = (),
        outcome_empty: Collection[int] = (),
    ) -> list[int]:
        low = low_watermark(self.marks[False], partitions, empty)
        if outcome_partitions:
            low = min(low, low_watermark(self.marks[True], outcome_partitions, outcome_empty))
        if low == NEVER:
            return []
        return sorted(w for w in self.open if w + window_ms + grace_ms <= low)

    def claim(self, window: int) -> bool:
        if window in self.claimed or (window, False) in self.done:
            return False
        self.claimed.add(window)
        return True

    def counts(self, window: int, labels: bool = False) -> dict[str, float]:
        return dict(self.counts_.get((window, labels), {}))

    def finish(self, window: int, label_window: int | None) -> None:
        self.done.add((window, False))
        self.pins.pop(window, None)
        self.open.discard(window)
        if label_window is not None:
            self.done.add((label_window, True))
            for labels in (False, True):  # as WindowState.finish deletes the keys
                gone = self.counts_.pop((label_window, labels), None)
                if gone is not None:
                    self.forgotten[(label_window, labels)] = gone


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []

    async def publish(self, outgoing: Sequence[tuple[str, bytes | None, bytes, int]]) -> None:
        self.sent.extend(outgoing)


@pytest.fixture
def processor(tmp_path: Path) -> DriftProcessor:
    settings = Settings(home=tmp_path, metrics_port=0, topic_prefix="t")
    pipeline = load_pipeline(dc.REPO / "streams" / "demo" / "fraud.toml", settings.schemas_dir)
    ref = dc.reference_for(pipeline.feature_names)
    config = DriftConfig(window_ms=DAY, grace_ms=0, label_lag_windows=1)
    return DriftProcessor(
        settings,
        pipeline,
        config,
        References(ref, versions_of(pipeline.feature_names)),
        MemoryState(),
        Recorder(),
        DriftMetrics(),
        2,  # type: ignore[arg-type]
    )


def versions_of(names: list[str]) -> Loader:
    """The registry of these tests: v2's profile has other bin edges than v1's (its training
    values were 3x larger), v3 has no profile."""

    def load(name: str, version: int) -> Reference:
        if version == 2:
            X, scores, labels = dc.rows_for(np.random.default_rng(2), 5_000, len(names))
            profile = build_profile(3.0 * X, names, scores, labels)
            return Reference(name, 2, profile, Layout.from_profile(profile, names))
        raise ConfigError(f"{name} v{version} has no reference profile to compare with")

    return load


def rows_of(p: DriftProcessor, partition: int, day: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    X, scores, _ = dc.rows_for(
        np.random.default_rng(day * 10 + partition), n, len(p.pipeline.feature_names)
    )
    return X, scores


def predictions(
    p: DriftProcessor, partition: int, day: int, n: int, first_offset: int, version: int = 1
) -> list[Record]:
    codec = RecordCodec.from_file(Settings().schemas_dir, "prediction.avsc")
    X, scores = rows_of(p, partition, day, n)
    out = []
    for i in range(n):
        t = day * DAY + int(i * DAY / n)
        record = dc.prediction(t, X[i], float(scores[i]), partition, first_offset + i)
        value = codec.encode({**record, "model_version": version})
        out.append(Record(p.topics.predictions, partition, first_offset + i, value))
    return out


def reports(p: DriftProcessor) -> list[dict[str, Any]]:
    codec = RecordCodec.from_file(Settings().schemas_dir, "drift_report.avsc")
    return [codec.decode(v) for _, _, v, _ in p.publisher.sent]  # type: ignore[attr-defined]


def test_a_window_is_reported_once_when_both_partitions_passed_it(
    processor: DriftProcessor,
) -> None:
    processor.outcome_decoder = None  # no label gating here
    run = asyncio.run
    run(processor.predictions(predictions(processor, 0, 0, 300, 0)))
    run(processor.predictions(predictions(processor, 0, 1, 300, 300)))
    assert reports(processor) == [], "partition 1 has not been seen"
    run(processor.predictions(predictions(processor, 1, 0, 300, 0)))
    # redelivered after a crash: the same offsets again
    run(processor.predictions(predictions(processor, 1, 0, 300, 0)))
    run(processor.predictions(predictions(processor, 1, 1, 300, 300)))
    run(processor.close_ready())
    sent = reports(processor)
    assert [r["window_start"] for r in sent] == [0]
    assert sent[0]["rows"] == 600
    assert processor.publisher.sent[0][1] == b"fraud"  # type: ignore[attr-defined]
    # Without label drift no later window reads its rows: its counts are forgotten (they
    # stayed in Redis for good before).
    assert processor.state.counts(0) == {}
    assert processor.state.counts(DAY) != {}, "window 1 is not reported yet"


def test_a_redis_outage_pauses_the_batch_and_nothing_is_lost(processor: DriftProcessor) -> None:
    processor.outcome_decoder = None
    processor.state.fail_next = 2  # type: ignore[attr-defined]
    asyncio.run(processor.predictions(predictions(processor, 0, 0, 100, 0)))
    assert processor.state.counts(0)["rows"] == 100  # type: ignore[attr-defined]


def test_unreadable_records_are_skipped_and_a_failing_close_does_not_raise(
    processor: DriftProcessor,
) -> None:
    processor.outcome_decoder = None
    good = predictions(processor, 0, 0, 10, 0)
    bad = Record(processor.topics.predictions, 0, 10, b"\x00not avro")
    asyncio.run(processor.predictions([*good, bad]))
    assert processor.state.counts(0)["rows"] == 10  # type: ignore[attr-defined]

    def boom(*_: object) -> list[int]:
        raise RuntimeError("a bug")

    processor.state.closable = boom  # type: ignore[method-assign]
    asyncio.run(processor.close_ready())  # logged, not raised


def test_a_window_keeps_the_version_that_decided_its_first_prediction(
    processor: DriftProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    processor.outcome_decoder = None
    run = asyncio.run
    run(processor.predictions(predictions(processor, 0, 0, 300, 0, version=1)))
    run(processor.predictions(predictions(processor, 0, 1, 300, 300, version=2)))
    # v2 rows into window 0 (pinned to v1) in the same batch as the first rows of window 2,
    # decided by v3, which has no profile: compared with v1, the champion at start
    late_v2 = predictions(processor, 1, 0, 200, 0, version=2)
    run(processor.predictions([*late_v2, *predictions(processor, 1, 2, 100, 200, version=3)]))
    run(processor.predictions(predictions(processor, 1, 1, 100, 300, version=1)))
    assert sum("fraud v3" in r.getMessage() for r in caplog.records) == 1
    run(processor.predictions(predictions(processor, 0, 3, 10, 600, version=2)))
    run(processor.predictions(predictions(processor, 1, 3, 10, 400, version=2)))
    run(processor.close_ready())

    v1, v2 = processor.references.champion, processor.references.get("fraud", 2)
    assert v1.layout.columns[0].edges.tolist() != v2.layout.columns[0].edges.tolist()
    sent = {r["window_start"] // DAY: r for r in reports(processor)}
    assert {d: (r["model_version"], r["rows"]) for d, r in sent.items()} == {
        0: (1, 500),
        1: (2, 400),
        2: (1, 100),
    }
    for day, ref, parts in [(0, v1, [(0, 300), (1, 200)]), (1, v2, [(0, 300), (1, 100)])]:
        X = np.vstack([rows_of(processor, part, day, n)[0] for part, n in parts])
        s = np.concatenate([rows_of(processor, part, day, n)[1] for part, n in parts])
        offline = aggregate(ref.layout, X, s)
        # reported, so forgotten (no label drift here): the counts it was reported with
        online = processor.state.forgotten[(day * DAY, False)]  # type: ignore[attr-defined]
        assert online.keys() == offline.keys()
        assert online == pytest.approx(offline)


def known_empty(processor: DriftProcessor, partitions: set[int]) -> None:
    """The processor learns from a (fake) broker read which prediction partitions are empty."""

    async def read(_: str, names: list[str]) -> dict[str, set[int]]:
        return {name: set(partitions) for name in names}

    processor.empty = EmptyPartitions(
        "unused:9092", [processor.topics.predictions], read=read, idle_s=0
    )
    asyncio.run(processor.refresh_empty())


@pytest.mark.parametrize("empty", [set(), {2}])
def test_an_empty_partition_does_not_hold_windows_open(
    processor: DriftProcessor, empty: set[int]
) -> None:
    """Predictions only ever reach partitions 0 and 1 of 3: partition 2, known empty, is left
    out of the watermark and windows close; not known empty, it holds every window open."""
    processor.outcome_decoder = None
    processor.partitions = 3
    known_empty(processor, empty)
    run = asyncio.run
    for part in (0, 1):
        run(processor.predictions(predictions(processor, part, 0, 100, 0)))
        run(processor.predictions(predictions(processor, part, 1, 100, 100)))
    run(processor.close_ready())
    if empty:
        assert [r["window_start"] for r in reports(processor)] == [0]
        assert reports(processor)[0]["rows"] == 200
    else:
        assert reports(processor) == [], "partition 2 has no watermark: nothing closes"


def test_a_partition_counts_again_from_its_first_record(processor: DriftProcessor) -> None:
    """Known empty, then a record arrives there before the next read: from that record on,
    its watermark holds the windows it has not passed."""
    processor.outcome_decoder = None
    processor.partitions = 3
    known_empty(processor, {2})
    run = asyncio.run
    for part in (0, 1):
        run(processor.predictions(predictions(processor, part, 0, 100, 0)))
        run(processor.predictions(predictions(processor, part, 2, 100, 100)))
    assert [r["window_start"] // DAY for r in reports(processor)] == [0]
    run(processor.predictions(predictions(processor, 2, 1, 10, 0)))
    run(processor.close_ready())
    # partitions 0 and 1 passed day 1, partition 2 has not: it counts again
    assert [r["window_start"] // DAY for r in reports(processor)] == [0]
    assert processor.empty.empty(processor.topics.predictions) == frozenset()
    run(processor.predictions(predictions(processor, 2, 3, 10, 10)))
    assert [r["window_start"] // DAY for r in reports(processor)] == [
        0,
        1,
    ]  # 0 and 1 have not passed day 2
