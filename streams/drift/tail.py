"""`rtscore drift tail`: print drift reports as they arrive, one line per window plus a line
per feature that is not ok."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.codecs import RecordCodec
from streams.settings import Settings


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def _num(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_report(report: Mapping[str, Any]) -> list[str]:
    """The readable lines of one report."""
    n_features = len(report["features"])
    in_alert = sum(1 for f in report["features"] if f["status"] == "alert")
    lines = [
        f"{_day(report['window_start'])} .. {_day(report['window_end'])}  "
        f"{report['status'].upper():5}  rows {report['rows']:,}  "
        f"features in alert {in_alert}/{n_features}  "
        f"model {report['model_name']} v{report['model_version']}"
    ]
    for f in [*report["features"], report["score"]]:
        if f["status"] == "ok":
            continue
        if f["kind"] == "categorical":
            detail = (
                f"js={_num(f['js_distance'])} chi2 p={_num(f['chi_square_p_value'], '.2g')} "
                f"new={_num(f['new_category_share'], '.1%')}"
            )
        else:
            detail = (
                f"psi={_num(f['psi'])} ks={_num(f['ks_statistic'])} "
                f"(p={_num(f['ks_p_value'], '.2g')}) js={_num(f['js_distance'])} "
                f"w={_num(f['wasserstein_normed'])} "
                f"out_of_range={_num(f['out_of_range_rate'], '.1%')}"
            )
        lines.append(
            f"  {f['status']:5} {f['name']}  {detail} "
            f"missing={_num(f['missing_rate'], '.1%')}  [{', '.join(f['reasons'])}]"
        )
    for d in report["dead_letters"]:
        if d["status"] != "ok":
            lines.append(
                f"  {d['status']:5} dead letters {d['reason']}: {d['count']:,} "
                f"({d['rate']:.1%} of input)"
            )
    labels = report["labels"]
    if labels is not None and labels["status"] != "ok":
        lines.append(
            f"  {labels['status']:5} labels of {_day(labels['window_start'])}: rate "
            f"{labels['label_rate']:.2%} vs reference {labels['reference_label_rate']:.2%} "
            f"(p={labels['p_value']:.2g})"
        )
    return lines


async def tail(
    settings: Settings,
    *,
    from_beginning: bool,
    as_json: bool,
    count: int | None = None,
    idle_timeout_s: float | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Print reports until ``count`` were printed or none came for ``idle_timeout_s``."""
    codec = RecordCodec.from_file(settings.schemas_dir, "drift_report.avsc")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    printed = 0
    try:
        # rtscore creates the drift topic with one partition: reports stay in window order
        tps = [TopicPartition(settings.topics.drift, 0)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        idle_since = time.monotonic()
        while count is None or printed < count:
            batches = await consumer.getmany(timeout_ms=500)
            messages = [m for batch in batches.values() for m in batch]
            if not messages:
                if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            for m in messages:
                report = codec.decode(m.value or b"")
                if as_json:
                    out(json.dumps(report, sort_keys=True))
                else:
                    for line in format_report(report):
                        out(line)
                printed += 1
                if count is not None and printed >= count:
                    break
    finally:
        await consumer.stop()
    return printed
