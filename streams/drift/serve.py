"""`rtscore drift run` (and the drift part of `rtscore worker`): the drift processor as its own
faust app and consumer group; each window is compared with the reference profile of the
version that decided its first prediction."""

from __future__ import annotations

import asyncio
import logging

import faust
import redis
from aiokafka.admin import AIOKafkaAdminClient

from models.registry import Registry
from streams.drift.config import drift_config
from streams.drift.metrics import DriftMetrics
from streams.drift.processor import DriftProcessor, build_drift_app
from streams.drift.references import References, registry_loader
from streams.drift.report import Reference
from streams.drift.window_state import WindowState
from streams.pipeline import Pipeline, load_pipeline
from streams.publisher import AckedPublisher
from streams.settings import Settings
from streams.topics import EmptyPartitions, ensure_topics

log = logging.getLogger(__name__)


def champion_reference(settings: Settings, pipeline: Pipeline) -> Reference:
    """The champion's reference profile, refused when it is missing or describes other
    features: without it the processor has nothing to fall back on, so it does not start."""
    registry = Registry(settings.registry_root)
    version = registry.resolve(pipeline.model_name, "champion")
    load = registry_loader(registry, pipeline, drift_config(pipeline).categorical)
    return load(version.name, version.version)


def load_references(settings: Settings, pipeline: Pipeline, metrics: DriftMetrics) -> References:
    """The champion's reference now (checked), any other version's on first use."""
    registry = Registry(settings.registry_root)
    load = registry_loader(registry, pipeline, drift_config(pipeline).categorical)

    def fell_back(name: str, version: int) -> None:
        metrics.reference_fallbacks.labels(pipeline.name, name, str(version)).inc()

    return References(champion_reference(settings, pipeline), load, fell_back)


async def partition_count(settings: Settings, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described[0]["partitions"])


def build_processor(
    settings: Settings, metrics: DriftMetrics, loop: asyncio.AbstractEventLoop
) -> tuple[DriftProcessor, AckedPublisher]:
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    config = drift_config(pipeline)
    references = load_references(settings, pipeline, metrics)
    loop.run_until_complete(ensure_topics(settings))
    partitions = loop.run_until_complete(partition_count(settings, settings.topics.predictions))
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    state = WindowState(client, settings.namespace, pipeline.name)
    publisher = AckedPublisher(settings.kafka_bootstrap)
    processor = DriftProcessor(
        settings, pipeline, config, references, state, publisher, metrics, partitions
    )
    if processor.outcome_decoder is not None:
        processor.outcome_partitions = loop.run_until_complete(
            partition_count(settings, settings.topics.outcomes)
        )
    inputs = [settings.topics.predictions]
    if processor.outcome_decoder is not None:
        inputs.append(settings.topics.outcomes)
    processor.empty = EmptyPartitions(settings.kafka_bootstrap, inputs)
    # Before the first batch: a small first test must not wait for the timer's first read.
    loop.run_until_complete(processor.refresh_empty())
    return processor, publisher


def run_drift(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; metrics on ``metrics_port + 2`` (off when the port is 0)."""
    metrics = DriftMetrics()
    port = settings.metrics_port + 2 if settings.metrics_port else 0
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    processor, publisher = build_processor(settings, metrics, loop)
    metrics.serve(port, settings.metrics_addr)
    app = build_drift_app(settings, processor, publisher)
    ref = processor.references.champion
    log.info(
        "drift of %s, each window against the profile of the version that decided its first "
        "prediction (%s v%d's now), %d-ms windows; metrics on %s:%s",
        settings.topics.predictions,
        ref.model_name,
        ref.model_version,
        processor.config.window_ms,
        settings.metrics_addr,
        port,
    )
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)
    worker.execute_from_commandline()
