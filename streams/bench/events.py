"""The bench's events: one simulation of the fraud demo, cut into the same slices for every
contender (backlog, each offered load, the long RSS run), and a model trained on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from models.profile import build_profile
from models.registry import Registry
from models.training import build_training_set, fit
from streams.demo.publish import json_bytes, publish
from streams.demo.simulator import (
    SimConfig,
    Simulation,
    outcome_records,
    simulate,
    transaction_records,
)
from streams.features.offline import offline_features
from streams.pipeline import Pipeline

EVENTS_PER_DAY = 1900  # the light world with 1,000 customers draws about this many a day
TRAIN_DAYS = 21
CHUNK = 50_000


@dataclasses.dataclass(frozen=True)
class BenchEvents:
    """``total`` simulated transactions in event-time order; a slice is a range of rows."""

    sim: Simulation
    cfg: SimConfig
    total: int

    @classmethod
    def generate(cls, total: int, seed: int) -> BenchEvents:
        days = total // EVENTS_PER_DAY + 2
        cfg = dataclasses.replace(
            SimConfig.light(seed=seed, n_customers=1000, n_terminals=2000), n_days=days
        )
        sim = simulate(cfg)
        return cls(sim, cfg, min(total, len(sim)))

    def records(self, start: int, stop: int) -> list[dict[str, Any]]:
        return transaction_records(self.sim, np.arange(start, min(stop, self.total)))

    def outcomes(self, stop: int) -> list[dict[str, Any]]:
        """Outcomes (frauds, delayed) of rows below ``stop``, for the label state."""
        return outcome_records(self.sim, self.cfg, np.arange(min(stop, self.total)))

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for lo in range(start, min(stop, self.total), CHUNK):
            yield self.records(lo, min(lo + CHUNK, stop))


async def produce(
    bootstrap: str,
    topic: str,
    events: BenchEvents,
    start: int,
    stop: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rows [start, stop) as JSON to ``topic``, keyed by customer, as fast as the broker acks."""
    sent = 0
    for chunk in events.chunks(start, stop):
        sent += await publish(
            bootstrap,
            topic,
            chunk,
            key_field="customer_id",
            time_field="tx_datetime",
            codec=json_bytes,
            progress=None if progress is None else _shifted(progress, sent),
        )
    return sent


def _shifted(progress: Callable[[int], None], offset: int) -> Callable[[int], None]:
    return lambda n: progress(offset + n)


def train_and_register(pipeline: Pipeline, events: BenchEvents, registry: Registry) -> int:
    """Fit the demo model on the first weeks' offline features and make it the champion."""
    stop = min(events.total, TRAIN_DAYS * EVENTS_PER_DAY)
    rows = events.records(0, stop)
    outcomes = events.outcomes(stop)
    features = offline_features(pipeline, rows, outcomes)
    ts = build_training_set(pipeline, rows, outcomes, features=features)
    model = fit(ts.X, ts.y)
    # the reference profile the drift processor compares with (``--with-drift``)
    profile = build_profile(ts.X, pipeline.feature_names, model.predict_proba(ts.X)[:, 1], ts.y)
    version = registry.register(
        pipeline.model_name,
        model,
        {
            "pipeline": pipeline.name,
            "feature_names": pipeline.feature_names,
            "feature_spec_hash": pipeline.feature_spec_hash,
            "estimator": "logistic_regression",
            "metrics": {},
            "training_data": {"source": "rtscore bench simulation", "rows": ts.n_rows},
        },
        profile=profile,
    )
    registry.set_alias(pipeline.model_name, "champion", version.version)
    return version.version
