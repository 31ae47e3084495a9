"""The `rtscore drift` sub-commands: `tail` (print reports) and `run` (the processor alone)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streams.settings import Settings


def add_drift_parser(sub: Any) -> None:
    """Add `rtscore drift tail|run` to the CLI's sub-parsers."""
    drift = sub.add_parser("drift", help="drift reports: tail them, or run the drift processor")
    actions = drift.add_subparsers(dest="drift_action", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="print drift reports and alerts as they arrive")
    tail.add_argument("--from-beginning", action="store_true", help="every report kept")
    tail.add_argument("--json", action="store_true", help="one JSON report per line")
    tail.add_argument("--count", type=int, default=None, help="stop after this many reports")
    tail.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many quiet seconds"
    )
    tail.set_defaults(handler=_tail)
    run = actions.add_parser("run", help="run the drift processor alone (rtscore worker runs it)")
    run.set_defaults(handler=_run)


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    from streams.drift.tail import tail

    asyncio.run(
        tail(
            settings,
            from_beginning=args.from_beginning,
            as_json=args.json,
            count=args.count,
            idle_timeout_s=args.idle_timeout,
        )
    )
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from streams.drift.serve import run_drift

    run_drift(settings)
    return 0
