"""`rtscore backtest`: read a range (and its warm-up), recompute its features offline, score
every listed version, label with the join policy, and write report.html + report.json.

It reads the topics and the registry and writes only into ``--out``: no topic, no Redis key.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import Registry
from streams.backtest import evaluate, report_html, report_json
from streams.backtest.dataset import Dataset, read_dataset
from streams.backtest.score import ScoredVersion, load_versions, parse_refs, score_versions
from streams.errors import ConfigError
from streams.pipeline import Pipeline, load_pipeline
from streams.progress import Progress
from streams.replay.ranges import parse_time
from streams.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_K = 100  # Card Precision@k of the fraud demo (Le Borgne et al.)


@dataclass(frozen=True)
class BacktestResult:
    data: Dataset
    versions: list[ScoredVersion]
    report: dict[str, Any]


def card_k(pipeline: Pipeline) -> int:
    """k of Card Precision@k: ``[backtest] card_precision_k`` of the pipeline file."""
    k = pipeline.sections.get("backtest", {}).get("card_precision_k", DEFAULT_K)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(
            f"{pipeline.source}: [backtest] card_precision_k is {k!r}",
            hint="write a positive integer, e.g. card_precision_k = 100",
        )
    return k


async def run_backtest(
    settings: Settings,
    pipeline: Pipeline,
    start_ms: int,
    end_ms: int,
    refs: list[str],
    *,
    say: Callable[[str], None] = lambda _: None,
    on_fetch: Callable[[int], None] | None = None,
) -> BacktestResult:
    started, cpu = time.perf_counter(), time.process_time()
    # Versions first: an unknown one is an error before minutes of reading.
    registry = Registry(settings.registry_root)
    loaded = load_versions(registry, pipeline, refs)
    k = card_k(pipeline)
    data = await read_dataset(settings, pipeline, start_ms, end_ms, progress=say, on_fetch=on_fetch)
    features_done = time.perf_counter()
    if data.n_rows == 0:
        raise ConfigError(
            f"no events in [{start_ms}, {end_ms}) on {settings.topics.events}",
            hint="check the range (dates are UTC) and RTSCORE_TOPIC_PREFIX",
        )
    versions = score_versions(loaded, data.X)
    scored = time.perf_counter()
    say(f"scored {data.n_rows:,} events with {len(versions)} version(s); computing the report …")
    figures = evaluate.evaluate(data, versions, k)
    # Drift against the training data of the first version listed, as the drift processor
    # compares a window with the champion's profile; without one, against the first day.
    profile = registry.profile(pipeline.model_name, loaded[0][1].version.version)
    drift = evaluate.drift(data, pipeline.feature_names, profile)
    if profile is not None:
        drift["reference"] = f"training data of {versions[0].label} (its reference profile)"
    done = time.perf_counter()
    timing = {
        "read_and_features": round(features_done - started, 3),
        "score": round(scored - features_done, 3),
        "metrics": round(done - scored, 3),
        "total": round(done - started, 3),
        "events_per_s": round(data.events_read / max(done - started, 1e-9), 1),
        # on a shared machine the wall clock counts other processes' time too
        "cpu": round(time.process_time() - cpu, 3),
        "events_per_cpu_s": round(data.events_read / max(time.process_time() - cpu, 1e-9), 1),
    }
    doc = report_json.report(pipeline, data, versions, figures, drift, timing)
    return BacktestResult(data, versions, doc)


def write_outputs(result: BacktestResult, out: Path, scores: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.html"]
    report_json.write(written[0], result.report)
    written[1].write_text(report_html.render(report_json.clean(result.report)))
    if scores:
        written.append(out / "scores.csv")
        with open(written[-1], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["event_id", "event_time", "label", *(v.label for v in result.versions)])
            d = result.data
            columns = [v.scores.tolist() for v in result.versions]
            for i, (eid, t, y) in enumerate(
                zip(d.event_ids.tolist(), d.event_time_ms.tolist(), d.labels.tolist(), strict=True)
            ):
                label = "" if y != y else int(y)
                w.writerow([eid, t, label, *(repr(c[i]) for c in columns)])
    return written


def backtest_command(settings: Settings, args: argparse.Namespace) -> int:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    start_ms, end_ms = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    refs = parse_refs(args.models)
    stages = _Stages()
    result = asyncio.run(
        run_backtest(
            settings, pipeline, start_ms, end_ms, refs, say=stages.say, on_fetch=stages.fetched
        )
    )
    out = args.out or settings.home / "backtests" / f"{pipeline.name}-{args.start}-{args.end}"
    paths = write_outputs(result, out, args.scores)
    print(_summary(result.report))
    for path in paths:
        print(f"wrote {path}")
    return 0


class _Stages:
    """Stage messages on stdout; a progress bar while records are fetched."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.done()
            self.bar = None
        print(message, flush=True)

    def fetched(self, count: int) -> None:
        if self.bar is None:
            self.bar = Progress("  records fetched")
        self.bar.update(count)


def _summary(doc: dict[str, Any]) -> str:
    rows, timing, figures = doc["rows"], doc["timing_s"], doc["metrics"]
    labels = list(figures["models"])
    width = max(12, *(len(label) + 2 for label in labels))
    lines = [
        f"{rows['events']:,} events in range ({rows['labelled']:,} labelled, "
        f"{rows['positives']:,} positive); {rows['events_read_with_warm_up']:,} read with the "
        f"warm-up in {timing['total']:.1f} s = {timing['events_per_s']:,.0f} events/s "
        f"({timing['events_per_cpu_s']:,.0f} per CPU second)",
        f"{'':<22}" + "".join(f"{label:>{width}}" for label in labels),
    ]
    for key, title, _ in report_html.METRICS:
        values = [figures["models"][label]["overall"][key] for label in labels]
        name = title.replace("@k", f"@{figures['k']}")
        lines.append(
            f"{name:<22}" + "".join(f"{'-' if v != v else f'{v:.4f}':>{width}}" for v in values)
        )
    return "\n".join(lines)
