"""Publish a batch's records and wait until the broker has acknowledged every one of them.

A broker error pauses the batch and publishes it again (the records carry deterministic ids,
so a consumer can drop a repeat); the caller acks its input only after this returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes | None, bytes, int]  # topic, key, value, timestamp_ms


class AckedPublisher:
    def __init__(self, bootstrap: str, on_retry: Callable[[], None] = lambda: None) -> None:
        self.bootstrap = bootstrap
        self.on_retry = on_retry
        self._producer: AIOKafkaProducer | None = None
        self._users = 0

    async def start(self) -> None:
        self._users += 1
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                max_batch_size=512 * 1024,
                request_timeout_ms=30000,
            )
            await self._producer.start()

    async def stop(self, timeout: float = 10.0) -> None:
        self._users -= 1
        if self._users <= 0 and self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                # With the broker down, flushing would wait forever; what is not acked was
                # not committed either, so it is read again by whoever takes the partition.
                await asyncio.wait_for(producer.stop(), timeout)
            except TimeoutError:
                log.warning("producer did not flush within %.0fs; stopping without it", timeout)

    async def publish(self, outgoing: Sequence[Outgoing]) -> None:
        await self.confirm(outgoing, await self.send(outgoing))

    async def send(self, outgoing: Sequence[Outgoing]) -> list[asyncio.Future[Any]] | None:
        """Hand the records to the producer, in order; their acks come later (``confirm``).
        None when the producer refused them: ``confirm`` then publishes them again."""
        assert self._producer is not None, "start() before publish()"
        try:
            return [
                await self._producer.send(topic, value, key=key, timestamp_ms=ts)
                for topic, key, value, ts in outgoing
            ]
        except KafkaError as exc:
            log.warning("handing a batch to the producer failed (%r); retrying", exc)
            return None

    async def confirm(
        self, outgoing: Sequence[Outgoing], futures: list[asyncio.Future[Any]] | None
    ) -> None:
        """Wait until the broker has acknowledged every record; on an error, publish the
        whole batch again (with backoff) until it has."""
        delay = 0.2
        while True:
            try:
                if futures is None:
                    raise _Refused()
                await asyncio.gather(*futures)
                return
            except (KafkaError, _Refused) as exc:
                self.on_retry()
                log.warning("publishing a batch failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                futures = await self.send(outgoing)


class _Refused(Exception):
    """The producer refused a batch when it was handed over (logged there)."""
