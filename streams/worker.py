"""The worker's processors: faust agents that move micro-batches between topics and call
the pure parts (:class:`streams.scoring.BatchScorer`, the online feature store).

At-least-once with idempotent effects: ``take_events`` acks a batch's offsets only after the
agent's loop body returns, and the body returns only once every output of the batch is
acknowledged by the broker. The events agent takes batches with ``noack_take`` and acks each
event itself once its output is acknowledged, because it may hold events back across
batches (:mod:`streams.pacing`), and scores the next batch while the last one's
acknowledgements are pending (two batches in flight at most, acked in order). A broker or
Redis outage pauses the batch and retries it; nothing is acked before its outputs are
published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust
from aiokafka.structs import TopicPartition

from streams.codecs import RecordCodec
from streams.errors import DependencyUnavailable, InvalidEvent
from streams.faust_app import processor_app
from streams.features.online import OnlineStore
from streams.metrics import WorkerMetrics
from streams.pace_board import PaceBoard
from streams.pacing import HoldBack, pacing_budget
from streams.pipeline import Pipeline
from streams.publisher import AckedPublisher, Outgoing
from streams.scoring import BatchScorer, InputRecord, ScoredBatch, dead_letter
from streams.settings import Settings
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")
Ack = Callable[[Any], Awaitable[Any]]
# Events held back (streams.pacing) before partitions far ahead stop being fetched.
HELD_BATCHES = 20


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
        board: PaceBoard | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.scorer = scorer
        self.metrics = metrics
        self.runner = runner
        self.publisher = publisher
        self.topics = settings.topics
        self.batch_max = settings.batch_max
        budget = pacing_budget(pipeline)
        # Events wait here, unacked, until every partition has been scored close to their time.
        self.hold: HoldBack[tuple[InputRecord, Any]] | None = (
            HoldBack(budget) if budget is not None else None
        )
        # Other workers' partitions: their frontiers hold this worker's events back too.
        self.board = board if self.hold is not None else None
        self.fetch_paused: set[int] = set()
        self.max_held = HELD_BATCHES * settings.batch_max
        self.lock = asyncio.Lock()
        self.delivering: asyncio.Future[None] | None = None  # the last batch's acks
        self.prediction_codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        self.dead_letter_codec = RecordCodec.from_file(settings.schemas_dir, "dead_letter.avsc")

    async def _score_and_send(
        self, records: Sequence[InputRecord], events: Sequence[Any], ack: Ack
    ) -> None:
        """Score a batch and hand its outputs to the producer, then return: its acks are
        awaited (and its events acked, in batch order) beside the scoring of the next batch.
        At most two batches are in flight: this one, and the one before it, awaited here."""
        started = time.perf_counter()
        scored, outgoing = await self.runner.run(lambda: self._score(records))
        futures = await self.publisher.send(outgoing)
        previous = self.delivering
        self.delivering = asyncio.ensure_future(
            self._deliver(previous, scored, outgoing, futures, events, ack, started)
        )
        if previous is not None:
            await previous

    async def _deliver(
        self,
        previous: asyncio.Future[None] | None,
        scored: ScoredBatch,
        outgoing: list[Outgoing],
        futures: list[asyncio.Future[Any]] | None,
        events: Sequence[Any],
        ack: Ack,
        started: float,
    ) -> None:
        await self.publisher.confirm(outgoing, futures)
        if previous is not None:
            await previous  # acks in batch order
        for event in events:
            await ack(event)
        self._count(scored, len(events), time.perf_counter() - started)

    async def flush(self) -> None:
        """Wait for the batches in flight: their outputs acknowledged, their events acked."""
        delivering, self.delivering = self.delivering, None
        if delivering is not None:
            await delivering

    async def offer(self, events: Sequence[Any], consumer: Any, ack: Ack) -> None:
        """Score the faust events that may be scored now, and any held ones that may now;
        each is acked only once its prediction or dead letter is published."""
        records = [input_record(event) for event in events]
        async with self.lock:
            if self.hold is None:
                await self._score_and_send(records, events, ack)
                return
            times = await self.runner.run(lambda: [self._event_time(r) for r in records])
            for record, event, event_time in zip(records, events, times, strict=True):
                self.hold.add(record.partition, record.offset, event_time, (record, event))
            await self._drain(consumer, ack)

    async def tick(self, consumer: Any, ack: Ack) -> None:
        """Regularly: release what waits for nothing any more (no batch may come to do it).
        While a rebalance has the flow stopped, forget what is held: faust does not wait for
        unacked events here (``stream_wait_empty`` is off: the stream iterator may still refer
        to a held event, which would make it wait forever) and seeks back to the committed
        offsets before it lets the flow resume, so every event forgotten here is read again."""
        if self.hold is None:
            return
        async with self.lock:
            if not getattr(consumer, "flow_active", True):
                if len(self.hold):
                    log.info("rebalance: %d held events will be read again", len(self.hold))
                self.hold.clear()
                self.fetch_paused.clear()
                return
            await self._drain(consumer, ack)

    async def _drain(self, consumer: Any, ack: Ack) -> None:
        assert self.hold is not None
        highwater, start = _partitions(consumer, self.topics.events)
        if self.board is not None:
            board, frontiers = self.board, self.hold.frontiers(highwater, start)
            self.hold.remote = await self.runner.run(lambda: board.exchange(frontiers))
            remote = self.hold.remote
            self.metrics.pacing_remote_floor.labels(self.pipeline.name).set(
                0.0 if remote is None else max(remote, 0) / 1000.0
            )
        released = self.hold.release(highwater, start)
        self.metrics.pacing_held.labels(self.pipeline.name).set(len(self.hold))
        for i in range(0, len(released), self.batch_max):
            chunk = released[i : i + self.batch_max]
            await self._score_and_send(
                [record for record, _ in chunk], [event for _, event in chunk], ack
            )
        await self._pace_fetches(consumer, highwater, start)

    async def _pace_fetches(
        self, consumer: Any, highwater: Mapping[int, int | None], start: Mapping[int, int]
    ) -> None:
        """Bound what is held: pause fetching partitions far ahead, resume them once caught up.
        On faust's aiokafka consumer (its own thread and loop): faust's pause_partitions only
        filters what it hands on, and what the fetcher already returned for them is lost."""
        assert self.hold is not None
        self.fetch_paused &= set(highwater)
        # Only once much is held: each pause stalls the fetcher (a backlog ran 35 % slower
        # when partitions were paused as soon as they ran two budgets ahead).
        crowded = len(self.hold) > self.max_held
        pause = self.hold.ahead(highwater, start) - self.fetch_paused if crowded else set()
        resume = self.fetch_paused & self.hold.caught_up(highwater, start)
        if not pause and not resume:
            return
        topic = self.topics.events
        thread = consumer._thread
        aio = thread._ensure_consumer()

        async def apply() -> None:
            try:
                if pause:
                    aio.pause(*(TopicPartition(topic, p) for p in pause))
                if resume:
                    aio.resume(*(TopicPartition(topic, p) for p in resume))
            except Exception as exc:  # a rebalance took them away meanwhile
                log.debug("pausing %s / resuming %s of %s: %r", pause, resume, topic, exc)

        await thread.call_thread(apply)
        self.fetch_paused = (self.fetch_paused | pause) - resume
        log.debug(
            "partitions of %s held %d; fetching paused: %s",
            topic,
            len(self.hold),
            sorted(self.fetch_paused),
        )

    def _event_time(self, record: InputRecord) -> int | None:
        try:
            event = self.scorer.decoder.decode(record.value, record.headers)
        except InvalidEvent:
            return None  # it will be dead-lettered: nothing to wait for
        return int(event[self.pipeline.events.time_field])

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


def _partitions(consumer: Any, topic: str) -> tuple[dict[int, int | None], dict[int, int]]:
    """Each assigned partition of ``topic``: its high watermark (None: not known yet), and
    the committed offset faust started it from (where it has one)."""
    highwater: dict[int, int | None] = {}
    start: dict[int, int] = {}
    committed = getattr(consumer, "_committed_offset", {})
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            value = consumer.highwater(tp)
        except (AssertionError, KeyError, ValueError):
            value = None
        highwater[tp.partition] = int(value) if value is not None else None
        offset = committed.get(tp)
        if offset is not None:
            start[tp.partition] = int(offset)
    return highwater, start


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
    # Small fetches keep the partitions' event times close together, so the events agent
    # holds little back (streams.pacing keeps them in step exactly).
    # Held events are unacked and may stay referenced by faust's stream iterator: a rebalance
    # must not wait for them (it would wait forever); they are read again after it.
    app = processor_app(settings, pipeline, "scoring", small_fetches=True, wait_empty=False)

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

    # The events agent acks each event itself, once it is published: it may hold events back
    # across batches (streams.pacing), so it cannot let take_events ack a batch as a whole.
    acks: list[Ack] = []
    events_topic = app.topic(settings.topics.events, key_serializer="raw", value_serializer="raw")

    async def consume_events(stream: faust.StreamT) -> None:
        await publisher.start()
        acks[:] = [stream.ack]
        # faust adds nothing to the next batch while the agent holds the last one (its take
        # buffer waits for the loop body): handing batches to a task of their own lets it
        # fill the next batch while this one is scored. One batch waits at most; order kept.
        batches: asyncio.Queue[Sequence[Any]] = asyncio.Queue(maxsize=1)

        async def score_batches() -> None:
            while True:
                batch = await batches.get()
                await scoring.offer(batch, app.consumer, stream.ack)

        scorer_task = asyncio.ensure_future(score_batches())
        try:
            async for batch in stream.noack_take(  # type: ignore[attr-defined]
                settings.batch_max, within=settings.batch_within_s
            ):
                put = asyncio.ensure_future(batches.put(batch))
                await asyncio.wait({put, scorer_task}, return_when=asyncio.FIRST_COMPLETED)
                if scorer_task.done():
                    put.cancel()
                    scorer_task.result()  # raises what stopped it
                    raise RuntimeError("the scoring task ended")  # pragma: no cover
        finally:
            # What is queued or being scored is not acked: it is read again after a restart.
            scorer_task.cancel()
            await asyncio.gather(scorer_task, return_exceptions=True)
            await scoring.flush()
            await publisher.stop()

    app.agent(events_topic, name=f"rtscore.consume.{settings.topics.events}", concurrency=1)(
        consume_events
    )

    if scoring.hold is not None:
        # Held events may wait for nothing that brings a batch: look again regularly.
        @app.timer(0.25)
        async def pace() -> None:
            if acks:
                await scoring.tick(app.consumer, acks[0])

    if outcomes is not None:
        agent_for(settings.topics.outcomes, outcomes.process)
    for task in background:
        app.task(task)
    return app
