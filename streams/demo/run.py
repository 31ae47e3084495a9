"""`rtscore demo`: the fraud demo end to end on the local infra, then a report of what happened.

Start Kafka + Redis, reset the demo's own topics (prefix ``<prefix>-demo``), publish simulated
history, train and register a first model from the topics, run the worker on the backlog and
on a live stream with some invalid records mixed in, and reconcile every count.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import redis

from models.from_topics import TrainPlan, train_from_topics
from models.registry import Registry
from models.topic_reader import read_range
from streams import localinfra
from streams.codecs import RecordCodec
from streams.demo.bad_events import bad_records
from streams.demo.feed import feed
from streams.demo.publish import publish
from streams.demo.simulator import SimConfig, Simulation, simulate, transaction_records
from streams.errors import InfraError
from streams.pipeline import load_pipeline
from streams.progress import Progress
from streams.settings import Settings
from streams.topics import delete_topics, ensure_topics, record_counts

# The handbook's protocol, scaled down: 7 training days after enough history for the 30-day
# windows (and the 7-day label delay), a 7-day gap, 7 test days.
HISTORY_DAYS = 60
TRAIN_FIRST_DAY, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = 38, 7, 7, 7
BAD_PER_KIND = 20
CATCH_UP_TIMEOUT_S = 180.0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}-demo"})
    topics = settings.topics
    started = time.monotonic()

    _step(1, "infrastructure")
    for status in localinfra.up(settings):
        print(f"  {status}")

    _step(2, f"topics {topics.events}, … (reset)")
    names = [
        topics.events,
        topics.outcomes,
        topics.predictions,
        topics.labeled,
        topics.dlq,
        topics.drift,
        topics.model_events,
    ]
    asyncio.run(_reset_topics(settings, names))
    removed = _reset_features(settings)
    print(f"  {removed:,} online-feature keys of namespace {settings.namespace!r} removed")

    _step(3, f"simulate {HISTORY_DAYS} days of history")
    live_days = max(2, int(args.rate * args.live_seconds / 1500) + 2)
    cfg = dataclasses.replace(
        SimConfig.light(seed=args.seed, n_customers=1000, n_terminals=2000),
        n_days=HISTORY_DAYS + live_days,
    )
    sim = simulate(cfg)
    day = sim.day_index()
    history = np.flatnonzero(day < HISTORY_DAYS)
    asyncio.run(feed(settings, sim, cfg, history, label="  history"))

    _step(4, "train and register a first model from the topics")
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    plan = TrainPlan.by_days(
        cfg.start_ms + TRAIN_FIRST_DAY * 86_400_000,
        TRAIN_DAYS,
        DELAY_DAYS,
        TEST_DAYS,
        "logistic_regression",
    )
    version, metrics = asyncio.run(
        train_from_topics(settings, pipeline, plan, progress=lambda s: print(f"  {s}"))
    )
    Registry(settings.registry_root).set_alias(version.name, "champion", version.version)
    print(
        f"  registered {version.name} v{version.version} (sha256 {version.sha256[:12]}), "
        f"champion; test AUC ROC {metrics['auc_roc']:.3f}, "
        f"average precision {metrics['average_precision']:.3f}, "
        f"CP@100 {metrics['card_precision_at_k']:.3f}"
    )

    _step(5, "worker: score the history backlog")
    log_path = settings.home / "demo" / "worker.log"
    worker = _start_worker(settings, log_path)
    try:
        backlog_s = _wait_caught_up(settings, len(history), "  backlog", worker, log_path)
        print(f"  {len(history):,} events scored in {backlog_s:.1f}s including worker start-up")

        _step(
            6, f"live: {args.rate:g} events/s for {args.live_seconds:g}s, invalid records mixed in"
        )
        live = np.flatnonzero(day >= HISTORY_DAYS)[: int(args.rate * args.live_seconds)]
        bad = bad_records(transaction_records(sim, live[:1000]), BAD_PER_KIND, seed=args.seed)
        asyncio.run(_live(settings, sim, cfg, live, bad, args.rate, args.live_seconds))
        _wait_caught_up(
            settings, len(history) + len(live) + len(bad), "  catching up", worker, log_path
        )
    finally:
        _stop_worker(worker)

    _step(7, "reconcile")
    ok = asyncio.run(_report(settings, sim, len(history) + len(live), bad, version.version))
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s; worker log: {log_path}")
    print(
        f"predictions: {topics.predictions}   dead letters: {topics.dlq}   "
        f"registry: {settings.registry_root}"
    )
    return 0 if ok else 1


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/7] {text}", flush=True)


def _reset_features(settings: Settings) -> int:
    """The demo's own Redis namespace starts empty too: re-sent events would be duplicates."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.delete(*batch)
            batch = []
    if batch:
        removed += client.delete(*batch)
    return removed


async def _reset_topics(settings: Settings, names: list[str]) -> None:
    await delete_topics(settings, names)
    deadline = time.monotonic() + 60
    while True:  # deletion is asynchronous in Kafka: wait until the names are free again
        try:
            created = await ensure_topics(settings)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    print(
        f"  {len(created)} topics ready, {settings.topic_partitions} partitions each "
        "(drift and model-events: 1)"
    )


async def _live(
    settings: Settings,
    sim: Simulation,
    cfg: SimConfig,
    live: np.ndarray,
    bad: list[tuple[dict[str, Any], bytes, str]],
    rate: float,
    seconds: float,
) -> None:
    key_field, time_field = "customer_id", "tx_datetime"
    raw = [
        {key_field: base[key_field], time_field: base[time_field], "raw": data}
        for base, data, _reason in bad
    ]
    await asyncio.gather(
        feed(settings, sim, cfg, live, label="  live", rate=rate),
        publish(
            settings.kafka_bootstrap,
            settings.topics.events,
            raw,
            key_field=key_field,
            time_field=time_field,
            codec=lambda r: r["raw"],
            rate=len(raw) / seconds,
        ),
    )


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.as_env(), "RTSCORE_METRICS_PORT": "0"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _wait_caught_up(
    settings: Settings, expected: int, label: str, worker: subprocess.Popen[bytes], log_path: Path
) -> float:
    topics = settings.topics
    progress = Progress(label, total=expected)
    started = time.monotonic()
    while True:
        counts = asyncio.run(
            record_counts(settings.kafka_bootstrap, [topics.predictions, topics.dlq])
        )
        done = counts[topics.predictions] + counts[topics.dlq]
        progress.update(done)
        if done >= expected:
            progress.done()
            return time.monotonic() - started
        if worker.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise InfraError(
                f"the worker exited with {worker.returncode}:\n{tail}", hint=f"full log: {log_path}"
            )
        if time.monotonic() - started > CATCH_UP_TIMEOUT_S:
            raise InfraError(
                f"the worker scored {done:,} of {expected:,} in {CATCH_UP_TIMEOUT_S:.0f}s",
                hint=f"see {log_path}",
            )
        time.sleep(0.5)


async def _report(
    settings: Settings,
    sim: Simulation,
    n_valid: int,
    bad: list[tuple[dict[str, Any], bytes, str]],
    version: int,
) -> bool:
    topics = settings.topics
    bootstrap = settings.kafka_bootstrap
    predictions_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    dlq_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")
    events = await read_range(bootstrap, topics.events)
    predictions = [
        predictions_codec.decode(r[1])
        for r in (await read_range(bootstrap, topics.predictions)).records
        if r[1] is not None
    ]
    letters = [
        dlq_codec.decode(r[1])
        for r in (await read_range(bootstrap, topics.dlq)).records
        if r[1] is not None
    ]
    distinct = {p["prediction_id"] for p in predictions}
    by_reason = Counter(d["reason"] for d in letters)
    expected_reasons = Counter(reason for _b, _d, reason in bad)
    versions = Counter(f"{p['model_name']} v{p['model_version']}" for p in predictions)
    ok = (
        len(events.records) == n_valid + len(bad)
        and len(distinct) == n_valid
        and by_reason == expected_reasons
    )
    print(
        f"  events in          {len(events.records):>9,}  ({n_valid:,} valid + {len(bad)} invalid)"
    )
    print(
        f"  predictions out    {len(predictions):>9,}  ({len(distinct):,} distinct ids; "
        f"models: {dict(versions)})"
    )
    print(f"  dead letters out   {len(letters):>9,}  {dict(sorted(by_reason.items()))}")
    print(f"  reconciled         {'yes' if ok else 'NO'}")
    _throughput(predictions)
    _examples(predictions, letters, sim)
    return ok


def _throughput(predictions: list[dict[str, Any]]) -> None:
    scored = np.array(sorted(p["scored_time"] for p in predictions), dtype=np.int64)
    latency = np.array([p["batch_latency_ms"] for p in predictions])
    sizes = np.array([p["batch_size"] for p in predictions])
    busiest = scored[-1] - scored[0]
    print(
        f"  batches: mean size {sizes.mean():.0f} events, scoring time per batch "
        f"p50 {np.percentile(latency, 50):.1f} ms, p99 {np.percentile(latency, 99):.1f} ms"
    )
    # Backlog throughput: predictions scored within the densest 5 seconds.
    if len(scored) > 1 and busiest > 0:
        window = 5000
        right = np.searchsorted(scored, scored + window)
        peak = int((right - np.arange(len(scored))).max())
        print(f"  peak throughput: {peak / (window / 1000):,.0f} events/s (densest 5 s)")


def _examples(
    predictions: list[dict[str, Any]], letters: list[dict[str, Any]], sim: Simulation
) -> None:
    top = sorted(predictions, key=lambda p: -p["score"])[:5]
    print("\n  highest scores (is_fraud from the simulator's ground truth):")
    print(
        f"  {'transaction':>11} {'customer':>8} {'amount':>9} {'time (UTC)':>19} "
        f"{'score':>6} {'model':>9} fraud"
    )
    for p in top:
        row = int(p["event_id"])
        when = dt.datetime.fromtimestamp(p["event_time"] / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        print(
            f"  {row:>11} {p['entity_key']:>8} {sim.tx_amount[row]:>9.2f} {when:>19} "
            f"{p['score']:>6.3f} {p['model_name'] + ' v' + str(p['model_version']):>9} "
            f"{bool(sim.is_fraud[row])}"
        )
    print("\n  a dead letter of each reason:")
    seen: set[str] = set()
    for d in letters:
        if d["reason"] not in seen:
            seen.add(d["reason"])
            print(
                f"  - [{d['stage']}/{d['reason']}] partition {d['source_partition']} offset "
                f"{d['source_offset']}: {d['error'][:150]}"
            )
