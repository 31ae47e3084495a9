"""`rtscore worker`: load the pipeline and what its model serves, then run the faust worker,
following the model-events topic to swap versions without a restart."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import faust
import redis

from models.registry import Registry
from streams import model_events
from streams.features.redis_store import RedisStore
from streams.hot_swap import ModelSwapper, ServingRefused, load_routing
from streams.metrics import WorkerMetrics
from streams.pace_board import PaceBoard
from streams.pipeline import Pipeline, load_pipeline
from streams.publisher import AckedPublisher
from streams.routing import Routing
from streams.scoring import BatchScorer
from streams.serving_state import CHAMPION, ServingState
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.validation import EventDecoder
from streams.worker import BatchRunner, OutcomeProcessor, ScoringProcessor, build_app

log = logging.getLogger(__name__)

LoadedVersions = dict[tuple[str, int], tuple[Any, str]]


def registry_state(registry: Registry, pipeline: Pipeline) -> ServingState:
    """The serving state when the topic has none: the registry's champion alone."""
    champion = registry.resolve(pipeline.model_name, CHAMPION)
    return ServingState(
        model_name=pipeline.model_name,
        aliases={CHAMPION: champion.version},
        feature_spec_hash=pipeline.feature_spec_hash,
        action="registry",
        detail="the registry's champion (nothing published on the model-events topic)",
    )


async def startup_state(
    settings: Settings, registry: Registry, pipeline: Pipeline
) -> tuple[ServingState, int]:
    """The latest state on the model-events topic, else the registry's; and where to follow."""
    topic = settings.topics.model_events
    codec = model_events.codec(settings.schemas_dir)
    state, offset = await model_events.read_latest(
        settings.kafka_bootstrap, topic, pipeline.model_name, codec
    )
    if state is None:
        return registry_state(registry, pipeline), offset
    champion = registry.aliases(pipeline.model_name).get(CHAMPION)
    if champion != state.aliases.get(CHAMPION):
        log.warning(
            "the registry's champion is v%s but %s serves v%s: publish it with "
            "`rtscore model promote %s %s`",
            champion, topic, state.aliases.get(CHAMPION), pipeline.model_name, champion,
        )  # fmt: skip
    return state, offset


def serving_routing(
    settings: Settings, registry: Registry, pipeline: Pipeline, loop: asyncio.AbstractEventLoop
) -> tuple[ServingState, Routing, LoadedVersions, int]:
    state, offset = loop.run_until_complete(startup_state(settings, registry, pipeline))
    try:
        routing, loaded = load_routing(registry, pipeline, state)
    except ServingRefused as exc:
        raise ServingRefused(
            exc.reason,
            f"cannot serve {state.describe()} ({state.action}): {exc.message}",
            hint=exc.hint or "promote a version that loads: `rtscore model promote NAME VERSION`",
        ) from exc
    return state, routing, loaded, offset


def online_store(settings: Settings, pipeline: Pipeline) -> RedisStore | None:
    """The Redis feature store of a pipeline with stateful features (None without any)."""
    if not pipeline.stateful:
        return None
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    return RedisStore(pipeline, client, settings.namespace)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; offsets of acknowledged batches are committed on the way out."""
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    registry = Registry(settings.registry_root)
    # faust runs on this loop; topics are made first so the agent never waits on a missing one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    state, routing, loaded, follow_from = serving_routing(settings, registry, pipeline, loop)
    metrics = WorkerMetrics()
    decoder = EventDecoder(pipeline.events, max_bytes=settings.max_event_bytes)
    store = online_store(settings, pipeline)
    scorer = BatchScorer(pipeline, decoder, routing, store)
    swapper = ModelSwapper(registry, pipeline, scorer, metrics, state, loaded)
    metrics.serve(settings.metrics_port, settings.metrics_addr)
    runner = BatchRunner(pipeline.name, metrics)
    publisher = AckedPublisher(
        settings.kafka_bootstrap, on_retry=metrics.publish_retries.labels(pipeline.name).inc
    )
    board = (
        PaceBoard(
            store.client,
            f"{store.prefix}:pace:{settings.topics.events}",
            uuid.uuid4().hex[:12],
            stale_ms=int(2 * settings.session_timeout_s * 1000),
        )
        if store is not None
        else None
    )
    scoring = ScoringProcessor(settings, pipeline, scorer, metrics, runner, publisher, board)
    outcomes = (
        OutcomeProcessor(settings, pipeline, store, metrics, runner, publisher)
        if store is not None and pipeline.outcomes is not None
        else None
    )

    async def follow_model_events() -> None:
        await model_events.follow(
            settings.kafka_bootstrap,
            settings.topics.model_events,
            pipeline.model_name,
            model_events.codec(settings.schemas_dir),
            follow_from,
            swapper.apply,
        )

    app = build_app(settings, scoring, outcomes, publisher, background=[follow_model_events])
    log.info(
        "scoring %s with %s; following %s; metrics on %s:%s",
        settings.topics.events,
        state.describe(),
        settings.topics.model_events,
        settings.metrics_addr,
        settings.metrics_port,
    )
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)
    worker.execute_from_commandline()
