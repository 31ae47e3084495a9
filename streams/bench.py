"""`rtscore bench`: the online feature stage on the real Redis, micro-batched against one
round trip per event, over the same simulated events in one run.

(The full harness — a raw consume/produce ceiling, the naive per-event design and the
whole worker, with latency under load — is the benchmark issue's; this measures the stage
the online-features issue is about.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import uuid
from typing import Any

import redis

from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.features.redis_store import RedisStore
from streams.pipeline import load_pipeline
from streams.settings import Settings


def _run(store: RedisStore, events: list[dict[str, Any]], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        store.update_and_read(events[i : i + batch])
    return len(events) / (time.perf_counter() - started)


def bench_command(settings: Settings, args: argparse.Namespace) -> int:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    cfg = dataclasses.replace(
        SimConfig.light(seed=args.seed, n_customers=1000, n_terminals=2000),
        n_days=max(2, args.events // 1800 + 1),
    )
    sim = simulate(cfg)
    events = transaction_records(sim)[: args.events]
    outcomes = outcome_records(sim, cfg)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    results: dict[str, Any] = {
        "events": len(events),
        "pipeline": pipeline.name,
        "features": len(pipeline.features),
    }
    # The same events, each contender in a fresh namespace of its own, removed afterwards.
    for name, batch in (("batched", args.batch), ("per_event", 1)):
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        store = RedisStore(pipeline, client, namespace)
        try:
            store.add_outcomes(outcomes)
            results[name] = {"batch": batch, "events_per_s": round(_run(store, events, batch))}
        finally:
            for key in client.scan_iter(match=f"{namespace}:*", count=1000):
                client.delete(key)
    results["speedup"] = round(
        results["batched"]["events_per_s"] / results["per_event"]["events_per_s"], 1
    )
    print(json.dumps(results, indent=2))
    print(
        f"\n| feature stage ({results['features']} features, {len(events):,} events) "
        "| events/s |\n|---|---|"
    )
    print(
        f"| micro-batches of {args.batch} (one Redis round trip each) "
        f"| {results['batched']['events_per_s']:,} |"
    )
    print(f"| one event per round trip | {results['per_event']['events_per_s']:,} |")
    print(f"| speed-up | {results['speedup']}x |")
    return 0
