"""`rtscore join`: run the outcome join (and the performance windows) as its own faust app."""

from __future__ import annotations

import asyncio
import logging

import faust
import redis
from aiokafka.admin import AIOKafkaAdminClient

from streams.errors import ConfigError
from streams.join.app import build_join_app
from streams.join.delivery import DeliveryCheck
from streams.join.metrics import JoinMetrics
from streams.join.policy import join_policy
from streams.join.processor import JoinProcessor
from streams.join.state import JoinState
from streams.performance.config import performance_config
from streams.pipeline import Pipeline, load_pipeline
from streams.publisher import AckedPublisher
from streams.settings import Settings
from streams.topics import EmptyPartitions, ensure_topics

log = logging.getLogger(__name__)


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Partitions per topic (the topics exist: ensure_topics ran first)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described}


def join_state(settings: Settings, pipeline: Pipeline) -> JoinState:
    policy = join_policy(pipeline)
    perf = performance_config(pipeline)
    ttl_ms = policy.max_delay_ms + policy.grace_ms
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    # A window's rows live until it is reported: its length, then every prediction's window.
    return JoinState(client, settings.namespace, pipeline.name, ttl_ms, ttl_ms + perf.window_ms)


def build_processor(
    settings: Settings, pipeline: Pipeline, metrics: JoinMetrics, loop: asyncio.AbstractEventLoop
) -> JoinProcessor:
    if pipeline.outcomes is None:
        raise ConfigError(
            f"pipeline {pipeline.source} declares no [outcomes]: there is nothing to join",
            hint="add an [outcomes] table (schema, id_field, time_field, label_field)",
        )
    topics = settings.topics
    loop.run_until_complete(ensure_topics(settings))
    inputs, outputs = [topics.predictions, topics.outcomes], [topics.labeled, topics.dlq]
    counts = loop.run_until_complete(partition_counts(settings, inputs + outputs))
    publisher = AckedPublisher(settings.kafka_bootstrap)
    delivery = DeliveryCheck(settings.kafka_bootstrap, {t: counts[t] for t in outputs})
    empty = EmptyPartitions(settings.kafka_bootstrap, inputs)
    # Before the first batch: a small first test must not wait for the timer's first read.
    loop.run_until_complete(empty.refresh())
    return JoinProcessor(
        settings,
        pipeline,
        join_state(settings, pipeline),
        publisher,
        metrics,
        {t: counts[t] for t in inputs},
        delivery,
        empty,
    )


def run_join(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: consumer group ``<prefix>-<pipeline>-join``, metrics on
    ``metrics_port + 1`` (when metrics are on)."""
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    metrics = JoinMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port + 1, settings.metrics_addr)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    processor = build_processor(settings, pipeline, metrics, loop)
    app = build_join_app(settings, processor)
    policy = processor.policy
    log.info(
        "joining %s with %s (max_delay %d ms, grace %d ms, on_missing %s) into %s",
        settings.topics.predictions,
        settings.topics.outcomes,
        policy.max_delay_ms,
        policy.grace_ms,
        policy.on_missing,
        settings.topics.labeled,
    )
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)
    worker.execute_from_commandline()
