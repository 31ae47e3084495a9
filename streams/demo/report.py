"""The demo's closing report: every count reconciled, then what monitoring saw — the hot swap,
shadow against champion, online performance per day and drift per week."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import numpy as np

from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.simulator import Simulation
from streams.drift.tail import format_report
from streams.performance.show import format_table, latest_reports
from streams.pipeline import Pipeline
from streams.settings import Settings

PERFORMANCE_DAYS = 4  # windows shown; `rtscore performance` shows more


async def _decoded(settings: Settings, topic: str, schema: str) -> list[dict[str, Any]]:
    codec = RecordCodec.from_file(settings.schemas_dir, schema)
    data = await read_range(settings.kafka_bootstrap, topic)
    return [codec.decode(value) for _key, value, *_ in data.records if value is not None]


async def report(
    settings: Settings,
    pipeline: Pipeline,
    sim: Simulation,
    *,
    n_valid: int,
    bad: list[tuple[dict[str, Any], bytes, str]],
    shift_from_ms: int,
    swap_published_ms: int | None,
    train_start_ms: int,
) -> bool:
    topics = settings.topics
    events = await read_range(settings.kafka_bootstrap, topics.events)
    predictions = await _decoded(settings, topics.predictions, "prediction.avsc")
    letters = await _decoded(settings, topics.dlq, "dead_letter.avsc")
    labeled = await _decoded(settings, topics.labeled, "labeled_prediction.avsc")
    drift = await _decoded(settings, topics.drift, "drift_report.avsc")
    performance = await _decoded(settings, topics.performance, "performance_report.avsc")

    ok = _reconcile(events.records, predictions, letters, labeled, n_valid, bad)
    _swap(predictions, swap_published_ms)
    _throughput(predictions)
    _examples(predictions, letters, sim)
    _performance(performance, train_start_ms)
    _drift(drift, shift_from_ms)
    return ok


def _reconcile(
    events: list[Any],
    predictions: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    labeled: list[dict[str, Any]],
    n_valid: int,
    bad: list[tuple[dict[str, Any], bytes, str]],
) -> bool:
    distinct = {p["prediction_id"] for p in predictions}
    scoring_letters = [d for d in letters if d["stage"] != "join"]
    join_letters = Counter(d["reason"] for d in letters if d["stage"] == "join")
    by_reason = Counter(d["reason"] for d in scoring_letters)
    expected_reasons = Counter(reason for _b, _d, reason in bad)
    labeled_ids = Counter(r["prediction_id"] for r in labeled)
    status = Counter(r["status"] for r in labeled)
    scored_ok = (
        len(events) == n_valid + len(bad)
        and len(distinct) == n_valid
        and by_reason == expected_reasons
    )
    # Each prediction is labelled at most once; the rest are still inside their label window.
    labeled_ok = max(labeled_ids.values(), default=1) == 1 and set(labeled_ids) <= distinct
    print(f"  events in          {len(events):>9,}  ({n_valid:,} valid + {len(bad)} invalid)")
    print(f"  predictions out    {len(predictions):>9,}  ({len(distinct):,} distinct ids)")
    print(f"  dead letters out   {len(scoring_letters):>9,}  {dict(sorted(by_reason.items()))}")
    print(
        f"  labeled            {len(labeled):>9,}  ({status['matched']:,} matched an outcome, "
        f"{status['expired']:,} expired: no chargeback in 30 days = legitimate; "
        f"{len(distinct) - len(labeled_ids):,} still inside their label window)"
    )
    if join_letters:
        print(f"  join dead letters  {sum(join_letters.values()):>9,}  {dict(join_letters)}")
    print(f"  reconciled         {'yes' if scored_ok and labeled_ok else 'NO'}")
    return scored_ok and labeled_ok


def _swap(predictions: list[dict[str, Any]], published_ms: int | None) -> None:
    by_version = Counter(
        f"v{p['model_version']}"
        + (f" (shadow v{p['shadows'][0]['model_version']})" if p["shadows"] else "")
        for p in predictions
    )
    print(
        "\n  decisions by model version: " + ", ".join(f"{k}: {n:,}" for k, n in by_version.items())
    )
    if published_ms is None or not predictions:
        return
    last_version = max(predictions, key=lambda p: p["scored_time"])["model_version"]
    after = [p["scored_time"] for p in predictions if p["model_version"] == last_version]
    first_new = min(t for t in after if t >= published_ms - 1000) if after else None
    if first_new is not None:
        print(
            f"  hot swap: first v{last_version} decision {max(0, first_new - published_ms)} ms "
            "after the promotion was published (no restart)"
        )


def _throughput(predictions: list[dict[str, Any]]) -> None:
    scored = np.array(sorted(p["scored_time"] for p in predictions), dtype=np.int64)
    latency = np.array([p["batch_latency_ms"] for p in predictions])
    sizes = np.array([p["batch_size"] for p in predictions])
    print(
        f"  batches: mean size {sizes.mean():.0f} events, scoring time per batch "
        f"p50 {np.percentile(latency, 50):.1f} ms, p99 {np.percentile(latency, 99):.1f} ms"
    )
    if len(scored) > 1 and scored[-1] > scored[0]:
        window = 5000  # backlog throughput: predictions scored within the densest 5 seconds
        right = np.searchsorted(scored, scored + window)
        peak = int((right - np.arange(len(scored))).max())
        print(f"  peak throughput: {peak / (window / 1000):,.0f} events/s (densest 5 s)")


def _examples(
    predictions: list[dict[str, Any]], letters: list[dict[str, Any]], sim: Simulation
) -> None:
    top = sorted(predictions, key=lambda p: -p["score"])[:5]
    print("\n  highest scores (is_fraud from the simulator's ground truth):")
    print(
        f"  {'transaction':>11} {'customer':>8} {'amount':>9} {'time (UTC)':>19} "
        f"{'score':>6} {'model':>9} fraud"
    )
    for p in top:
        row = int(p["event_id"])
        when = dt.datetime.fromtimestamp(p["event_time"] / 1000, dt.UTC)
        print(
            f"  {row:>11} {p['entity_key']:>8} {sim.tx_amount[row]:>9.2f} "
            f"{when:%Y-%m-%d %H:%M:%S} {p['score']:>6.3f} "
            f"{p['model_name'] + ' v' + str(p['model_version']):>9} {bool(sim.is_fraud[row])}"
        )
    print("\n  a dead letter of each reason:")
    seen: set[str] = set()
    for d in letters:
        if d["reason"] not in seen:
            seen.add(d["reason"])
            print(
                f"  - [{d['stage']}/{d['reason']}] partition {d['source_partition']} offset "
                f"{d['source_offset']}: {d['error'][:150]}"
            )


def _performance(reports: list[dict[str, Any]], train_start_ms: int) -> None:
    """The last closed days before the training range: the models never saw their events."""
    unseen = [r for r in reports if r["window_start"] < train_start_ms]
    train_start = dt.datetime.fromtimestamp(train_start_ms / 1000, dt.UTC)
    print(
        f"\n  online performance: {len({r['window_start'] for r in reports})} daily windows closed "
        "so far (a day closes once its 30-day label window has passed); champion decisions "
        f"beside the shadow on the last {PERFORMANCE_DAYS} days before the training range "
        f"({train_start:%Y-%m-%d}):"
    )
    if not unseen:
        print("  (none yet)")
        return
    for line in format_table(latest_reports(unseen, PERFORMANCE_DAYS)).splitlines():
        print(f"  {line}")


def _drift(reports: list[dict[str, Any]], shift_from_ms: int) -> None:
    shift = dt.datetime.fromtimestamp(shift_from_ms / 1000, dt.UTC)
    print(
        f"\n  drift, one report per weekly window (amounts x1.5 from {shift:%Y-%m-%d %H:%M}; "
        "the first weeks warn while the 30-day windows fill):"
    )
    if not reports:
        print("  (none yet)")
    for rep in sorted(reports, key=lambda r: r["window_start"]):
        lines = format_report(rep)
        print(f"  {lines[0]}")
        for line in lines[1:4]:
            print(f"  {line}")
        if len(lines) > 4:
            print(f"    … {len(lines) - 4} more")
