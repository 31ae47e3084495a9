"""Write records to Kafka keyed by entity and stamped with their event time: as fast as the
broker takes them (history) or paced at a steady rate (a live stream)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.demo.simulator import Rows, SimConfig, Simulation, outcome_records, transaction_records
from streams.errors import DependencyUnavailable, RtscoreError
from streams.settings import Topics

log = logging.getLogger(__name__)

CHUNK = 5_000  # send() futures awaited together; progress is reported per chunk
SLICE_S = 0.01  # a paced stream sends what is due every 10 ms
PROGRESS_EVERY_S = 0.5  # a paced stream reports progress at most this often
MAX_BATCH_BYTES = 256 * 1024

Codec = Callable[[Mapping[str, Any]], bytes]
ProgressFn = Callable[[int], None]


def json_bytes(record: Mapping[str, Any]) -> bytes:
    """Compact JSON, the input format every producer (kcat, HTTP bridges) can write."""
    return json.dumps(record, separators=(",", ":")).encode()


class _Message(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int


def _messages(
    topic: str, records: Iterable[Mapping[str, Any]], key_field: str, time_field: str, codec: Codec
) -> Iterator[_Message]:
    for record in records:
        yield _Message(
            topic, str(record[key_field]).encode(), codec(record), int(record[time_field])
        )


async def publish(
    bootstrap: str,
    topic: str,
    records: Iterable[Mapping[str, Any]],
    *,
    key_field: str,
    time_field: str,
    codec: Codec = json_bytes,
    rate: float | None = None,
    progress: ProgressFn | None = None,
    linger_ms: int = 20,
) -> int:
    """Send ``records`` to ``topic`` in order; return how many the broker acknowledged.

    Key = ``str(record[key_field])``, Kafka timestamp = ``record[time_field]`` (epoch ms, the
    event time), value = ``codec(record)``. ``rate`` (records/s) paces the stream; without it
    records go as fast as the broker acknowledges them. ``progress`` receives the number
    acknowledged so far.
    """
    async with _producer(bootstrap, linger_ms) as producer:
        return await _produce(
            producer, _messages(topic, records, key_field, time_field, codec), rate, progress
        )


async def publish_simulation(
    bootstrap: str,
    topics: Topics,
    sim: Simulation,
    cfg: SimConfig,
    *,
    rows: Rows = None,
    rate: float | None = None,
    progress: ProgressFn | None = None,
) -> tuple[int, int]:
    """Publish the chosen transactions to ``topics.events`` and their outcomes to
    ``topics.outcomes``, both keyed by customer; return (transactions, outcomes) sent.

    Without ``rate`` (history) every transaction goes first, then every outcome. With a rate
    (live) one stream is paced: before each transaction go the outcomes whose outcome time is
    at or before its time, and outcomes due after the last transaction go at the end. Each
    call publishes the outcomes of its own rows only, so split a run into ascending row ranges
    (history, then live) and every outcome is sent once. ``rate`` counts both kinds of
    record; ``progress`` gets the running total of both.
    """
    txs = transaction_records(sim, rows)
    outs = outcome_records(sim, cfg, rows)
    tx_msgs = _messages(topics.events, txs, "customer_id", "tx_datetime", json_bytes)
    out_msgs = _messages(topics.outcomes, outs, "customer_id", "outcome_datetime", json_bytes)
    async with _producer(bootstrap, linger_ms=20) as producer:
        if rate is None:
            n_tx = await _produce(producer, tx_msgs, None, progress)
            shifted = None if progress is None else (lambda n: progress(n_tx + n))
            n_out = await _produce(producer, out_msgs, None, shifted)
            return n_tx, n_out
        await _produce(producer, _interleave(tx_msgs, out_msgs), rate, progress)
    return len(txs), len(outs)


def _interleave(txs: Iterator[_Message], outs: Iterator[_Message]) -> Iterator[_Message]:
    """Merge by event time; an outcome stamped at or before a transaction goes before it."""
    pending = next(outs, None)
    for tx in txs:
        while pending is not None and pending.timestamp_ms <= tx.timestamp_ms:
            yield pending
            pending = next(outs, None)
        yield tx
    if pending is not None:
        yield pending
        yield from outs


@asynccontextmanager
async def _producer(bootstrap: str, linger_ms: int) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="rtscore-publish",
        acks="all",
        enable_idempotence=True,  # broker retries neither duplicate nor reorder a key's records
        linger_ms=linger_ms,
        max_batch_size=MAX_BATCH_BYTES,
    )
    try:
        await producer.start()
    except KafkaConnectionError as exc:
        await producer.stop()
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap}",
            hint="start it with `rtscore infra up` or set RTSCORE_KAFKA_BOOTSTRAP",
        ) from exc
    try:
        yield producer
    finally:
        await producer.stop()  # flushes what is still buffered


class _InFlight:
    """send() futures in send order; counts acknowledgements and raises the first failure."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.futures: deque[asyncio.Future[Any]] = deque()
        self.acked = 0
        self.progress = progress

    async def drain(self) -> None:
        if not self.futures:
            return
        futures = list(self.futures)
        self.futures.clear()
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise _publish_error(exc) from exc
        self.acked += len(futures)
        if self.progress is not None:
            self.progress(self.acked)

    def reap(self) -> bool:
        """Count the leading futures already done, without waiting; True if any were."""
        before = self.acked
        while self.futures and self.futures[0].done():
            exc = self.futures.popleft().exception()
            if exc is not None:
                raise _publish_error(exc) from exc
            self.acked += 1
        return self.acked > before


def _publish_error(exc: BaseException) -> RtscoreError:
    if isinstance(exc, KafkaError) and exc.retriable:
        return DependencyUnavailable(f"Kafka did not acknowledge a record: {exc!r}")
    return RtscoreError(
        f"Kafka refused a record: {exc!r}", hint="check that the topics exist and accept it"
    )


async def _produce(
    producer: AIOKafkaProducer,
    messages: Iterable[_Message],
    rate: float | None,
    progress: ProgressFn | None,
) -> int:
    inflight = _InFlight(progress)
    if rate is None:
        for m in messages:
            inflight.futures.append(await _send(producer, m))
            if len(inflight.futures) >= CHUNK:
                await inflight.drain()
    else:
        await _paced(producer, iter(messages), rate, inflight)
    await inflight.drain()
    return inflight.acked


async def _paced(
    producer: AIOKafkaProducer, messages: Iterator[_Message], rate: float, inflight: _InFlight
) -> None:
    """Every slice, send what is due by its end; due = rate x (slices elapsed x slice length),
    counted from one monotonic start, so late slices catch up and minutes do not drift."""
    if rate <= 0:
        raise RtscoreError(f"publish rate must be > 0 records/s, got {rate}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    last_report = start
    queued = 0
    tick = 0
    while True:
        tick += 1
        due = int(rate * tick * SLICE_S)
        while queued < due:
            m = next(messages, None)
            if m is None:
                return
            inflight.futures.append(await _send(producer, m))
            queued += 1
        if len(inflight.futures) >= CHUNK:
            await inflight.drain()
        elif inflight.reap() and inflight.progress is not None:
            now = loop.time()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                inflight.progress(inflight.acked)
        delay = start + tick * SLICE_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def _send(producer: AIOKafkaProducer, m: _Message) -> asyncio.Future[Any]:
    try:
        future: asyncio.Future[Any] = await producer.send(
            m.topic, m.value, key=m.key, timestamp_ms=m.timestamp_ms
        )
    except KafkaError as exc:
        raise _publish_error(exc) from exc
    return future
