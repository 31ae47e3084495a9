"""Which of a dead worker's decided records reached Kafka before it died.

Before each batch the join notes the end offsets of its output topics; a record decided in
that batch can only have been written after them. When a live worker takes over a dead
worker's outbox it reads the output topics from those offsets and publishes only the
records that are not there: a worker killed between the broker's ack and the removal of its
outbox entry leaves no second copy.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

Marks = dict[str, dict[int, int]]  # topic -> partition -> end offset


class DeliveryCheck:
    def __init__(self, bootstrap: str, partitions: dict[str, int]) -> None:
        """``partitions``: the output topics and their partition counts."""
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def marks(self) -> Marks:
        """The output topics' end offsets now (retried while the broker is unavailable)."""
        assert self._consumer is not None, "start() first"
        delay = 0.2
        while True:
            try:
                ends = await self._consumer.end_offsets(self._tps)
                break
            except KafkaError as exc:
                log.warning("reading end offsets failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        marks: Marks = {}
        for tp, end in ends.items():
            marks.setdefault(tp.topic, {})[tp.partition] = end
        return marks

    async def present(self, topic: str, since: dict[int, int], values: set[bytes]) -> set[bytes]:
        """Which of ``values`` were written to ``topic`` at or after the ``since`` offsets."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in since]
            ends = await consumer.end_offsets(tps)
            todo = [tp for tp in tps if since[tp.partition] < ends[tp]]
            consumer.assign(todo)
            for tp in todo:
                consumer.seek(tp, since[tp.partition])
            found: set[bytes] = set()
            while todo:
                batches = await consumer.getmany(*todo, timeout_ms=1000)
                for messages in batches.values():
                    found.update(m.value for m in messages if m.value in values)
                todo = [tp for tp in todo if await consumer.position(tp) < ends[tp]]
            return found
        finally:
            await consumer.stop()
