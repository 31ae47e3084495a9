"""`rtscore bench`: the three contenders over the same simulated events, one after another,
each in a topic prefix and Redis namespace of its own that are deleted afterwards.

For each: the backlog (maximum sustained throughput, CPU), then fixed offered loads (shares of
rtscore's maximum) for end-to-end latency, and its peak RSS; for rtscore optionally a long run
sampling RSS against events processed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from aiokafka.admin import AIOKafkaAdminClient

from models.registry import Registry
from streams.bench import rss
from streams.bench.events import BenchEvents, produce, train_and_register
from streams.bench.latency import ceiling_id, measure_latency
from streams.bench.report import MB, ContenderResult, LoadResult, build_report, markdown
from streams.bench.throughput import OutputCounter, measure_backlog
from streams.bench.worker import ContenderProcess, argv_for
from streams.codecs import RecordCodec
from streams.errors import ConfigError, InfraError
from streams.features.redis_store import RedisStore
from streams.pipeline import Pipeline, load_pipeline
from streams.progress import Progress
from streams.settings import Settings
from streams.topics import delete_topics, ensure_topics

CONTENDERS = ("rtscore", "ceiling", "naive")  # rtscore first: its maximum sets the loads
OPTIONAL = ("overlap",)  # a faust-less sketch of the worker's loop (streams.bench.overlap)
WITH_DRIFT = "rtscore+drift"  # the worker with its drift processor beside the scoring one
MAX_RATE_GUESS = 40_000  # events/s: sizes the simulation for the offered loads
SATURATED = 0.9  # a load above this share of a contender's own maximum is not measured
BACKLOG_TIMEOUT_S = 900.0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.quick:
        args.events, args.naive_events, args.load_seconds = 2_000, 300, 2.0
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS + OPTIONAL]
    if unknown:
        raise ConfigError(
            f"unknown contender(s) {', '.join(unknown)}",
            hint=f"--contenders takes some of {','.join(CONTENDERS + OPTIONAL)}",
        )
    names = [n for n in CONTENDERS + OPTIONAL if n in names]
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    run = uuid.uuid4().hex[:6]
    base = f"{settings.topic_prefix}-bench-{run}"
    home = settings.home / "bench" / run
    try:
        report = asyncio.run(_bench(settings, args, names, loads, base, home))
    finally:
        _say(f"cleaning up topics and Redis keys of {base}-*")
        asyncio.run(_delete_topics(settings, base))
        _delete_keys(settings, base)
        shutil.rmtree(home, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print()
    print(markdown(report))
    return 0


async def _bench(
    settings: Settings,
    args: argparse.Namespace,
    names: list[str],
    loads: list[float],
    base: str,
    home: Path,
) -> dict[str, Any]:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    budget = int(args.load_seconds * MAX_RATE_GUESS * sum(loads))
    events = BenchEvents.generate(args.events + args.rss_events + budget, args.seed)
    registry = home / "registry"
    version = train_and_register(pipeline, events, Registry(registry))
    _say(f"simulated {events.total:,} events; model {pipeline.model_name} v{version} trained")
    results: list[ContenderResult] = []
    ref_rate: float | None = None  # the first contender's maximum sets the offered loads
    if args.with_drift and "rtscore" in names:
        names = [*names, WITH_DRIFT]
    for name in names:
        cs = settings.model_copy(
            update={
                "topic_prefix": f"{base}-{name.replace('+', '-')}",
                "registry_dir": registry,
                "home": home / name,
                "metrics_port": 0,
                "feature_namespace": None,
            }
        )
        # with drift beside it, only the maximum throughput: what drift costs the scoring
        runs = [] if name == WITH_DRIFT else loads
        result = await _contender(cs, pipeline, events, name, runs, ref_rate, args)
        ref_rate = ref_rate or result.backlog.events_per_s
        results.append(result)
    config = {
        "pipeline": pipeline.name,
        "features": len(pipeline.features),
        "events": args.events,
        "naive_events": args.naive_events,
        "loads": loads,
        "load_seconds": args.load_seconds,
        "partitions": settings.topic_partitions,
        "batch_max": settings.batch_max,
        "batch_within_s": settings.batch_within_s,
        "fetch_bytes_per_partition": settings.fetch_bytes_per_partition,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }
    return build_report(config, results, names[0])


async def _contender(
    settings: Settings,
    pipeline: Pipeline,
    events: BenchEvents,
    name: str,
    loads: list[float],
    ref_rate: float | None,
    args: argparse.Namespace,
) -> ContenderResult:
    topics = settings.topics
    bootstrap = settings.kafka_bootstrap
    await ensure_topics(settings)
    if name != "ceiling":  # the label state, as the outcomes agent would have built it
        client = redis.Redis.from_url(settings.redis_url.get_secret_value())
        RedisStore(pipeline, client, settings.namespace).add_outcomes(events.outcomes(events.total))
    n = min(args.naive_events if name == "naive" else args.events, args.events)
    progress = Progress(f"[{name}] producing the backlog", total=n)
    await produce(bootstrap, topics.events, events, 0, n, progress.update)
    progress.done()
    argv = argv_for("rtscore", ("scoring", "drift")) if name == WITH_DRIFT else argv_for(name)
    counter = OutputCounter(bootstrap, [topics.predictions, topics.dlq])
    await counter.start()
    process = ContenderProcess(argv, settings, settings.home / f"{name}.log")
    try:
        progress = Progress(f"[{name}] backlog", total=n)
        try:
            backlog = await measure_backlog(
                counter, n, process.pid, process.alive, BACKLOG_TIMEOUT_S, progress.update
            )
        except InfraError as exc:  # its log goes with the run's folder: show its end here
            raise InfraError(
                f"[{name}] {exc.message}; the end of its log:\n{process.log_tail()}"
            ) from exc
        progress.done()
        _say(
            f"[{name}] {backlog.events_per_s:,.0f} events/s, {backlog.cpu_cores:.2f} cores, "
            f"{backlog.cpu_us_per_event:,.0f} µs CPU/event"
        )
        result = ContenderResult(name, backlog, 0.0)
        id_of = ceiling_id if name == "ceiling" else _prediction_id_of(settings)
        cursor = args.events
        for share in loads:
            rate = share * (ref_rate or backlog.events_per_s)
            count = max(1, int(rate * args.load_seconds))
            records = events.records(cursor, cursor + count)
            cursor += count
            if rate > SATURATED * backlog.events_per_s:
                note = f"saturated (max {backlog.events_per_s:,.0f}/s)"
                result.loads.append(LoadResult(share, rate, None, note))
                continue
            _say(f"[{name}] {share:.0%} load: {rate:,.0f} events/s for {args.load_seconds:g}s")
            latency = await measure_latency(
                bootstrap, topics.events, topics.predictions, records, rate, id_of
            )
            _say(
                f"[{name}]   p50 {latency.p50_ms:.1f} ms, p99 {latency.p99_ms:.1f} ms, "
                f"max {latency.max_ms:.1f} ms ({latency.received:,}/{latency.sent:,})"
            )
            result.loads.append(LoadResult(share, rate, latency))
        if name == "rtscore" and args.rss_events:
            result.rss_run = await _rss_run(settings, events, cursor, args.rss_events, process)
        result.peak_rss_mb = rss.peak_rss_bytes(process.pid) / MB
        if not process.alive():
            raise InfraError(f"{name} exited:\n{process.log_tail()}")
        return result
    finally:
        process.stop()
        await counter.stop()


def _prediction_id_of(settings: Settings) -> Callable[[bytes], str]:
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    return lambda value: str(codec.decode(value)["event_id"])


async def _rss_run(
    settings: Settings, events: BenchEvents, start: int, count: int, process: ContenderProcess
) -> dict[str, Any]:
    """``count`` more events through the worker, RSS sampled every second against the
    number of outputs."""
    topics = settings.topics
    counter = OutputCounter(settings.kafka_bootstrap, [topics.predictions, topics.dlq])
    await counter.start()
    trend = rss.RssTrend()
    progress = Progress("[rtscore] RSS run", total=count)
    producing = asyncio.create_task(
        produce(settings.kafka_bootstrap, topics.events, events, start, start + count)
    )
    started = time.monotonic()
    try:
        while True:
            done = await counter.count()
            trend.add(done, rss.rss_bytes(process.pid))
            progress.update(done)
            if done >= count:
                break
            if not process.alive():
                raise InfraError(f"the worker exited:\n{process.log_tail()}")
            if time.monotonic() - started > BACKLOG_TIMEOUT_S * 4:
                raise InfraError(f"RSS run: {done:,} of {count:,} after {BACKLOG_TIMEOUT_S * 4}s")
            await asyncio.sleep(1.0)
        await producing
    finally:
        producing.cancel()
        await counter.stop()
    progress.done()
    slope = trend.slope_mb_per_million()
    samples = list(zip(trend.events, trend.rss, strict=True))
    return {
        "events": count,
        "seconds": round(time.monotonic() - started, 1),
        "samples": len(trend.rss),
        "rss_mb_first": round(trend.rss[0] / MB, 1),
        "rss_mb_last": round(trend.rss[-1] / MB, 1),
        "rss_mb_max": round(max(trend.rss) / MB, 1),
        "slope_mb_per_million": None if slope is None else round(slope, 2),
        "trend": [[e, round(r / MB, 1)] for e, r in samples[:: max(1, len(samples) // 50)]],
    }


async def _delete_topics(settings: Settings, base: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(base + "-")]
    finally:
        await admin.close()
    if mine:
        await delete_topics(settings, mine)


def _delete_keys(settings: Settings, base: str) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{base}-*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
