"""`rtscore drift run` (and the drift part of `rtscore worker`): the drift processor as its own
faust app and consumer group, compared with the champion's reference profile."""

from __future__ import annotations

import asyncio
import json
import logging

import faust
import redis
from aiokafka.admin import AIOKafkaAdminClient

from models.registry import Registry
from streams.drift.config import drift_config
from streams.drift.histogram import Layout
from streams.drift.metrics import DriftMetrics
from streams.drift.processor import DriftProcessor, build_drift_app
from streams.drift.report import Reference
from streams.drift.window_state import WindowState
from streams.errors import ConfigError
from streams.pipeline import Pipeline, load_pipeline
from streams.publisher import AckedPublisher
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def champion_reference(settings: Settings, pipeline: Pipeline) -> Reference:
    """The champion's reference profile, refused when it describes other features."""
    registry = Registry(settings.registry_root)
    version = registry.resolve(pipeline.model_name, "champion")
    profile = registry.profile(pipeline.model_name, version.version)
    if profile is None and (version.path / "profile.json").exists():
        profile = json.loads((version.path / "profile.json").read_text())
    if profile is None:
        raise ConfigError(
            f"{version.name} v{version.version} has no reference profile to compare with",
            hint="train it again with `rtscore train` (it stores one) and promote it",
        )
    if profile.get("feature_names") != pipeline.feature_names:
        raise ConfigError(
            f"the profile of {version.name} v{version.version} describes other features "
            f"than {pipeline.source}",
            hint="retrain with `rtscore train`, or promote a version trained on this pipeline",
        )
    declared = set(drift_config(pipeline).categorical)
    profiled = {n for n, f in profile["features"].items() if f.get("kind") == "categorical"}
    if declared != profiled:
        raise ConfigError(
            f"{pipeline.source} [drift] categorical is {sorted(declared)} but the profile of "
            f"{version.name} v{version.version} has category frequencies for {sorted(profiled)}",
            hint="retrain with `rtscore train` after changing [drift] categorical",
        )
    layout = Layout.from_profile(profile, pipeline.feature_names)
    return Reference(version.name, version.version, profile, layout)


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
    reference = champion_reference(settings, pipeline)
    loop.run_until_complete(ensure_topics(settings))
    partitions = loop.run_until_complete(partition_count(settings, settings.topics.predictions))
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    state = WindowState(client, settings.namespace, pipeline.name)
    publisher = AckedPublisher(settings.kafka_bootstrap)
    processor = DriftProcessor(
        settings, pipeline, config, reference, state, publisher, metrics, partitions
    )
    if processor.outcome_decoder is not None:
        processor.outcome_partitions = loop.run_until_complete(
            partition_count(settings, settings.topics.outcomes)
        )
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
    ref = processor.reference
    log.info(
        "drift of %s against %s v%d's profile, %d-ms windows; metrics on %s:%s",
        settings.topics.predictions,
        ref.model_name,
        ref.model_version,
        processor.config.window_ms,
        settings.metrics_addr,
        port,
    )
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)
    worker.execute_from_commandline()
