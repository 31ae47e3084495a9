"""The drift processor: thin faust agents that turn batches of predictions, dead letters and
outcomes into window counts (:mod:`streams.drift.window_state`) and publish a DriftReport for
each window that every partition has passed. A window's rows are binned on, and compared with,
the profile of the version that decided its first counted prediction
(:mod:`streams.drift.references`), pinned in Redis so every worker and batch agree.

A batch's body never raises (``take_events`` acks a batch whatever happens): a record that
cannot be read is logged and counted; Redis being down pauses the batch and retries it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
import numpy as np
import redis

from streams.codecs import RecordCodec
from streams.drift.config import DriftConfig
from streams.drift.histogram import aggregate
from streams.drift.metrics import DriftMetrics
from streams.drift.references import References, first_deciders
from streams.drift.report import Reference, build_report
from streams.drift.tail import format_report
from streams.drift.window_state import Item, WindowState
from streams.errors import DependencyUnavailable, InvalidEvent
from streams.faust_app import processor_app
from streams.pipeline import Pipeline
from streams.publisher import AckedPublisher
from streams.settings import Settings
from streams.topics import EmptyPartitions
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class DriftProcessor:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        config: DriftConfig,
        references: References,
        state: WindowState,
        publisher: AckedPublisher,
        metrics: DriftMetrics,
        partitions: int,
        empty: EmptyPartitions | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.references = references
        self.state = state
        self.publisher = publisher
        self.metrics = metrics
        self.partitions = partitions
        self.topics = settings.topics
        # Partitions with an empty log do not hold windows open; read by the 5-s timer.
        self.empty = empty or EmptyPartitions(settings.kafka_bootstrap, [])
        self.predictions_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        self.dead_letter_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")
        self.report_codec = RecordCodec.from_file(settings.schemas_dir, "drift_report.avsc")
        spec = pipeline.outcomes
        self.outcome_decoder = (
            EventDecoder(spec, max_bytes=settings.max_event_bytes)
            if config.labels and spec is not None and spec.label_field and spec.event_time_field
            else None
        )
        # label drift waits for the outcomes: set by serve once their partitions are known
        self.outcome_partitions = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-drift")
        self._closing = asyncio.Lock()

    def window_of(self, t_ms: int) -> int:
        return t_ms - t_ms % self.config.window_ms

    # -- batches ---------------------------------------------------------------------------

    async def predictions(self, records: Sequence[Record]) -> None:
        await self._safely(self.topics.predictions, lambda: self._apply_predictions(records))
        await self.close_ready()

    async def dead_letters(self, records: Sequence[Record]) -> None:
        await self._safely(self.topics.dlq, lambda: self._apply_dead_letters(records))

    async def outcomes(self, records: Sequence[Record]) -> None:
        await self._safely(self.topics.outcomes, lambda: self._apply_outcomes(records))
        await self.close_ready()

    def _apply_predictions(self, records: Sequence[Record]) -> None:
        topic = self.topics.predictions
        width = len(self.pipeline.feature_names)
        rows: list[list[float]] = []
        scores: list[float] = []
        deciders: list[tuple[str, int]] = []
        items: list[Item] = []
        marks: dict[int, int] = {}
        for r in records:
            p = self._decode(self.predictions_codec, r)
            if p is None or len(p["features"]) != width:
                if p is not None:
                    self._skip(topic, r, f"{len(p['features'])} features, want {width}")
                continue
            t = int(p["event_time"])
            items.append(Item(r.partition, r.offset, self.window_of(t), len(rows)))
            rows.append(p["features"])
            scores.append(p["score"])
            deciders.append((p["model_name"], int(p["model_version"])))
            marks[r.partition] = max(marks.get(r.partition, t), t)
        X = np.asarray(rows, dtype=np.float64).reshape(-1, width)
        s = np.asarray(scores, dtype=np.float64)
        refs = self._pinned_references(items, deciders)

        def counts(idx: Sequence[int]) -> dict[str, float]:
            # apply() passes the rows of one window at a time
            ref = refs[items[idx[0]].window] if idx else self.references.champion
            return aggregate(ref.layout, X[list(idx)], s[list(idx)])

        self._count(topic, len(items), self.state.apply(topic, items, counts))
        self.state.raise_watermarks(marks)
        self.empty.saw(topic, marks)

    def _pinned_references(
        self, items: Sequence[Item], deciders: Sequence[tuple[str, int]]
    ) -> dict[int, Reference]:
        """Per window of the batch, the reference its rows are binned on: the version pinned
        to it, or this batch's first decider of it when no batch pinned it yet."""
        first = first_deciders([i.window for i in items], deciders)
        # a version without a usable profile falls back: pin the one actually used
        candidates = {w: self.references.get(*d) for w, d in first.items()}
        pins = self.state.pin({w: (r.model_name, r.model_version) for w, r in candidates.items()})
        out: dict[int, Reference] = {}
        for w, ref in candidates.items():
            pinned = pins.get(w)  # None: the window is reported, its rows are late
            out[w] = self.references.get(*pinned) if pinned else ref
        return out

    def _apply_dead_letters(self, records: Sequence[Record]) -> None:
        topic = self.topics.dlq
        reasons: list[str] = []
        items: list[Item] = []
        for r in records:
            d = self._decode(self.dead_letter_codec, r)
            # only this pipeline's input events: outcomes and other pipelines are not rows
            if d is None or d["pipeline"] != self.pipeline.name:
                continue
            if d["source_topic"] != self.topics.events:
                continue
            t = int(d["source_timestamp"])
            items.append(Item(r.partition, r.offset, self.window_of(t), len(reasons)))
            reasons.append(d["reason"])

        def counts(idx: Sequence[int]) -> dict[str, float]:
            out: dict[str, float] = {}
            for i in idx:
                out[f"dlq:{reasons[i]}"] = out.get(f"dlq:{reasons[i]}", 0.0) + 1.0
            return out

        self._count(topic, len(items), self.state.apply(topic, items, counts))

    def _apply_outcomes(self, records: Sequence[Record]) -> None:
        decoder, spec = self.outcome_decoder, self.pipeline.outcomes
        if decoder is None or spec is None:
            return
        topic = self.topics.outcomes
        positive: list[float] = []
        items: list[Item] = []
        marks: dict[int, int] = {}
        for r in records:
            try:
                o = decoder.decode(r.value, r.headers)
            except InvalidEvent:
                continue  # the scoring worker dead-letters invalid outcomes
            t = int(o[str(spec.event_time_field)])
            known = int(o[spec.time_field])
            marks[r.partition] = max(marks.get(r.partition, known), known)
            items.append(Item(r.partition, r.offset, self.window_of(t), len(positive)))
            positive.append(1.0 if o[str(spec.label_field)] in (1, True) else 0.0)

        def counts(idx: Sequence[int]) -> dict[str, float]:
            return {"pos": sum(positive[i] for i in idx)}

        self._count(topic, len(items), self.state.apply(topic, items, counts, labels=True))
        self.state.raise_watermarks(marks, outcomes=True)
        self.empty.saw(topic, marks)

    # -- closing windows ---------------------------------------------------------------------

    async def refresh_empty(self) -> None:
        """Read which input partitions are empty (from the timer; never raises)."""
        await self.empty.refresh()

    async def close_ready(self) -> None:
        """Report every window all partitions have passed; this worker reports those it claims."""
        try:
            await self._close_ready()
        except Exception:
            # Never out of an agent or the timer: a claimed window's lease expires and the
            # next attempt (a batch, or the timer within 5 s) reports it.
            log.exception("drift: reporting windows failed; retrying on the next batch")

    async def _close_ready(self) -> None:
        async with self._closing:
            claimed = await self._run(self._claim)
            for window, label_window, report in claimed:
                value = self.report_codec.encode(report)
                key = self.pipeline.name.encode()
                await self.publisher.publish(
                    [(self.topics.drift, key, value, report["window_end"])]
                )
                await self._run(lambda w=window, lw=label_window: self.state.finish(w, lw))  # type: ignore[misc]
                self.metrics.observe(report)
                # formatted first: the log's repeat throttle keys on the message text
                for line in format_report(report):
                    log.info(line)

    def _claim(self) -> list[tuple[int, int | None, dict[str, Any]]]:
        c = self.config
        out = []
        closable = self.state.closable(
            self.partitions,
            c.window_ms,
            c.grace_ms,
            self.outcome_partitions,
            empty=self.empty.empty(self.topics.predictions),
            outcome_empty=self.empty.empty(self.topics.outcomes),
        )
        for window in closable:
            if not self.state.claim(window):
                continue
            counts = self.state.counts(window)
            label_window = window - c.label_lag_windows * c.window_ms
            label_rows = self.state.counts(label_window).get("rows", 0.0)
            labels = None
            if label_rows and self.outcome_decoder is not None:
                pos = self.state.counts(label_window, labels=True).get("pos", 0.0)
                labels = (label_window, {"rows": label_rows, "pos": pos})
            pinned = self.state.pinned(window)
            # no pin: only dead letters were counted in it
            reference = self.references.get(*pinned) if pinned else self.references.champion
            report = build_report(
                self.pipeline.name,
                reference,
                c,
                window,
                counts,
                labels,
                created_ms=int(time.time() * 1000),
            )
            if self.outcome_decoder is None:
                # No label drift: no later window reads this one's rows; forget it now.
                forget: int | None = window
            else:
                forget = label_window if labels else None
            out.append((window, forget, report))
        return out

    # -- plumbing ------------------------------------------------------------------------

    async def _safely(self, topic: str, step: Callable[[], None]) -> None:
        try:
            await self._run(step)
        except Exception:
            # Never let the batch body raise: take_events would ack it anyway.
            log.exception("drift: a batch of %s failed; its records are not counted", topic)
            self.metrics.skipped.labels(self.pipeline.name, topic).inc()

    async def _run(self, step: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                return await loop.run_in_executor(self.executor, step)
            except (DependencyUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("drift paused: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _decode(self, codec: RecordCodec, r: Record) -> dict[str, Any] | None:
        try:
            return codec.decode(r.value or b"")
        except InvalidEvent as exc:
            self._skip(r.topic, r, exc.message)
            return None

    def _skip(self, topic: str, r: Record, why: str) -> None:
        log.warning("drift skips %s[%d]@%d: %s", topic, r.partition, r.offset, why)
        self.metrics.skipped.labels(self.pipeline.name, topic).inc()

    def _count(self, topic: str, applied: int, late: int) -> None:
        self.metrics.records.labels(self.pipeline.name, topic).inc(applied - late)
        if late:
            self.metrics.late.labels(self.pipeline.name, topic).inc(late)


def build_drift_app(
    settings: Settings, processor: DriftProcessor, publisher: AckedPublisher
) -> faust.App:
    """The drift processor's own faust app and consumer group, concurrency 1 (faust #606)."""
    app = processor_app(settings, processor.pipeline, "drift")

    def agent_for(topic_name: str, process: Callable[[Sequence[Record]], Any]) -> None:
        topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

        async def consume(stream: faust.StreamT) -> None:
            await publisher.start()
            try:
                async for batch in stream.take_events(  # type: ignore[attr-defined]
                    settings.batch_max, within=settings.batch_within_s
                ):
                    await process(
                        [
                            Record(e.message.topic, e.message.partition, e.message.offset, e.value)
                            for e in batch
                        ]
                    )
            finally:
                await publisher.stop()

        app.agent(topic, name=f"rtscore.drift.{topic_name}", concurrency=1)(consume)

    agent_for(settings.topics.predictions, processor.predictions)
    agent_for(settings.topics.dlq, processor.dead_letters)
    if processor.outcome_decoder is not None:
        agent_for(settings.topics.outcomes, processor.outcomes)

    # A claimer that died leaves its lease to expire; look for such windows now and then,
    # and for partitions that became empty or stopped being so (they may close windows now).
    @app.timer(5.0)
    async def close_ready() -> None:
        await processor.refresh_empty()
        await processor.close_ready()

    return app
