"""The `rtscore join` and `rtscore performance` sub-commands (added to the CLI's parser)."""

from __future__ import annotations

import argparse
from typing import Any

from streams.settings import Settings


def add_join_commands(sub: Any) -> None:
    """Register the commands on the CLI's sub-parsers (``argparse._SubParsersAction``)."""
    join = sub.add_parser("join", help="run the outcome join and performance windows alone")
    join.set_defaults(handler=_join)
    perf = sub.add_parser("performance", help="latest online performance windows per model")
    perf.add_argument("--windows", type=int, default=7, help="how many windows (default 7)")
    perf.set_defaults(handler=_performance)


def _join(settings: Settings, args: argparse.Namespace) -> int:
    from streams.join.serve import run_join

    run_join(settings)
    return 0


def _performance(settings: Settings, args: argparse.Namespace) -> int:
    from streams.performance.show import performance_command

    return performance_command(settings, args)
