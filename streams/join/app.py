"""The join worker's faust app: one agent over the predictions and outcomes topics (one
stream, so a batch's decisions never race another agent of the same worker), concurrency 1
(faust #606), micro-batches; a timer for the heartbeat, the recovery of stopped workers and
the reading of the inputs' empty partitions (left out of the watermark)."""

from __future__ import annotations

import faust

from streams.faust_app import processor_app
from streams.join.processor import JoinProcessor
from streams.settings import Settings
from streams.worker import input_record


def build_join_app(settings: Settings, processor: JoinProcessor) -> faust.App:
    pipeline = processor.pipeline
    topics = settings.topics
    app = processor_app(settings, pipeline, "join", small_fetches=True)
    channel = app.topic(
        topics.predictions, topics.outcomes, key_serializer="raw", value_serializer="raw"
    )
    publisher = processor.publisher

    async def consume(stream: faust.StreamT) -> None:
        await publisher.start()
        await processor.delivery.start()
        processor.started = True
        try:
            # take_events is on faust's Stream, not on its StreamT protocol.
            async for batch in stream.take_events(  # type: ignore[attr-defined]
                settings.batch_max, within=settings.batch_within_s
            ):
                await processor.process([input_record(event) for event in batch])
        finally:
            processor.started = False
            await processor.delivery.stop()
            await publisher.stop()

    app.agent(channel, name=f"rtscore.join.{pipeline.name}", concurrency=1)(consume)

    @app.timer(1.0)
    async def heartbeat_and_recover() -> None:
        # Wall clock only paces this check; what is decided follows the event-time watermark.
        await processor.recover()
        processor.watch_empty()  # every ~5 s, in the background

    return app
