"""The join processor: a micro-batch of predictions and outcomes in, labeled predictions, dead
letters and closed performance windows out.

Each batch: decode; raise the watermark; per bucket of events one Redis transaction that
applies :mod:`streams.join.decide` and writes the decided records to the bucket's outbox;
close what the watermark passed; publish; drop the acknowledged records from the outbox;
report performance windows that no prediction can change any more. Only then does the
batch return and faust commit its offsets.

A decision is stored before its record is published, so a crash in between cannot lose it:
the outbox entries of a worker that stopped heartbeating are published by a live one, except
those already on their topic (:mod:`streams.join.delivery`), so a crash after the broker's ack
but before the outbox entry is dropped publishes nothing twice either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from streams.codecs import RecordCodec
from streams.errors import DependencyUnavailable, InvalidEvent
from streams.join.decide import (
    OutcomeIn,
    State,
    Step,
    add_outcome,
    add_prediction,
    close,
    deadline,
    label_of,
)
from streams.join.delivery import DeliveryCheck, Marks
from streams.join.metrics import JoinMetrics
from streams.join.policy import join_policy
from streams.join.state import BucketChange, JoinState, bucket_of
from streams.performance.config import performance_config
from streams.performance.reporter import WindowReporter
from streams.performance.windows import row_of
from streams.pipeline import Pipeline
from streams.publisher import AckedPublisher, Outgoing
from streams.scoring import InputRecord, dead_letter
from streams.settings import Settings
from streams.topics import EmptyPartitions
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")
DUE_PAGE = 2000  # events closed per bucket per transaction

Item = tuple[str, Any]  # ("p", (prediction dict, source)) or ("o", OutcomeIn)


class JoinProcessor:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        state: JoinState,
        publisher: AckedPublisher,
        metrics: JoinMetrics,
        partitions: dict[str, int],
        delivery: DeliveryCheck,
        empty: EmptyPartitions | None = None,
    ) -> None:
        if pipeline.outcomes is None:
            raise ValueError(f"pipeline {pipeline.name} declares no [outcomes] to join")
        self.pipeline = pipeline
        self.outcomes = pipeline.outcomes
        self.policy = join_policy(pipeline)
        self.perf = performance_config(pipeline)
        self.state = state
        self.publisher = publisher
        self.delivery = delivery
        self.metrics = metrics
        self.topics = settings.topics
        # Every partition of both inputs must have been seen before the watermark exists,
        # except those whose log is empty (read from the timer, every EmptyPartitions.every_s).
        self.required = [f"{t}/{p}" for t, n in partitions.items() for p in range(n)]
        self.empty = empty or EmptyPartitions(settings.kafka_bootstrap, [])
        self._empty_task: asyncio.Future[None] | None = None
        self.lease_ms = int(max(settings.session_timeout_s, 6.0) * 1000)
        self.me = uuid.uuid4().hex[:12]
        self.decoder = EventDecoder(pipeline.outcomes, max_bytes=settings.max_event_bytes)
        schemas = settings.schemas_dir
        self.prediction_codec = RecordCodec.from_file(schemas, "prediction.avsc")
        self.labeled_codec = RecordCodec.from_file(schemas, "labeled_prediction.avsc")
        self.dead_letter_codec = RecordCodec.from_file(schemas, "dead_letter.avsc")
        self.reporter = WindowReporter(
            state,
            pipeline.name,
            self.policy,
            self.perf,
            RecordCodec.from_file(schemas, "performance_report.avsc"),
            self.topics.performance,
            metrics,
        )
        # One thread: Redis, Avro and sklearn stay off the event loop, in order.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-join")
        self.beat_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-beat")
        self.left_behind = False  # a failed batch may have left decisions in the outbox
        self._marks: Marks = {}
        self.watermark: int | None = None
        self.in_flight: set[str] = set()
        self.started = False
        self.beaten = False  # this worker's heartbeat is in Redis

    # -- the batch -------------------------------------------------------------------------
    async def process(self, records: Sequence[InputRecord]) -> None:
        """Decide, publish, confirm, report. Never raises: take_events acks regardless."""
        if not self.beaten:
            # Alive before owning any outbox entry: an entry whose owner is not alive is
            # left by a dead worker (recover), so a worker killed before its first timer
            # tick must already be known, or its entries would wait for it forever.
            now = int(time.time() * 1000)
            await self._run(lambda: self.state.heartbeat(self.me, now))
            self.beaten = True
        marks = await self.delivery.marks()
        outgoing, fields = await self._run(lambda: self._decide_safely(records, marks))
        await self._publish(outgoing, fields)
        await self.report()

    async def report(self) -> None:
        """Publish the performance windows the watermark has closed."""
        watermark = self.watermark
        if watermark is None:
            return
        reports, starts = await self._run(
            lambda: self.reporter.close(watermark, self.me, self.lease_ms)
        )
        if reports:
            await self.publisher.publish(reports)
        if starts:
            await self._run(lambda: self.reporter.reported(starts))

    def watch_empty(self) -> None:
        """From the 1-s timer: read the empty partitions every ``empty.every_s``, in the
        background, so a slow broker never delays this worker's heartbeat."""
        if not self.empty.names or not self.empty.due():
            return
        if self._empty_task is not None and not self._empty_task.done():
            return
        self._empty_task = asyncio.ensure_future(self.refresh_empty())

    async def refresh_empty(self) -> None:
        """Read the empty partitions; when that changes the watermark, expire and report
        now: no batch may come to do it (the last records are often what it was waiting for).
        Never raises."""
        if not await self.empty.refresh() or not self.started:
            return
        try:
            # A batch without records: the same steps, so the same exactly-once guarantees.
            await self.process([])
        except Exception:
            log.exception(
                "join: closing after the empty partitions changed failed; the next "
                "batch or change closes what is due"
            )

    async def recover(self) -> None:
        """Heartbeat; publish the outbox entries of workers that stopped heartbeating."""
        if not self.started:
            return
        now = int(time.time() * 1000)
        loop = asyncio.get_running_loop()
        try:
            # Its own thread: a heartbeat must not wait behind a long batch, or this worker
            # would look dead to the others.
            alive = await loop.run_in_executor(
                self.beat_executor, lambda: self.state.heartbeat(self.me, now)
            )
        except DependencyUnavailable as exc:
            log.warning("join heartbeat failed: %s", exc.message)
            return
        self.beaten = True
        expired = {w for w, beat in alive.items() if w != self.me and now - beat > self.lease_ms}
        claimed = await self._run(lambda: self._claim(expired))
        if not claimed:
            return
        try:
            there = await self._already_published(claimed)
        except KafkaError as exc:
            # Now this worker's entries: the next tick looks again.
            self.in_flight -= {name for _, name, _ in claimed}
            self.left_behind = True
            log.warning("cannot check what a stopped worker published (%r); retrying", exc)
            return
        outgoing = [_outgoing(raw) for _, _, raw in claimed if _value(raw) not in there]
        fields: dict[int, list[str]] = {}
        for bucket, name, _ in claimed:
            fields.setdefault(bucket, []).append(name)
        log.warning(
            "%d decided records left by a stopped worker: %d had reached Kafka, publishing %d",
            len(claimed),
            len(claimed) - len(outgoing),
            len(outgoing),
        )
        self.metrics.recovered.labels(self.pipeline.name).inc(len(outgoing))
        await self._publish(outgoing, fields)

    async def _already_published(self, claimed: list[tuple[int, str, str]]) -> set[bytes]:
        """The claimed records found on their topics after the offsets noted at decision."""
        wanted: dict[str, tuple[dict[int, int], set[bytes]]] = {}
        for _, _, raw in claimed:
            entry = json.loads(raw)
            if entry.get("since") is None:
                continue
            since, values = wanted.setdefault(entry["topic"], ({}, set()))
            for partition, offset in entry["since"].items():
                since[int(partition)] = min(since.get(int(partition), offset), offset)
            values.add(base64.b64decode(entry["value"]))
        found: set[bytes] = set()
        for topic, (since, values) in wanted.items():
            found |= await self.delivery.present(topic, since, values)
        return found

    async def _publish(self, outgoing: list[Outgoing], fields: dict[int, list[str]]) -> None:
        names = {n for ns in fields.values() for n in ns}
        try:
            await self.publisher.publish(outgoing)
            if fields:
                await self._run(lambda: self.state.confirm(fields))
        finally:
            self.in_flight -= names

    async def _run(self, step: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                return await loop.run_in_executor(self.executor, step)
            except DependencyUnavailable as exc:
                # Nothing of this batch is acked: decisions are idempotent, so a retry of a
                # partly applied batch decides nothing twice.
                self.metrics.dependency_waits.labels(self.pipeline.name).inc()
                log.warning("join paused: %s; retrying in %.1fs", exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- steps in the worker thread ----------------------------------------------------------
    def _decide_safely(
        self, records: Sequence[InputRecord], marks: Marks
    ) -> tuple[list[Outgoing], dict[int, list[str]]]:
        try:
            return self._decide(records, marks)
        except DependencyUnavailable:
            raise
        except Exception as exc:
            # A bug must not lose the batch: keep its records whole in the dead-letter topic.
            # Decisions already committed sit in the outbox; recovery publishes them.
            log.exception("joining a batch of %d failed; dead-lettering it", len(records))
            self.left_behind = True
            error = InvalidEvent(
                "internal_error",
                f"rtscore's join failed on this batch: {exc!r}. This is a bug, not bad input: "
                "report it; replay the record from the dead-letter topic once fixed.",
                stage="join",
            )
            return [self._dead_letter(r, error) for r in records], {}

    def _decide(
        self, records: Sequence[InputRecord], marks: Marks | None = None
    ) -> tuple[list[Outgoing], dict[int, list[str]]]:
        self._marks = marks or {}
        items: dict[int, list[Item]] = {}
        outgoing: list[Outgoing] = []
        counts: Counter[str] = Counter()
        seen: dict[str, int] = {}
        windows: set[int] = set()
        parts: dict[str, set[int]] = {}
        for record in records:
            try:
                kind, item, event_id, when = self._parse(record)
            except InvalidEvent as exc:
                outgoing.append(self._dead_letter(record, exc))
                counts["invalid_record"] += 1
                continue
            source = f"{record.topic}/{record.partition}"
            seen[source] = max(seen.get(source, when), when)
            parts.setdefault(record.topic, set()).add(record.partition)
            if kind == "p":
                windows.add(self.perf.window_start(item["event_time"]))
                item = (item, f"{source}/{record.offset}")
            items.setdefault(bucket_of(event_id), []).append((kind, item))
        for topic, numbers in parts.items():
            self.empty.saw(topic, numbers)  # they count from now on, whatever the last read
        # The batch's decisions see the watermark its records make (an event's prediction and
        # outcome share a bucket, so one transaction); it is stored only once they are.
        stored = self.state.open_windows(windows)
        self._set_watermark(
            {k: max(v, stored.get(k, v)) for k, v in seen.items()}
            | {k: v for k, v in stored.items() if k not in seen}
        )
        fields: dict[int, list[str]] = {}
        for bucket, bucket_items in items.items():
            ids = list(dict.fromkeys(_event_id(item) for item in bucket_items))
            change = self.state.change(bucket, ids, partial(self._apply, items=bucket_items))
            self._collect(bucket, change, outgoing, fields)
            counts.update(change.counts)
        if seen:
            self._set_watermark(self.state.raise_watermarks(seen))
        counts.update(self._expire(outgoing, fields))
        self.metrics.count(self.pipeline.name, dict(counts))
        self._hold(fields)
        return outgoing, fields

    def _set_watermark(self, latest: dict[str, int]) -> None:
        empty = {f"{t}/{p}" for t in self.empty.names for p in self.empty.empty(t)}
        watermark = low_watermark(latest, self.required, empty)
        if watermark is not None and (self.watermark is None or watermark > self.watermark):
            self.watermark = watermark
            self.metrics.watermark.labels(self.pipeline.name).set(watermark)

    def _expire(self, outgoing: list[Outgoing], fields: dict[int, list[str]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        watermark = self.watermark
        if watermark is None:
            return counts
        while True:
            due = self.state.due(watermark, DUE_PAGE)
            if not due:
                return counts
            for bucket, ids in due.items():
                change = self.state.change(bucket, ids, lambda s: self._close_all(s, watermark))
                self._collect(bucket, change, outgoing, fields)
                counts.update(change.counts)

    def _parse(self, record: InputRecord) -> tuple[str, Any, str, int]:
        if record.value is None:
            raise InvalidEvent("undecodable", "the record has no value", stage="decode")
        if record.topic == self.topics.predictions:
            pred = self.prediction_codec.decode(record.value)
            return "p", pred, pred["event_id"], int(pred["event_time"])
        fields = self.decoder.decode(record.value, record.headers)
        spec = self.outcomes
        # An outcome without a label field is a positive (e.g. a chargeback feed).
        label = (
            1 if spec.label_field is None else label_of(fields[spec.label_field], spec.label_field)
        )
        outcome = OutcomeIn(
            event_id=str(fields[spec.id_field]),
            time_ms=int(fields[spec.time_field]),
            event_time_ms=(
                int(fields[spec.event_time_field]) if spec.event_time_field is not None else None
            ),
            label=label,
            fields=fields,
            record=record,
        )
        return "o", outcome, outcome.event_id, outcome.time_ms

    def _apply(self, states: dict[str, State | None], items: list[Item]) -> BucketChange:
        """The pure part of a bucket's transaction: may run again on fresher states."""
        current = dict(states)
        steps: list[Step] = []
        for kind, item in items:
            event_id = _event_id((kind, item))
            if kind == "p":
                pred, source = item
                step = add_prediction(current[event_id], pred, source, self.policy)
            else:
                step = add_outcome(current[event_id], item, self.policy)
            current[event_id] = step.state
            steps.append(step)
        if self.watermark is not None:
            for event_id, state in current.items():
                if state is not None:
                    step = close(state, self.watermark, self.policy)
                    current[event_id] = step.state
                    steps.append(step)
        touched = {e: s for e, s in current.items() if s is not None and s is not states[e]}
        return self._change(touched, steps)

    def _close_all(self, states: dict[str, State | None], watermark: int) -> BucketChange:
        steps: list[Step] = []
        touched: dict[str, State] = {}
        gone: list[str] = []
        for event_id, state in states.items():
            if state is None:  # its key expired (TTL): nothing left to close
                gone.append(event_id)
                continue
            step = close(state, watermark, self.policy)
            touched[event_id] = step.state
            steps.append(step)
        change = self._change(touched, steps)
        change.due.update(dict.fromkeys(gone))
        return change

    def _change(self, touched: dict[str, State], steps: list[Step]) -> BucketChange:
        change = BucketChange(states=touched)
        change.due = {e: deadline(s, self.policy) for e, s in touched.items()}
        counts: Counter[str] = Counter()
        for step in steps:
            counts.update(step.counts)
            for labeled in step.labeled:
                value = self.labeled_codec.encode(labeled)
                change.outbox[f"L:{labeled['prediction_id']}"] = self._entry(
                    self.topics.labeled,
                    labeled["entity_key"].encode(),
                    value,
                    labeled["labeled_time"],
                )
                start = self.perf.window_start(labeled["event_time"])
                change.rows.setdefault(start, {})[labeled["prediction_id"]] = row_of(labeled)
            for record, error in step.dead:
                name = f"D:{record.topic}/{record.partition}/{record.offset}"
                _, key, value, ts = self._dead_letter(record, error)
                change.outbox[name] = self._entry(self.topics.dlq, key, value, ts)
        change.counts = dict(counts)
        return change

    def _entry(self, topic: str, key: bytes | None, value: bytes, ts: int) -> str:
        return json.dumps(
            {
                "owner": self.me,
                "topic": topic,
                "key": None if key is None else base64.b64encode(key).decode(),
                "value": base64.b64encode(value).decode(),
                "ts": ts,
                # the topic's end offsets before this batch: where to look for the record
                "since": self._marks.get(topic),
            }
        )

    def _collect(
        self,
        bucket: int,
        change: BucketChange,
        outgoing: list[Outgoing],
        fields: dict[int, list[str]],
    ) -> None:
        for name, raw in change.outbox.items():
            outgoing.append(_outgoing(raw))
            fields.setdefault(bucket, []).append(name)

    def _dead_letter(self, record: InputRecord, error: InvalidEvent) -> Outgoing:
        value = self.dead_letter_codec.encode(dead_letter(record, error, self.pipeline.name))
        return (self.topics.dlq, record.key, value, record.timestamp_ms)

    def _claim(self, expired: set[str]) -> list[tuple[int, str, str]]:
        """(bucket, outbox field, entry) of every record this worker must now publish.

        An entry's owner is dead when its heartbeat expired, or when it has none: a worker
        beats before it decides, so an owner without a beat read after its entries is one
        that another worker forgot after taking over, or that died before its first tick."""
        mine_too, self.left_behind = self.left_behind, False
        claimed: list[tuple[int, str, str]] = []
        outboxes = self.state.outboxes()
        alive = self.state.workers()  # after the outboxes: a new worker's beat precedes them
        dead = set(expired)
        for entries in outboxes.values():
            dead |= {
                owner
                for owner in (json.loads(raw)["owner"] for raw in entries.values())
                if owner != self.me and owner not in alive
            }
        for bucket, entries in outboxes.items():
            owners = {name: json.loads(raw)["owner"] for name, raw in entries.items()}
            # Mine and not being published: left by a batch that failed after deciding.
            found = {
                n: entries[n]
                for n, owner in owners.items()
                if mine_too and owner == self.me and n not in self.in_flight
            }
            orphaned = [n for n, owner in owners.items() if owner in dead]
            if orphaned:
                found.update(self.state.claim(bucket, orphaned, dead, self.me))
            claimed.extend((bucket, name, raw) for name, raw in found.items())
        self.state.forget_workers(expired)
        self.in_flight.update(name for _, name, _ in claimed)
        return claimed

    def _hold(self, fields: dict[int, list[str]]) -> None:
        # In this thread, before the event loop sees the result: recovery (the same thread)
        # must never take a record that a batch is about to publish.
        self.in_flight.update(n for names in fields.values() for n in names)


def low_watermark(latest: dict[str, int], required: Sequence[str], empty: set[str]) -> int | None:
    """The lowest latest event time over the partitions that count (None until each has one):
    every ``required`` one but those whose log is ``empty``. An idle partition with records
    still counts: its next record may be as old as its last, as event time requires."""
    counted = [name for name in required if name not in empty]
    if not counted or any(name not in latest for name in counted):
        return None
    return min(latest[name] for name in counted)


def _event_id(item: Item) -> str:
    kind, value = item
    return str(value[0]["event_id"]) if kind == "p" else value.event_id


def _value(raw: str) -> bytes:
    return base64.b64decode(json.loads(raw)["value"])


def _outgoing(raw: str) -> Outgoing:
    entry = json.loads(raw)
    key = None if entry["key"] is None else base64.b64decode(entry["key"])
    return (entry["topic"], key, base64.b64decode(entry["value"]), entry["ts"])
