"""A sketch of the worker's loop without faust, for comparison only (``--contenders
rtscore,overlap``): the same scoring parts on aiokafka batches, with the next batch scored
while the previous batch's predictions wait for their acknowledgements.

Offsets are committed only once a batch's outputs are acknowledged (at-least-once, as the
worker); ``getmany`` hands over whatever has arrived instead of waiting to fill a batch.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import TopicPartition

from streams.bench.ceiling import consumer, producer
from streams.bench.naive import naive_scorer
from streams.codecs import RecordCodec
from streams.scoring import InputRecord
from streams.settings import Settings


async def run_overlap(settings: Settings, stop: asyncio.Event) -> None:
    scorer = naive_scorer(settings)
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    out_topic, dlq = settings.topics.predictions, settings.topics.dlq
    source, sink = consumer(settings, f"{settings.topic_prefix}-overlap"), producer(settings)
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlap")
    await source.start()
    await sink.start()
    in_flight: tuple[list[Any], dict[TopicPartition, int]] | None = None
    try:
        while not stop.is_set():
            batches = await source.getmany(timeout_ms=100, max_records=settings.batch_max)
            records = [
                InputRecord(
                    r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers)
                )
                for rs in batches.values()
                for r in rs
            ]
            offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs}
            futures: list[Any] = []
            if records:
                scored = await loop.run_in_executor(thread, scorer.score, records)
                for record, prediction in scored.predictions:
                    value = codec.encode(prediction)
                    futures.append(
                        await sink.send(
                            out_topic, value, key=record.key, timestamp_ms=record.timestamp_ms
                        )
                    )
                for record, _error in scored.dead_letters:
                    futures.append(
                        await sink.send(
                            dlq, record.value, key=record.key, timestamp_ms=record.timestamp_ms
                        )
                    )
            if in_flight is not None:  # the previous batch: acknowledged, then committed
                await asyncio.gather(*in_flight[0])
                await source.commit(in_flight[1])
            in_flight = (futures, offsets) if records else None
        if in_flight is not None:
            await asyncio.gather(*in_flight[0])
            await source.commit(in_flight[1])
    finally:
        await sink.stop()
        await source.stop()
        thread.shutdown()
