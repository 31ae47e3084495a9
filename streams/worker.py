"""The worker's processors: faust agents that move micro-batches between topics and call
the pure parts (:class:`streams.scoring.BatchScorer`, the online feature store).

At-least-once with idempotent effects: ``take_events`` acks a batch's offsets only after the
agent's loop body returns, and the body returns only once every output of the batch is
acknowledged by the broker. A broker or Redis outage pauses the batch and retries it;
nothing is acked before its outputs are published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust

from streams.codecs import RecordCodec
from streams.errors import DependencyUnavailable, InvalidEvent
from streams.features.online import OnlineStore
from streams.metrics import WorkerMetrics
from streams.pacing import PartitionPacer, pacing_budget
from streams.pipeline import Pipeline
from streams.publisher import AckedPublisher, Outgoing
from streams.scoring import BatchScorer, InputRecord, ScoredBatch, dead_letter
from streams.settings import Settings
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchRunner:
    """Runs a batch step in the worker's one thread, pausing while a dependency is down."""

    def __init__(self, pipeline: str, metrics: WorkerMetrics) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        # One thread: decode, Redis and predict_proba stay off the event loop, in order.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-batch")

    async def run(self, step: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                return await loop.run_in_executor(self.executor, step)
            except DependencyUnavailable as exc:
                # Nothing of this batch is acked: retry it once the dependency is back. The
                # store dedupes by event id, so a partly applied batch is safe to repeat.
                self.metrics.dependency_waits.labels(self.pipeline).inc()
                log.warning("paused: %s; retrying in %.1fs", exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class ScoringProcessor:
    """Scores a micro-batch of events and publishes its predictions and dead letters."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        scorer: BatchScorer,
        metrics: WorkerMetrics,
        runner: BatchRunner,
        publisher: AckedPublisher,
    ) -> None:
        self.pipeline = pipeline
        self.scorer = scorer
        self.metrics = metrics
        self.runner = runner
        self.publisher = publisher
        self.topics = settings.topics
        budget = pacing_budget(pipeline)
        self.pacer = PartitionPacer(self.topics.events, budget) if budget is not None else None
        self.prediction_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        self.dead_letter_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")

    async def process(self, records: Sequence[InputRecord]) -> None:
        started = time.perf_counter()
        scored, outgoing = await self.runner.run(lambda: self._score(records))
        await self.publisher.publish(outgoing)
        self._count(scored, len(records), time.perf_counter() - started)
        if self.pacer is not None:
            times = {id(record): p["event_time"] for record, p in scored.predictions}
            self.pacer.observe(records, [times.get(id(record)) for record in records])

    async def pace(self, consumer: Any) -> None:
        """Hold back partitions that ran ahead (see :mod:`streams.pacing`)."""
        if self.pacer is not None:
            await self.pacer.pace(consumer)

    def _score(self, records: Sequence[InputRecord]) -> tuple[ScoredBatch, list[Outgoing]]:
        try:
            scored = self.scorer.score(records)
        except DependencyUnavailable:
            raise
        except Exception as exc:
            # A bug must not lose the batch (take_events acks it whatever happens):
            # keep every record whole in the dead-letter topic, where it can be replayed.
            log.exception("scoring a batch of %d failed; dead-lettering it", len(records))
            error = InvalidEvent(
                "internal_error",
                f"rtscore failed on this batch: {exc!r}. This is a bug, not bad input: "
                "report it; replay the record from the dead-letter topic once fixed.",
                stage="score",
            )
            scored = ScoredBatch(dead_letters=[(record, error) for record in records])
        outgoing: list[Outgoing] = []
        encode_prediction = self.prediction_codec.encode
        for record, prediction in scored.predictions:
            outgoing.append(
                (
                    self.topics.predictions,
                    record.key,
                    encode_prediction(prediction),
                    prediction["event_time"],
                )
            )
        outgoing.extend(
            dead_letters(scored, self.pipeline.name, self.dead_letter_codec, self.topics.dlq)
        )
        return scored, outgoing

    def _count(self, scored: ScoredBatch, size: int, seconds: float) -> None:
        name = self.pipeline.name
        m = self.metrics
        m.events_in.labels(name).inc(size)
        served = Counter(
            (p["model_name"], p["model_version"], p["variant"]) for _, p in scored.predictions
        )
        for (model, version, variant), count in served.items():
            m.predictions_out.labels(name, model, str(version), variant).inc(count)
        for (model, version, variant), count in scored.shadow_scores.items():
            m.shadow_scores.labels(name, model, str(version), variant).inc(count)
        if scored.shadow_failures:
            m.shadow_failures.labels(name).inc(scored.shadow_failures)
        if scored.late:
            m.late_events.labels(name).inc(scored.late)
        for _, error in scored.dead_letters:
            m.dead_letters.labels(name, error.stage, error.reason).inc()
        m.batch_size.labels(name).observe(size)
        m.batch_latency.labels(name).observe(seconds)


class OutcomeProcessor:
    """Feeds outcome events to the online store's label state; invalid ones are dead-lettered."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        store: OnlineStore,
        metrics: WorkerMetrics,
        runner: BatchRunner,
        publisher: AckedPublisher,
    ) -> None:
        assert pipeline.outcomes is not None, "only built for pipelines with outcomes"
        self.pipeline = pipeline
        self.decoder = EventDecoder(pipeline.outcomes, max_bytes=settings.max_event_bytes)
        self.store = store
        self.metrics = metrics
        self.runner = runner
        self.publisher = publisher
        self.dlq = settings.topics.dlq
        self.dead_letter_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")

    async def process(self, records: Sequence[InputRecord]) -> None:
        scored = ScoredBatch()
        valid: list[dict[str, Any]] = []
        for record in records:
            try:
                valid.append(self.decoder.decode(record.value, record.headers))
            except InvalidEvent as exc:
                scored.dead_letters.append((record, exc))
        if valid:
            await self.runner.run(lambda: self.store.add_outcomes(valid))
        if scored.dead_letters:
            await self.publisher.publish(
                dead_letters(scored, self.pipeline.name, self.dead_letter_codec, self.dlq)
            )
        self.metrics.outcomes_in.labels(self.pipeline.name).inc(len(valid))
        for _, error in scored.dead_letters:
            self.metrics.dead_letters.labels(self.pipeline.name, error.stage, error.reason).inc()


def dead_letters(
    scored: ScoredBatch, pipeline: str, codec: RecordCodec, topic: str
) -> list[Outgoing]:
    return [
        (topic, record.key, codec.encode(dead_letter(record, error, pipeline)), record.timestamp_ms)
        for record, error in scored.dead_letters
    ]


def input_record(event: Any) -> InputRecord:
    """The parts of a faust event a prediction or a dead letter needs."""
    message = event.message
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        # faust turns the record's millisecond timestamp into float seconds; round it back.
        timestamp_ms=round(message.timestamp * 1000.0) if message.timestamp else 0,
        key=message.key,
        value=message.value,
        headers=tuple(message.headers or ()),
    )


def build_app(
    settings: Settings,
    scoring: ScoringProcessor,
    outcomes: OutcomeProcessor | None,
    publisher: AckedPublisher,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
) -> faust.App:
    """The faust app: an agent per input topic, concurrency 1 (faust #606), micro-batches;
    ``background`` tasks (the model-events follower) run beside them until the worker stops."""
    pipeline = scoring.pipeline
    datadir = settings.home / "worker" / pipeline.name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}-{pipeline.name}-scoring",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        # A short buffer: events already buffered flow on while their partition is paused.
        stream_buffer_maxsize=settings.batch_max,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # Small fetches keep the partitions' event times close together: an entity that is
        # not the partition key (a terminal) sees other partitions' events only once they
        # are processed, so no partition may run days ahead of another.
        consumer_max_fetch_size=settings.fetch_bytes_per_partition,
    )

    def agent_for(topic_name: str, process: Callable[[Sequence[InputRecord]], Any]) -> None:
        topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

        async def consume(stream: faust.StreamT) -> None:
            await publisher.start()
            try:
                # take_events is on faust's Stream, not on its StreamT protocol.
                async for batch in stream.take_events(  # type: ignore[attr-defined]
                    settings.batch_max, within=settings.batch_within_s
                ):
                    await process([input_record(event) for event in batch])
            finally:
                await publisher.stop()

        app.agent(topic, name=f"rtscore.consume.{topic_name}", concurrency=1)(consume)

    async def score_and_pace(records: Sequence[InputRecord]) -> None:
        await scoring.process(records)
        await scoring.pace(app.consumer)

    agent_for(settings.topics.events, score_and_pace)

    if scoring.pacer is not None:
        # Paused partitions bring no batch that would resume them: look again regularly.
        @app.timer(0.25)
        async def pace() -> None:
            await scoring.pace(app.consumer)

    if outcomes is not None:
        agent_for(settings.topics.outcomes, outcomes.process)
    for task in background:
        app.task(task)
    return app
