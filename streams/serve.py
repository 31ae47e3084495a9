"""`rtscore worker`: load the pipeline and the champion model, then run the faust worker."""

from __future__ import annotations

import asyncio
import logging

import faust
import redis

from models.registry import Registry
from streams.errors import ConfigError
from streams.features.redis_store import RedisStore
from streams.metrics import WorkerMetrics
from streams.pipeline import Pipeline, load_pipeline
from streams.publisher import AckedPublisher
from streams.scoring import BatchScorer, ServingModel
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.validation import EventDecoder
from streams.worker import BatchRunner, OutcomeProcessor, ScoringProcessor, build_app

log = logging.getLogger(__name__)


def serving_model(settings: Settings, pipeline: Pipeline) -> tuple[ServingModel, str]:
    """The champion of the pipeline's model, refused when it was trained on other features."""
    loaded = Registry(settings.registry_root).load(pipeline.model_name, "champion")
    meta = loaded.version.metadata
    trained_on = meta.get("feature_spec_hash")
    if trained_on != pipeline.feature_spec_hash:
        raise ConfigError(
            f"model {loaded.version.name} v{loaded.version.version} was trained on features "
            f"{trained_on} but the pipeline {pipeline.source} declares "
            f"{pipeline.feature_spec_hash}",
            hint="retrain with `rtscore train`, or promote a version trained on this pipeline",
        )
    model = ServingModel(
        name=loaded.version.name,
        version=loaded.version.version,
        variant="champion",
        estimator=loaded.estimator,
    )
    return model, loaded.version.sha256


def online_store(settings: Settings, pipeline: Pipeline) -> RedisStore | None:
    """The Redis feature store of a pipeline with stateful features (None without any)."""
    if not pipeline.stateful:
        return None
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    return RedisStore(pipeline, client, settings.namespace)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; offsets of acknowledged batches are committed on the way out."""
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    model, sha256 = serving_model(settings, pipeline)
    metrics = WorkerMetrics()
    metrics.model_info.labels(
        pipeline.name, model.name, str(model.version), model.variant, sha256
    ).set(1)
    metrics.serve(settings.metrics_port, settings.metrics_addr)
    # faust runs on this loop; topics are made first so the agent never waits on a missing one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    decoder = EventDecoder(pipeline.events, max_bytes=settings.max_event_bytes)
    store = online_store(settings, pipeline)
    runner = BatchRunner(pipeline.name, metrics)
    publisher = AckedPublisher(
        settings.kafka_bootstrap, on_retry=metrics.publish_retries.labels(pipeline.name).inc
    )
    scorer = BatchScorer(pipeline, decoder, model, store)
    scoring = ScoringProcessor(settings, pipeline, scorer, metrics, runner, publisher)
    outcomes = (
        OutcomeProcessor(settings, pipeline, store, metrics, runner, publisher)
        if store is not None and pipeline.outcomes is not None
        else None
    )
    app = build_app(settings, scoring, outcomes, publisher)
    log.info(
        "scoring %s with %s v%d (%s); metrics on %s:%s",
        settings.topics.events,
        model.name,
        model.version,
        model.variant,
        settings.metrics_addr,
        settings.metrics_port,
    )
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)
    worker.execute_from_commandline()
