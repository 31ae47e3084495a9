"""`rtscore simulate`: simulated history as fast as possible, then (``--live``) a paced stream."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

import numpy as np

from streams.demo.publish import publish_simulation
from streams.demo.simulator import SimConfig, Simulation, simulate
from streams.progress import Progress
from streams.settings import Settings
from streams.topics import ensure_topics

LIVE_DAYS = 30  # simulated days available to a live stream after the history


def sim_config(args: argparse.Namespace, live_days: int) -> SimConfig:
    base = SimConfig(seed=args.seed) if args.reference else SimConfig.light(seed=args.seed)
    return dataclasses.replace(base, n_days=args.days + live_days)


async def feed(
    settings: Settings,
    sim: Simulation,
    cfg: SimConfig,
    rows: np.ndarray,
    *,
    label: str,
    rate: float | None = None,
) -> tuple[int, int]:
    labels = len(rows) if cfg.outcomes_for == "all" else int(sim.is_fraud[rows].sum())
    progress = Progress(label, total=len(rows) + labels)
    sent = await publish_simulation(
        settings.kafka_bootstrap,
        settings.topics,
        sim,
        cfg,
        rows=rows,
        rate=rate,
        progress=progress.update,
    )
    progress.done()
    return sent


def simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    live_days = LIVE_DAYS if args.live else 0
    cfg = sim_config(args, live_days)
    sim = simulate(cfg)
    day = sim.day_index()
    asyncio.run(ensure_topics(settings))
    if not args.no_history:
        history = np.flatnonzero(day < args.days)
        tx, outcomes = asyncio.run(feed(settings, sim, cfg, history, label="history"))
        print(f"history: {tx:,} transactions, {outcomes:,} outcomes -> {settings.topics.events}")
    if args.live:
        live = np.flatnonzero(day >= args.days)
        if args.duration is not None:
            live = live[: int(args.rate * args.duration)]
        tx, outcomes = asyncio.run(feed(settings, sim, cfg, live, label="live", rate=args.rate))
        print(f"live: {tx:,} transactions, {outcomes:,} outcomes at {args.rate:g}/s")
    return 0
