"""The naive design: one event at a time — decode, its own Redis round trip for the same
features, a one-row ``predict_proba``, ``send_and_wait`` for its prediction.

It runs the worker's own parts (:class:`~streams.scoring.BatchScorer` with batches of one,
the Redis store, the Prediction codec), so the only difference measured is the batching.
"""

from __future__ import annotations

import asyncio

import redis

from models.registry import Registry
from streams.bench.ceiling import consumer, producer
from streams.codecs import RecordCodec
from streams.features.redis_store import RedisStore
from streams.pipeline import load_pipeline
from streams.scoring import BatchScorer, InputRecord, ServingModel
from streams.settings import Settings
from streams.validation import EventDecoder


def naive_scorer(settings: Settings) -> BatchScorer:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    loaded = Registry(settings.registry_root).load(pipeline.model_name, "champion")
    model = ServingModel(loaded.version.name, loaded.version.version, "champion", loaded.estimator)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    store = RedisStore(pipeline, client, settings.namespace)
    decoder = EventDecoder(pipeline.events, max_bytes=settings.max_event_bytes)
    return BatchScorer(pipeline, decoder, model, store)


async def run_naive(settings: Settings, stop: asyncio.Event) -> None:
    scorer = naive_scorer(settings)
    codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
    out_topic, dlq = settings.topics.predictions, settings.topics.dlq
    # offsets committed in the background, as a simple consumer does
    source = consumer(settings, f"{settings.topic_prefix}-naive", auto_commit=True)
    sink = producer(settings)
    await source.start()
    await sink.start()
    try:
        while not stop.is_set():
            try:
                r = await asyncio.wait_for(source.getone(), 0.2)
            except TimeoutError:
                continue
            record = InputRecord(
                r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers)
            )
            scored = scorer.score([record])  # decode, one Redis round trip, one-row predict
            for _, prediction in scored.predictions:
                await sink.send_and_wait(
                    out_topic, codec.encode(prediction), key=r.key, timestamp_ms=r.timestamp
                )
            for _, _error in scored.dead_letters:
                await sink.send_and_wait(dlq, r.value, key=r.key, timestamp_ms=r.timestamp)
    finally:
        await sink.stop()
        await source.stop()
