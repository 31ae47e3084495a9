"""The scoring worker: a faust agent that moves micro-batches from the events topic to the
prediction and dead-letter topics, calling the pure :class:`streams.scoring.BatchScorer`.

At-least-once with idempotent effects: ``take_events`` acks a batch's offsets only after the
agent's loop body returns, and the body returns only once every prediction and dead letter
of the batch is acknowledged by the broker. A broker error pauses the batch and retries it;
nothing is acked before it is published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.codecs import RecordCodec
from streams.errors import InvalidEvent
from streams.metrics import WorkerMetrics
from streams.pipeline import Pipeline
from streams.scoring import BatchScorer, InputRecord, ScoredBatch, dead_letter
from streams.settings import Settings

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes | None, bytes, int]  # topic, key, value, timestamp_ms


class ScoringProcessor:
    """Scores a batch off the event loop and publishes it; retries until the broker acks."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        scorer: BatchScorer,
        metrics: WorkerMetrics,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.scorer = scorer
        self.metrics = metrics
        self.topics = settings.topics
        self.prediction_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        self.dead_letter_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")
        # One thread: decode + features + predict_proba stay off the event loop, in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-score")
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=512 * 1024,
            request_timeout_ms=30000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def process(self, records: Sequence[InputRecord]) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        scored, outgoing = await loop.run_in_executor(self._executor, self._score, records)
        await self._publish(outgoing)
        self._count(scored, len(records), time.perf_counter() - started)

    def _score(self, records: Sequence[InputRecord]) -> tuple[ScoredBatch, list[Outgoing]]:
        try:
            scored = self.scorer.score(records)
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
        for record, error in scored.dead_letters:
            letter = dead_letter(record, error, self.pipeline.name)
            value = self.dead_letter_codec.encode(letter)
            outgoing.append((self.topics.dlq, record.key, value, record.timestamp_ms))
        return scored, outgoing

    async def _publish(self, outgoing: list[Outgoing]) -> None:
        assert self._producer is not None, "start() before process()"
        delay = 0.2
        while True:
            try:
                futures = [
                    await self._producer.send(topic, value, key=key, timestamp_ms=ts)
                    for topic, key, value, ts in outgoing
                ]
                await asyncio.gather(*futures)
                return
            except KafkaError as exc:
                # Same records again: prediction ids are deterministic, so a consumer that
                # saw the first attempt can drop the repeat. The batch is not acked meanwhile.
                self.metrics.publish_retries.labels(self.pipeline.name).inc()
                log.warning("publishing a batch failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _count(self, scored: ScoredBatch, size: int, seconds: float) -> None:
        name = self.pipeline.name
        m = self.metrics
        m.events_in.labels(name).inc(size)
        model = self.scorer.model
        if scored.predictions:
            m.predictions_out.labels(name, model.name, str(model.version), model.variant).inc(
                len(scored.predictions)
            )
        for _, error in scored.dead_letters:
            m.dead_letters.labels(name, error.stage, error.reason).inc()
        m.batch_size.labels(name).observe(size)
        m.batch_latency.labels(name).observe(seconds)


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


def build_app(settings: Settings, processor: ScoringProcessor) -> faust.App:
    """The faust app: one agent, concurrency 1 (faust #606), batches of ``batch_max``."""
    pipeline = processor.pipeline
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
        stream_buffer_maxsize=max(4096, 4 * settings.batch_max),
        broker_commit_interval=1.0,
    )
    events = app.topic(settings.topics.events, key_serializer="raw", value_serializer="raw")

    @app.agent(events, concurrency=1)
    async def score(stream: faust.StreamT) -> None:
        await processor.start()
        try:
            # take_events is on faust's Stream, not on its StreamT protocol.
            async for batch in stream.take_events(  # type: ignore[attr-defined]
                settings.batch_max, within=settings.batch_within_s
            ):
                await processor.process([input_record(event) for event in batch])
        finally:
            await processor.stop()

    return app
