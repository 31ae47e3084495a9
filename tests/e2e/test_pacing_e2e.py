"""Pacing on sparse data (invariant 2 for an entity that is not the partition key): with
~100 events a day per partition, what a worker buffers spans days of event time, so the
terminal windows (7-day delay) are exact only if no partition is read days ahead of another.
The whole backlog is in the topic before the worker reads it, the hardest case for pacing."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.pipeline import load_pipeline
from streams.topics import ensure_topics
from tests.e2e.test_features_e2e import (
    _assert_same_vectors,
    _offline_by_offset,
    _predictions,
    _publish_events,
    _start_with_outcomes,
)
from tests.e2e.test_kcat import register_small_model
from tests.e2e.test_scoring_e2e import _free_port, _scrape_series
from tests.e2e.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def test_sparse_backlog_on_three_partitions_gives_the_offline_vectors(test_settings, tmp_path):
    settings = test_settings.model_copy(
        update={"metrics_port": _free_port(), "topic_partitions": 3}
    )
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    # ~270 events a day: ~90 per partition per day, 30 days (the 7-day delay + 7-day windows
    # fill after two weeks; the 30-day ones reach past the start, as offline).
    cfg = dataclasses.replace(SimConfig.light(seed=3, n_customers=150, n_terminals=300), n_days=30)
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    assert 6_000 <= len(events) <= 10_000

    # The outcomes are applied first; then the worker stops, the events are published, and a
    # new worker finds the whole backlog in the topic.
    first = _start_with_outcomes(settings, outcomes, tmp_path, "outcomes")
    assert first.stop() == 0, first.log_tail()
    _publish_events(settings, events)
    started = time.monotonic()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_outputs(len(events), timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    print(f"scored {len(events)} events in {time.monotonic() - started:.1f} s")

    predictions = _predictions(settings)
    assert len(predictions) == len(events)
    assert {p["source_partition"] for p in predictions} == {0, 1, 2}
    _assert_same_vectors(pipeline, predictions, _offline_by_offset(settings, pipeline, outcomes))


def test_a_rebalance_while_events_are_held_loses_none_and_does_not_hang(test_settings, tmp_path):
    """A second worker joins mid-backlog: the first forgets what it holds (faust seeks back to
    the committed offsets), so every event still comes out, and both stop cleanly."""
    settings = test_settings.model_copy(
        update={"metrics_port": _free_port(), "topic_partitions": 3, "batch_max": 200}
    )
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    cfg = dataclasses.replace(SimConfig.light(seed=4, n_customers=150, n_terminals=300), n_days=60)
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    first = _start_with_outcomes(settings, outcomes, tmp_path, "first")
    second_settings = settings.model_copy(update={"metrics_port": _free_port()})
    second = None
    try:
        # The second worker joins while the first works through the backlog.
        second = WorkerProcess(second_settings, tmp_path / "second.log")
        _publish_events(settings, events)
        deadline = time.monotonic() + 120
        while len({p["event_id"] for p in _predictions(settings)}) < len(events):
            assert time.monotonic() < deadline, first.log_tail() + second.log_tail()
            time.sleep(0.5)
        scored = [
            _scrape_series(s.metrics_port).get('rtscore_events_in_total{pipeline="fraud"}', 0)
            for s in (settings, second_settings)
        ]
    finally:
        assert first.stop() == 0, first.log_tail()
        if second is not None:
            assert second.stop() == 0, second.log_tail()
    assert {p["event_id"] for p in _predictions(settings)} == {
        str(e["transaction_id"]) for e in events
    }
    print(f"events scored by the first and the second worker: {scored}")
    assert all(n > 0 for n in scored)


def test_a_slow_worker_holds_the_fast_one_back_so_terminal_windows_stay_exact(
    test_settings, tmp_path
):
    """Two workers share the partitions; one is slow (micro-batches of 4 events). Each paces
    only its own partitions, so without the frontiers shared in Redis (streams.pace_board)
    the fast one scores days ahead of the slow one's partitions and its terminal windows miss
    their events. With them, every vector equals the offline one."""
    settings = test_settings.model_copy(
        update={"metrics_port": _free_port(), "topic_partitions": 3}
    )
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    asyncio.run(ensure_topics(settings))
    register_small_model(settings)
    cfg = dataclasses.replace(SimConfig.light(seed=6, n_customers=150, n_terminals=300), n_days=24)
    sim = simulate(cfg)
    events, outcomes = transaction_records(sim), outcome_records(sim, cfg)
    first = _start_with_outcomes(settings, outcomes, tmp_path, "outcomes")
    assert first.stop() == 0, first.log_tail()

    slow_settings = settings.model_copy(update={"metrics_port": _free_port(), "batch_max": 4})
    slow = WorkerProcess(slow_settings, tmp_path / "slow.log")
    fast = None
    try:
        deadline = time.monotonic() + 60
        while not _scrape_series(slow_settings.metrics_port):
            assert time.monotonic() < deadline, slow.log_tail()
            time.sleep(0.2)
        fast = WorkerProcess(settings, tmp_path / "fast.log")
        time.sleep(3.0)  # let the fast one join the group: a rebalance splits the partitions
        _publish_events(settings, events)
        deadline = time.monotonic() + 150
        while len({p["event_id"] for p in _predictions(settings)}) < len(events):
            assert time.monotonic() < deadline, slow.log_tail() + fast.log_tail()
            time.sleep(0.5)
        scored = [
            _scrape_series(s.metrics_port).get('rtscore_events_in_total{pipeline="fraud"}', 0)
            for s in (slow_settings, settings)
        ]
    finally:
        assert slow.stop() == 0, slow.log_tail()
        if fast is not None:
            assert fast.stop() == 0, fast.log_tail()
    print(f"events scored by the slow and the fast worker: {scored}")
    assert all(n > 0 for n in scored), "both workers scored"
    predictions = _predictions(settings)
    _assert_same_vectors(pipeline, predictions, _offline_by_offset(settings, pipeline, outcomes))
