"""`rtscore replay`: plan a copy of a topic's time range, or resume one, and run it."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import ConfigError
from streams.progress import Progress
from streams.replay.copy import Pace, ReplayState, copy_range, target_ends
from streams.replay.ranges import check_retention, parse_time, show_time, topic_partitions
from streams.settings import Settings
from streams.topics import TopicPlan, ensure_topics


def add_replay_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="copy a time range of a topic to another topic (keys, timestamps, order)"
    )
    p.add_argument(
        "--topic", required=True, help="events, outcomes, another rtscore topic or a full name"
    )
    p.add_argument("--from", dest="start", required=True, help="range start (UTC date/time)")
    p.add_argument("--to", dest="end", required=True, help="range end, exclusive")
    p.add_argument("--to-topic", required=True, help="target topic (created if missing)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate", type=float, help="records per second (default: as fast as possible)"
    )
    pace.add_argument("--speed", type=float, help="times event time: 60 = an hour per minute")
    p.add_argument("--resume", action="store_true", help="continue an interrupted replay")
    p.set_defaults(handler=replay_command)


def source_topic(settings: Settings, name: str) -> str:
    """``events`` / ``outcomes`` / ``predictions`` … name the prefix's topics; else as given."""
    short = name.replace("-", "_")
    return (
        str(getattr(settings.topics, short))
        if short in settings.topics.__dataclass_fields__
        else name
    )


def state_path(settings: Settings, source: str, target: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{source}--{target}")
    return settings.home / "replay" / f"{safe}.json"


async def plan_replay(
    settings: Settings, source: str, target: str, start_ms: int, end_ms: int
) -> ReplayState:
    """Check the topics and the range; create the target if missing; snapshot the offsets."""
    bootstrap = settings.kafka_bootstrap
    if source == target:
        raise ConfigError(f"--to-topic is the source topic {source}", hint="name another topic")
    if end_ms <= start_ms:
        raise ConfigError(f"--to ({show_time(end_ms)}) is not after --from ({show_time(start_ms)})")
    await check_retention(bootstrap, source, start_ms, why="the range")  # also: does it exist
    parts = await topic_partitions(bootstrap, source) or []
    have = await topic_partitions(bootstrap, target)
    if have is None:
        await ensure_topics(
            settings,
            [TopicPlan(target, len(parts), {"retention.ms": str(settings.topic_retention_ms)})],
        )
    elif len(have) < len(parts):
        raise ConfigError(
            f"{target} has {len(have)} partitions, {source} has {len(parts)}: records keep their "
            "partition number, so the target needs at least as many",
            hint="replay into a new topic (it is created with the source's partitions)",
        )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(source, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        plan = {
            tp.partition: (ends[tp] if hit is None else min(hit.offset, ends[tp]), ends[tp])
            for tp, hit in found.items()
        }
        base = await target_ends(consumer, target, parts)
    finally:
        await consumer.stop()
    return ReplayState(source, target, start_ms, end_ms, plan, base)


def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    source = source_topic(settings, args.topic)
    target = args.to_topic
    start_ms, end_ms = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    path = state_path(settings, source, target)
    previous = ReplayState.load(path) if path.exists() else None
    if args.resume:
        if previous is None:
            raise ConfigError(f"no replay of {source} to {target} to resume ({path} is missing)")
        if (previous.start_ms, previous.end_ms) != (start_ms, end_ms):
            raise ConfigError(
                f"the replay to resume covers [{show_time(previous.start_ms)}, "
                f"{show_time(previous.end_ms)}), not this range",
                hint="resume with the same --from and --to",
            )
        if previous.done:
            print(f"the replay of {source} to {target} is already complete")
            return 0
        state = previous
    elif (
        previous is not None
        and previous.done
        and (previous.start_ms, previous.end_ms) == (start_ms, end_ms)
    ):
        # Running the same command twice must not copy the range twice.
        print(f"this range of {source} is already in {target} (see {path}); nothing to do")
        return 0
    else:
        if previous is not None and not previous.done:
            raise ConfigError(
                f"a replay of {source} to {target} was interrupted ({path})",
                hint="continue it with --resume, or delete that file to start over",
            )
        state = asyncio.run(plan_replay(settings, source, target, start_ms, end_ms))
        state.save(path)
    pace = Pace(rate=args.rate, speed=args.speed)
    bar = Progress(f"{source} -> {target}", total=state.total)
    started = time.monotonic()
    before = sum(state.copied.values())
    state = asyncio.run(
        copy_range(settings.kafka_bootstrap, state, path, pace, progress=bar.update)
    )
    bar.done()
    copied = sum(state.copied.values())
    seconds = time.monotonic() - started
    print(
        f"replayed {copied - before:,} records ({copied:,} in all) of {source} "
        f"[{show_time(start_ms)}, {show_time(end_ms)}) to {target} in {seconds:.1f} s "
        f"({(copied - before) / max(seconds, 1e-9):,.0f}/s)"
    )
    for p in sorted(state.plan):
        print(f"  partition {p}: {state.copied[p]:,} records")
    return 0
