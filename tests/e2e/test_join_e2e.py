"""The outcome join on real Kafka + Redis, run as `rtscore join`: outcomes before and after
their predictions, out of order, duplicated, never, orphaned; every prediction gets exactly one
labeled record, every orphan is dead-lettered, the counts reconcile, the performance windows
equal sklearn's on the labeled records read back; the same after a SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict

import numpy as np
import pytest
import redis
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from models.metrics import card_precision_at_k
from streams.join.serve import join_state
from streams.pipeline import load_pipeline
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.e2e.join_cases import (
    DAY,
    JoinProcess,
    Workload,
    build_workload,
    check_exactly_once,
    counts,
    produce_workload,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.e2e


def reconcile(settings: Settings, w: Workload) -> dict[str, int]:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    state = join_state(settings, pipeline)
    done = state.counts()
    n_preds = len(w.expect_status)
    expired = sum(1 for s, _ in w.expect_status.values() if s == "expired")
    assert done["predictions"] == n_preds
    assert done["duplicate_prediction"] == len(w.predictions) - n_preds
    assert done["matched"] == n_preds - expired and done["expired"] == expired
    # Every outcome record is accounted for: it labeled a prediction, was a duplicate, or
    # went to the dead-letter topic with its reason.
    assert done["outcomes"] == w.n_outcome_records
    assert done["duplicate_outcome"] == w.duplicates
    assert (
        done["outcome_used"]
        + done["duplicate_outcome"]
        + done["orphan_outcome"]
        + done.get("outcome_after_window", 0)
        == w.n_outcome_records
    )
    assert done["orphan_outcome"] == w.expect_dead["orphan_outcome"]
    assert state.closable_windows(100 * DAY) == [40 * DAY]  # only the sentinels' is open
    return done


def check_performance(settings: Settings, labeled: list[dict]) -> int:
    """Each report equals sklearn on the labeled records of its window and scorer."""
    reports = read_topic(settings, settings.topics.performance, "performance_report.avsc")
    groups: dict[tuple, list[tuple[int, float, str, int]]] = defaultdict(list)
    for rec in labeled:
        start = rec["event_time"] - rec["event_time"] % DAY
        scorers = [
            (rec["model_name"], rec["model_version"], rec["variant"], "decision", rec["score"])
        ]
        for s in rec["shadows"]:
            scorers.append(
                (s["model_name"], s["model_version"], s["variant"], "shadow", s["score"])
            )
        for name, version, variant, role, score in scorers:
            key = (start, name, version, variant, role)
            groups[key].append((rec["label"], score, rec["entity_key"], rec["event_time"]))
    seen = set()
    for rep in reports:
        key = (
            rep["window_start"],
            rep["model_name"],
            rep["model_version"],
            rep["variant"],
            rep["role"],
        )
        seen.add(key)
        rows = groups[key]
        y = np.array([r[0] for r in rows])
        p = np.array([r[1] for r in rows])
        assert rep["predictions"] == len(rows) and rep["positives"] == int(y.sum())
        assert rep["auc_roc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert rep["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert rep["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-12)
        assert rep["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
        assert rep["precision"] == pytest.approx(precision_score(y, p >= 0.5), abs=1e-12)
        assert rep["recall"] == pytest.approx(recall_score(y, p >= 0.5), abs=1e-12)
        cards = [r[2] for r in rows]
        days = [r[3] // DAY for r in rows]
        assert rep["card_precision_at_k"] == pytest.approx(
            card_precision_at_k(y, p, cards, days, 100), abs=1e-12
        )
    windows = {k for k in groups if k[0] < 40 * DAY}
    assert seen == windows, "a closed window/scorer without its report (or an extra one)"
    assert len(reports) == len(seen), "a window reported twice"
    return len(reports)


def test_two_workers_label_every_prediction_once_and_metrics_equal_sklearn(test_settings, tmp_path):
    settings = test_settings.model_copy(update={"batch_max": 200})
    asyncio.run(ensure_topics(settings))
    w = build_workload(600, seed=3, partitions=settings.topic_partitions)
    produce_workload(settings, w)
    # Two join workers in one consumer group share the partitions (and rebalance at start).
    joins = [JoinProcess(settings, tmp_path / f"join{i}.log") for i in range(2)]
    state = join_state(settings, load_pipeline(settings.pipeline, settings.schemas_dir))
    try:
        wait_for(settings, joins[0], w, timeout=60)
        joins[1].alive()
        # The first worker may finish the workload before the second has joined the group:
        # wait until both heartbeat, so the check below is about both having run.
        deadline = time.monotonic() + 30
        while len(state.client.hgetall(state.alive_key)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything beyond the expected would show up now
    finally:
        for join in joins:
            assert join.stop(signal.SIGTERM) == 0, join.log_tail()
    labeled, extra = check_exactly_once(settings, w)
    assert extra == 0, "no worker died, so no copy is allowed"
    done = reconcile(settings, w)
    n_reports = check_performance(settings, labeled)
    assert len(state.client.hgetall(state.alive_key)) == 2, "both workers ran"
    print(f"join: {done}; {n_reports} performance reports")
    _cleanup(settings)


def test_sigkill_mid_stream_then_restart(test_settings, tmp_path):
    settings = test_settings.model_copy(update={"batch_max": 40})
    asyncio.run(ensure_topics(settings))
    w = build_workload(1500, seed=5, partitions=settings.topic_partitions)
    produce_workload(settings, w)
    matched = sum(1 for s, _ in w.expect_status.values() if s == "matched")
    first = JoinProcess(settings, tmp_path / "first.log")
    deadline = time.monotonic() + 60
    while counts(settings)[settings.topics.labeled] < matched // 4:
        first.alive()
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.02)
    first.stop(signal.SIGKILL)
    at_kill = counts(settings)[settings.topics.labeled]
    assert at_kill < len(w.expect_status), "the join finished before it was killed"
    second = JoinProcess(settings, tmp_path / "second.log")
    try:
        wait_for(settings, second, w, timeout=90)
        time.sleep(1.0)
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.log_tail()
    labeled, extra = check_exactly_once(settings, w)
    reconcile(settings, w)
    check_performance(settings, labeled)
    # Not even the batch in flight at the kill (acked, still in the outbox) is published twice.
    assert extra == 0
    recovered = [line for line in second.log_tail().splitlines() if "stopped worker" in line]
    print(f"killed at {at_kill} labeled records; after the restart: {recovered or 'no outbox'}")
    _cleanup(settings)


def _cleanup(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    keys = list(client.scan_iter(match=f"{settings.namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
