"""The `rtscore backtest` arguments, apart from the command so that building the CLI's parser
does not import scikit-learn (every `rtscore` command would pay for it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.settings import Settings


def add_backtest_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backtest", help="score model versions over a past range of the topics, side by side"
    )
    p.add_argument("--from", dest="start", required=True, help="range start (UTC date/time)")
    p.add_argument("--to", dest="end", required=True, help="range end, exclusive")
    p.add_argument(
        "--models",
        default="champion",
        help="versions or aliases, e.g. champion,3 (default: champion)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default: home/backtests/…)"
    )
    p.add_argument(
        "--scores", action="store_true", help="also write every row's scores (scores.csv)"
    )
    p.set_defaults(handler=_backtest)


def _backtest(settings: Settings, args: argparse.Namespace) -> int:
    from streams.backtest.command import backtest_command

    return backtest_command(settings, args)
