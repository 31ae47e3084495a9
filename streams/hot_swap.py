"""From a serving state to the routing a worker scores with, and the swap of it in a running
worker.

A state is served only when every version it names loads (its artifact's sha256 checks out)
and was trained on the pipeline's feature spec; otherwise it is refused whole, with a reason,
and the routing already serving stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from models.registry import Registry
from streams.errors import ConfigError, RegistryError
from streams.metrics import WorkerMetrics
from streams.pipeline import Pipeline
from streams.routing import Routing, ServingModel, Shadow
from streams.scoring import BatchScorer
from streams.serving_state import ServingState

log = logging.getLogger(__name__)


class ServingRefused(ConfigError):
    """A serving state that cannot be served; ``reason`` is a short code (a metric label)."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, hint=hint)


def checked_version(
    registry: Registry, pipeline: Pipeline, name: str, version: int
) -> tuple[Any, str]:
    """The estimator and sha256 of ``name`` v``version``, refused unless it loads (sha256
    and all) and was trained on ``pipeline``'s feature spec."""
    try:
        loaded = registry.load(name, version)
    except RegistryError as exc:
        raise ServingRefused("unloadable", exc.message, hint=exc.hint) from exc
    trained_on = loaded.version.metadata.get("feature_spec_hash")
    if trained_on != pipeline.feature_spec_hash:
        raise ServingRefused(
            "feature_spec_mismatch",
            f"model {name} v{version} was trained on features {str(trained_on)[:12]}… but "
            f"the pipeline {pipeline.source} declares {pipeline.feature_spec_hash[:12]}…",
            hint="retrain with `rtscore train` on this pipeline, or serve a version trained on it",
        )
    return loaded.estimator, loaded.version.sha256


def load_routing(
    registry: Registry,
    pipeline: Pipeline,
    state: ServingState,
    loaded: dict[tuple[str, int], tuple[Any, str]] | None = None,
) -> tuple[Routing, dict[tuple[str, int], tuple[Any, str]]]:
    """The routing of ``state`` and the (estimator, sha256) of each version it uses.

    ``loaded`` holds versions already loaded and checked (versions never change), so a
    change of the challenger does not load the champion again. Blocking: file reads and
    artifact loading; call it off the event loop.
    """
    problems = state.problems()
    if problems:
        raise ServingRefused(
            "invalid_state", f"serving state of {state.model_name}: " + "; ".join(problems)
        )
    if state.model_name != pipeline.model_name:
        raise ServingRefused(
            "other_model",
            f"serving state is for {state.model_name}; the pipeline serves {pipeline.model_name}",
        )
    cache = dict(loaded or {})
    used: dict[tuple[str, int], tuple[Any, str]] = {}
    for alias in state.used_aliases():
        key = (state.model_name, state.aliases[alias])
        if key not in cache:
            cache[key] = checked_version(registry, pipeline, *key)
        used[key] = cache[key]

    def model(alias: str) -> ServingModel:
        version = state.aliases[alias]
        return ServingModel(state.model_name, version, alias, used[(state.model_name, version)][0])

    arms = state.arms()
    # A shadow of the very version that decides every event (e.g. just after the challenger
    # was promoted) would only repeat the decision's score: it is left out until it differs.
    deciding = {state.aliases[alias] for alias, _ in arms}
    routing = Routing(
        arms=tuple(model(alias) for alias, _ in arms),
        weights=tuple(weight for _, weight in arms),
        shadows=tuple(
            Shadow(model(alias), share)
            for alias, share in state.shadow_shares()
            if deciding != {state.aliases[alias]}
        ),
    )
    return routing, used


class ModelSwapper:
    """Applies serving states to a running worker's scorer, between micro-batches."""

    def __init__(
        self,
        registry: Registry,
        pipeline: Pipeline,
        scorer: BatchScorer,
        metrics: WorkerMetrics,
        state: ServingState,
        loaded: dict[tuple[str, int], tuple[Any, str]],
    ) -> None:
        self.registry = registry
        self.pipeline = pipeline
        self.scorer = scorer
        self.metrics = metrics
        self.state = state
        self.loaded = loaded
        # Loading runs beside the batch thread: a swap never waits for a batch, nor a batch
        # for a load.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtscore-swap")
        self.show_info()

    async def apply(self, state: ServingState) -> bool:
        """Serve ``state`` from the next micro-batch on; False when it is refused or no change."""
        if state.serving == self.state.serving:
            return False
        loop = asyncio.get_running_loop()
        try:
            routing, loaded = await loop.run_in_executor(
                self.executor, load_routing, self.registry, self.pipeline, state, self.loaded
            )
        except Exception as exc:
            # Whatever went wrong, the follower goes on and the serving routing stays.
            reason = exc.reason if isinstance(exc, ServingRefused) else "error"
            message = exc.message if isinstance(exc, ServingRefused) else repr(exc)
            self.metrics.model_swaps_refused.labels(self.pipeline.name, reason).inc()
            # Formatted here: the log throttle keys on the message, and each change counts.
            log.error(
                f"not serving {state.describe()} ({state.action} by {state.actor or '?'}): "
                f"{message}; still serving {self.state.describe()}",
                exc_info=not isinstance(exc, ServingRefused),
            )
            return False
        # One attribute write on the event loop: the batch thread reads the routing once per
        # batch, so every batch is scored by the old routing or the new one, whole.
        self.scorer.routing = routing
        self.state, self.loaded = state, loaded
        self.show_info()
        self.metrics.model_swaps.labels(self.pipeline.name).inc()
        lag = time.time() - state.time_ms / 1000 if state.time_ms else float("nan")
        if state.time_ms:
            self.metrics.model_swap_lag.labels(self.pipeline.name).set(lag)
        log.info(
            f"now serving {state.describe()} ({state.action} by {state.actor or '?'}, "
            f"{lag:.2f}s after it was published)"
        )
        return True

    def show_info(self) -> None:
        """rtscore_model_info: one series per version serving, as an arm or a shadow."""
        info = self.metrics.model_info
        info.clear()
        routing = self.scorer.routing
        roles = [(m, "arm") for m in routing.arms] + [(s.model, "shadow") for s in routing.shadows]
        for m, role in roles:
            sha256 = self.loaded.get((m.name, m.version), (None, ""))[1]
            info.labels(self.pipeline.name, m.name, str(m.version), m.variant, role, sha256).set(1)
