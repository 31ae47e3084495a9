"""The `rtscore` command. Settings are read from the environment here, once, and passed down;
logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from streams.errors import RtscoreError
from streams.log_throttle import RepeatThrottle
from streams.settings import Settings

log = logging.getLogger("rtscore")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Processors log what they do; the other commands print their own progress and results.
    runs_processor = args.command in ("worker", "join") or (
        args.command == "drift" and getattr(args, "drift_action", None) == "run"
    )
    quiet = logging.INFO if runs_processor else logging.WARNING
    # Each processor of `rtscore worker` runs in its own process: tag its lines with its name.
    processors = getattr(args, "processors", None) or []
    tag = f"[{processors[0]}] " if len(processors) == 1 else ""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s",
    )
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatThrottle())
    try:
        settings = Settings()
        return int(args.handler(settings, args) or 0)
    except RtscoreError as exc:
        print(f"rtscore: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  what to do: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtscore",
        description=(
            "Real-time ML scoring on Kafka: online features in Redis, model versions that "
            "swap without a restart, outcomes joined back, drift watched. Settings come from "
            "RTSCORE_* environment variables (see the README's Configuration); "
            "`rtscore COMMAND --help` shows a command's options."
        ),
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infra = sub.add_parser("infra", help="local single-node Kafka (KRaft) + Redis")
    infra.add_argument("action", choices=["up", "down", "status"])
    infra.set_defaults(handler=_infra)

    sim = sub.add_parser(
        "simulate", help="demo card transactions + delayed outcomes into the topics"
    )
    sim.add_argument("--days", type=int, default=35, help="days of history (default 35)")
    sim.add_argument("--live", action="store_true", help="then keep producing at --rate")
    sim.add_argument("--rate", type=float, default=200.0, help="live events/s (default 200)")
    sim.add_argument("--duration", type=float, default=None, help="live seconds (default: forever)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--reference", action="store_true", help="the handbook's full sizes")
    sim.add_argument("--no-history", action="store_true", help="skip the history, only live")
    sim.set_defaults(handler=_simulate)

    worker = sub.add_parser(
        "worker", help="run the stream processors: scoring, outcome join, drift (faust workers)"
    )
    worker.add_argument(
        "--processors",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=None,
        help="comma-separated subset of scoring,join,drift (default: all the pipeline can "
        "use); several run one process each",
    )
    worker.set_defaults(handler=_worker)

    train = sub.add_parser("train", help="train a model from the topics and register it")
    train.add_argument("--start", required=True, help="first training day, YYYY-MM-DD (UTC)")
    train.add_argument("--train-days", type=int, default=7)
    train.add_argument("--delay-days", type=int, default=7, help="gap = the label delay")
    train.add_argument("--test-days", type=int, default=7)
    train.add_argument(
        "--estimator",
        default=None,
        help="logistic_regression, random_forest or a classifier's dotted path "
        "(default: the pipeline's [model] estimator)",
    )
    train.add_argument("--promote", action="store_true", help="make it the champion")
    train.set_defaults(handler=_train)

    from streams import model_command

    model_command.add_parser(sub)

    bench = sub.add_parser(
        "bench", help="throughput, latency, CPU and RSS: ceiling vs naive vs the worker"
    )
    bench.add_argument("--events", type=int, default=60_000, help="backlog events (60,000)")
    bench.add_argument(
        "--naive-events", type=int, default=5_000, help="the naive contender's backlog (5,000)"
    )
    bench.add_argument(
        "--loads", default="0.25,0.5,0.8", help="offered loads, shares of rtscore's maximum"
    )
    bench.add_argument("--load-seconds", type=float, default=10.0, help="per load (10)")
    bench.add_argument(
        "--contenders", default="rtscore,ceiling,naive", help="any of rtscore,ceiling,naive"
    )
    bench.add_argument(
        "--rss-events", type=int, default=0, help="then N more events through rtscore, RSS sampled"
    )
    bench.add_argument(
        "--with-drift", action="store_true", help="also rtscore's maximum with drift beside it"
    )
    bench.add_argument("--quick", action="store_true", help="a small smoke run")
    bench.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(handler=_bench)

    from streams.drift.command import add_drift_parser

    add_drift_parser(sub)

    demo = sub.add_parser("demo", help="the fraud demo, end to end, on the local infra")
    demo.add_argument("--live-seconds", type=float, default=30.0)
    demo.add_argument("--rate", type=float, default=1000.0, help="live events/s")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)

    from streams.backtest.parser import add_backtest_parser
    from streams.replay.command import add_replay_parser

    add_replay_parser(sub)
    add_backtest_parser(sub)
    from streams.join.commands import add_join_commands

    add_join_commands(sub)
    return p


def _infra(settings: Settings, args: argparse.Namespace) -> int:
    from streams import localinfra

    action = {"up": localinfra.up, "down": localinfra.down}.get(args.action)
    statuses = action(settings) if action else localinfra.status(settings)
    for s in statuses:
        print(s)
    if args.action == "up":
        from streams.topics import ensure_topics

        created = asyncio.run(ensure_topics(settings))
        print(f"topics: {len(created)} created, prefix {settings.topic_prefix!r}")
    return 0 if args.action == "down" or all(s.state != "unhealthy" for s in statuses) else 1


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from streams.demo.feed import simulate_command

    return simulate_command(settings, args)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.pipeline import load_pipeline
    from streams.supervise import run_processors

    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    return run_processors(settings, pipeline, args.processors)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from models.from_topics import TrainPlan, train_from_topics
    from models.registry import Registry
    from streams.errors import ConfigError
    from streams.pipeline import load_pipeline

    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    try:
        start = dt.datetime.fromisoformat(args.start).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise ConfigError(f"--start {args.start!r} is not a date", hint="write YYYY-MM-DD") from exc
    plan = TrainPlan.by_days(
        int(start.timestamp() * 1000),
        args.train_days,
        args.delay_days,
        args.test_days,
        args.estimator,
    )
    version, metrics = asyncio.run(train_from_topics(settings, pipeline, plan))
    meta = version.metadata
    print(
        f"registered {version.name} v{version.version} ({meta['estimator']['estimator']}) "
        f"sha256 {version.sha256[:12]}"
    )
    print(json.dumps(metrics, indent=2))
    if args.promote:
        # Through the model-events topic, so running workers swap to it within seconds.
        from streams.model_command import change

        registry = Registry(settings.registry_root)
        state = change(
            settings, registry, pipeline, "promote", version.name, [str(version.version)]
        )
        print(f"{state.detail}; published to {settings.topics.model_events}")
    return 0


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from streams.bench import bench_command

    return bench_command(settings, args)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.demo.run import run_demo

    return run_demo(settings, args)


if __name__ == "__main__":
    sys.exit(main())
