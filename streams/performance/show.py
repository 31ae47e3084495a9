"""`rtscore performance`: the latest performance windows from the performance topic, as a table."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.settings import Settings

COLUMNS = (
    ("model", 12),
    ("ver", 4),
    ("variant", 11),
    ("role", 8),
    ("preds", 7),
    ("labeled", 7),
    ("pos", 5),
    ("rate", 6),
    ("delay_h", 7),
    ("auc", 6),
    ("ap", 6),
    ("logloss", 7),
    ("brier", 6),
    ("prec", 6),
    ("recall", 6),
    ("cp@k", 6),
)


def latest_reports(records: list[dict[str, Any]], windows: int) -> list[dict[str, Any]]:
    """The reports of the ``windows`` latest windows, one per scorer (the last one written)."""
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rep in records:
        key = (rep["window_start"], rep["model_name"], rep["model_version"], rep["variant"])
        last[(*key, rep["role"])] = rep
    starts = sorted({k[0] for k in last})[-windows:] if windows > 0 else []
    return [last[k] for k in sorted(last) if k[0] in starts]


def format_table(reports: list[dict[str, Any]]) -> str:
    header = "window (UTC)       " + " ".join(name.rjust(width) for name, width in COLUMNS)
    lines = [header]
    for rep in reports:
        start = dt.datetime.fromtimestamp(rep["window_start"] / 1000, dt.UTC)
        delay = rep["mean_label_delay_ms"]
        cells = (
            rep["model_name"],
            rep["model_version"],
            rep["variant"],
            rep["role"],
            rep["predictions"],
            rep["labeled"],
            rep["positives"],
            _num(rep["label_rate"], 4),
            _num(None if delay is None else delay / 3_600_000, 1),
            _num(rep["auc_roc"], 3),
            _num(rep["average_precision"], 3),
            _num(rep["log_loss"], 4),
            _num(rep["brier"], 4),
            _num(rep["precision"], 3),
            _num(rep["recall"], 3),
            _num(rep["card_precision_at_k"], 3),
        )
        row = " ".join(str(c).rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True))
        lines.append(f"{start:%Y-%m-%d %H:%M}   {row}")
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def performance_command(settings: Settings, args: argparse.Namespace) -> int:
    codec = RecordCodec.from_file(settings.schemas_dir, "performance_report.avsc")
    sliced = asyncio.run(
        read_range(settings.kafka_bootstrap, settings.topics.performance, idle_timeout_s=10.0)
    )
    records = [codec.decode(value) for _, value, _, _, _ in sliced.records if value is not None]
    if not records:
        print(
            f"no performance windows on {settings.topics.performance} yet: a window is "
            "reported once the join's watermark is past its end + [join] max_delay + grace"
        )
        return 0
    reports = latest_reports(records, args.windows)
    print(format_table(reports))
    if reports and reports[0]["k"] is not None:
        print(f"threshold {reports[0]['threshold']}, cp@k = card precision at k={reports[0]['k']}")
    return 0
