"""`rtscore demo`: the fraud demo end to end on the local infra, then a report of what happened.

Start Kafka + Redis, reset the demo's own topics (prefix ``<prefix>-demo``), publish simulated
history, train a champion and a challenger from the topics, run every processor (scoring,
outcome join, drift) on the backlog and on a live stream with invalid records mixed in, a
pricing change that shifts the amounts, and a hot swap to the challenger; then reconcile every
count and show what monitoring saw.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from models.from_topics import TrainPlan, train_from_topics
from models.registry import ModelVersion, Registry
from streams import localinfra
from streams.demo.bad_events import bad_records
from streams.demo.feed import feed
from streams.demo.publish import publish
from streams.demo.report import report
from streams.demo.simulator import SimConfig, Simulation, simulate, transaction_records
from streams.errors import InfraError
from streams.model_command import change
from streams.pipeline import Pipeline, load_pipeline
from streams.progress import Progress
from streams.redis_keys import namespace_keys
from streams.settings import Settings
from streams.topics import delete_topics, ensure_topics, group_lag, record_counts, topic_plan

# The handbook's protocol, scaled down: 7 training days after enough history for the 30-day
# windows (and the 7-day label delay), a 7-day gap, 7 test days.
HISTORY_DAYS = 60
TRAIN_FIRST_DAY, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = 38, 7, 7, 7
BAD_PER_KIND = 20
CATCH_UP_TIMEOUT_S = 240.0
# From a third of the live stream on, amounts are 1.5x (a currency or pricing change): the
# drift processor should raise TX_AMOUNT and the customer averages.
AMOUNT_SHIFT = 1.5
STEPS = 9


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}-demo"})
    started = time.monotonic()

    _step(1, "infrastructure")
    for status in localinfra.up(settings):
        print(f"  {status}")

    _step(2, f"topics {settings.topic_prefix}.* and Redis namespace (reset)")
    asyncio.run(_reset_topics(settings))
    removed = _reset_keys(settings)
    print(f"  {removed:,} Redis keys of namespace {settings.namespace!r} removed")

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

    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    registry = Registry(settings.registry_root)
    _step(4, "train the champion from the topics (logistic regression) and publish it")
    champion = _train(settings, pipeline, cfg, "logistic_regression")
    state = change(settings, registry, pipeline, "promote", champion.name, [str(champion.version)])
    print(f"  {state.detail}; published to {settings.topics.model_events}")

    _step(5, "train a challenger (random forest); it scores every event in shadow")
    challenger = _train(settings, pipeline, cfg, "random_forest")
    name, v2 = challenger.name, str(challenger.version)
    change(settings, registry, pipeline, "challenger", name, [v2])
    state = change(settings, registry, pipeline, "shadow", name, ["challenger=1"])
    print(f"  serving: {state.describe()}")

    _step(6, "rtscore worker (scoring, outcome join, drift): the history backlog")
    log_path = settings.home / "demo" / "worker.log"
    worker = _start_worker(settings, log_path)
    live = np.flatnonzero(day >= HISTORY_DAYS)[: int(args.rate * args.live_seconds)]
    bad = bad_records(transaction_records(sim, live[:1000]), BAD_PER_KIND, seed=args.seed)
    try:
        backlog_s = _wait_scored(settings, len(history), "  backlog", worker, log_path)
        print(f"  {len(history):,} events scored in {backlog_s:.1f}s including worker start-up")

        _step(
            7,
            f"live: {args.rate:g} events/s for {args.live_seconds:g}s with invalid records; "
            f"amounts x{AMOUNT_SHIFT:g} from a third in; the challenger promoted halfway",
        )
        shifted = live[len(live) // 3 :]
        sim.tx_amount[shifted] = np.round(sim.tx_amount[shifted] * AMOUNT_SHIFT, 2)
        swap = _promote_later(settings, registry, pipeline, challenger, args.live_seconds / 2)
        asyncio.run(_live(settings, sim, cfg, live, bad, args.rate, args.live_seconds))
        swap.join()
        expected = len(history) + len(live) + len(bad)
        _wait_scored(settings, expected, "  catching up", worker, log_path)
        _wait_monitors(settings, pipeline, worker, log_path)
    finally:
        _stop_worker(worker)

    _step(8, "reconcile and 9: monitoring")
    ok = asyncio.run(
        report(
            settings,
            pipeline,
            sim,
            n_valid=len(history) + len(live),
            bad=bad,
            shift_from_ms=int(sim.tx_time_ms[shifted[0]]),
            swap_published_ms=swap.published_ms,
            train_start_ms=cfg.start_ms + TRAIN_FIRST_DAY * 86_400_000,
        )
    )
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s; worker log: {log_path}")
    print(
        f"topics: {settings.topic_prefix}.*   registry: {settings.registry_root}   "
        f"try: RTSCORE_TOPIC_PREFIX={settings.topic_prefix} rtscore performance"
    )
    return 0 if ok else 1


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/{STEPS}] {text}", flush=True)


def _train(settings: Settings, pipeline: Pipeline, cfg: SimConfig, estimator: str) -> ModelVersion:
    plan = TrainPlan.by_days(
        cfg.start_ms + TRAIN_FIRST_DAY * 86_400_000, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS, estimator
    )
    version, metrics = asyncio.run(
        train_from_topics(settings, pipeline, plan, progress=lambda s: print(f"  {s}"))
    )
    print(
        f"  registered {version.name} v{version.version} (sha256 {version.sha256[:12]}); test "
        f"AUC ROC {metrics['auc_roc']:.3f}, average precision {metrics['average_precision']:.3f}"
        f", CP@100 {metrics['card_precision_at_k']:.3f}"
    )
    return version


class _Promotion(threading.Thread):
    """Promotes the challenger after ``delay`` seconds, while the live stream flows."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        pipeline: Pipeline,
        version: ModelVersion,
        delay: float,
    ) -> None:
        super().__init__(name="demo-promotion", daemon=True)
        self.args = (settings, registry, pipeline, version)
        self.delay = delay
        self.published_ms: int | None = None

    def run(self) -> None:
        time.sleep(self.delay)
        settings, registry, pipeline, version = self.args
        # The old champion stays in shadow, so the two can still be compared on the same events.
        old = registry.resolve(version.name, "champion").version
        state = change(
            settings, registry, pipeline, "promote", version.name, [str(version.version)]
        )
        self.published_ms = state.time_ms
        change(settings, registry, pipeline, "challenger", version.name, [str(old)])
        print(f"\n  hot swap: {state.detail}; v{old} stays in shadow", flush=True)


def _promote_later(
    settings: Settings, registry: Registry, pipeline: Pipeline, version: ModelVersion, delay: float
) -> _Promotion:
    promotion = _Promotion(settings, registry, pipeline, version, delay)
    promotion.start()
    return promotion


def _reset_keys(settings: Settings) -> int:
    """The demo's own Redis namespace starts empty too: re-sent events would be duplicates."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    removed = 0
    batch: list[bytes] = []
    # a list first: deleting while scanning may skip keys
    for key in list(namespace_keys(client, settings.namespace)):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.delete(*batch)
            batch = []
    if batch:
        removed += client.delete(*batch)
    return removed


async def _reset_topics(settings: Settings) -> None:
    names = [
        plan.name
        for plan in topic_plan(
            settings.topics, settings.topic_partitions, settings.topic_retention_ms
        )
    ]
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
        "(drift, performance and model-events: 1)"
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
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _check_alive(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    if worker.poll() is not None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise InfraError(
            f"the worker exited with {worker.returncode}:\n{tail}", hint=f"full log: {log_path}"
        )


def _wait_scored(
    settings: Settings, expected: int, label: str, worker: subprocess.Popen[bytes], log_path: Path
) -> float:
    topics = settings.topics
    progress = Progress(label, total=expected)
    started = time.monotonic()
    while True:
        counts = asyncio.run(
            record_counts(settings.kafka_bootstrap, [topics.predictions, topics.dlq])
        )
        # the dlq also gets the join's dead letters (orphan outcomes): an estimate, capped
        done = counts[topics.predictions] + counts[topics.dlq]
        progress.update(min(done, expected))
        if done >= expected:
            progress.done()
            return time.monotonic() - started
        _check_alive(worker, log_path)
        if time.monotonic() - started > CATCH_UP_TIMEOUT_S:
            raise InfraError(
                f"the worker scored {done:,} of {expected:,} in {CATCH_UP_TIMEOUT_S:.0f}s",
                hint=f"see {log_path}",
            )
        time.sleep(0.5)


def _wait_monitors(
    settings: Settings, pipeline: Pipeline, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Wait until every processor has committed all it reads: the scoring processor every
    event (the outputs' count alone can run ahead: the join's dead letters share the dlq
    topic), the join and drift processors every prediction and outcome."""
    topics = settings.topics
    groups = {
        "scoring": [topics.events, topics.outcomes],
        "join": [topics.predictions, topics.outcomes],
        "drift": [topics.predictions, topics.outcomes],
    }
    started = time.monotonic()
    for role, names in groups.items():
        group = f"{settings.topic_prefix}-{pipeline.name}-{role}"
        while True:
            lag = asyncio.run(group_lag(settings.kafka_bootstrap, group, names))
            if lag == 0:
                break
            _check_alive(worker, log_path)
            if time.monotonic() - started > CATCH_UP_TIMEOUT_S:
                print(f"  the {role} processor is still {lag} records behind; reporting anyway")
                break
            time.sleep(0.5)
    time.sleep(3.0)  # windows close on the processors' timers, a second or two after the data
    print(f"  scoring, join and drift caught up in {time.monotonic() - started:.1f}s")
