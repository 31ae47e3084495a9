"""The scoring processor hands a batch's outputs to the producer and scores the next batch
while their acks are pending; an event is acked only once its outputs are acknowledged, and
events are acked in batch order whatever order the broker acknowledges the batches in."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.metrics import WorkerMetrics
from streams.pipeline import load_pipeline
from streams.publisher import Outgoing
from streams.scoring import ScoredBatch
from streams.settings import Settings
from streams.worker import BatchRunner, ScoringProcessor


class HeldAcks:
    """A publisher whose acknowledgements the test gives, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[asyncio.Future[Any]]] = []

    async def send(self, outgoing: list[Outgoing]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in outgoing]
        self.batches.append(futures)
        return futures

    async def confirm(self, outgoing: list[Outgoing], futures: list[asyncio.Future[Any]]) -> None:
        await asyncio.gather(*futures)

    def acknowledge(self, batch: int) -> None:
        for future in self.batches[batch]:
            future.set_result(None)


def test_events_are_acked_after_their_outputs_and_in_batch_order() -> None:
    settings = Settings()
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    metrics = WorkerMetrics()
    publisher = HeldAcks()
    processor = ScoringProcessor(
        settings,
        pipeline,
        None,  # type: ignore[arg-type]  # _score is replaced below
        metrics,
        BatchRunner(pipeline.name, metrics),
        publisher,  # type: ignore[arg-type]
    )
    processor._score = lambda records: (  # type: ignore[method-assign]
        ScoredBatch(),
        [("predictions", None, str(r).encode(), 0) for r in records],
    )
    acked: list[str] = []

    async def ack(event: Any) -> None:
        acked.append(event)

    async def scenario() -> None:
        # The first batch returns at once: its acks are pending, its events not acked.
        await processor._score_and_send(["r1", "r2"], ["e1", "e2"], ack)  # type: ignore[list-item]
        assert acked == [] and len(publisher.batches) == 1
        # The second is scored and handed over while the first waits for the broker...
        second = asyncio.ensure_future(
            processor._score_and_send(["r3"], ["e3"], ack)  # type: ignore[list-item]
        )
        while len(publisher.batches) < 2:
            await asyncio.sleep(0.01)
        # ...and the broker acknowledges the second first: nothing may be acked yet.
        publisher.acknowledge(1)
        await asyncio.sleep(0.05)
        assert acked == [] and not second.done()
        publisher.acknowledge(0)
        await second  # returns once the batch before it is delivered
        assert acked[:2] == ["e1", "e2"]
        await processor.flush()
        assert acked == ["e1", "e2", "e3"]

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("rtscore_events_in_total", {"pipeline": "fraud"}) == 3
