"""`rtscore train`: a training set read from the topics, fitted, evaluated on a later range
separated by the label delay, and registered with its lineage (invariant 6)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.registry import ModelVersion, Registry
from models.topic_reader import TopicSlice, read_range
from models.training import TrainingSet, build_training_set, evaluate, fit
from streams.errors import ConfigError, InvalidEvent
from streams.features.offline import offline_features
from streams.pipeline import Pipeline, RecordSpec
from streams.settings import Settings
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class TrainPlan:
    """Train on [train_start, train_end), skip the label delay, test on [test_start, test_end)."""

    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int
    estimator: str = "logistic_regression"

    @classmethod
    def by_days(
        cls, start_ms: int, train_days: int, delay_days: int, test_days: int, estimator: str
    ) -> TrainPlan:
        train_end = start_ms + train_days * MS_PER_DAY
        test_start = train_end + delay_days * MS_PER_DAY
        return cls(start_ms, train_end, test_start, test_start + test_days * MS_PER_DAY, estimator)


def decode_slice(spec: RecordSpec, data: TopicSlice, max_bytes: int) -> list[dict[str, Any]]:
    """Decode with the worker's decoder; records the worker would dead-letter are skipped."""
    decoder = EventDecoder(spec, max_bytes=max_bytes)
    out: list[dict[str, Any]] = []
    skipped = 0
    for _key, value, _ts, _partition, _offset in data.records:
        try:
            out.append(decoder.decode(value))
        except InvalidEvent:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d records that the worker dead-letters", data.topic, skipped)
    return out


async def train_from_topics(
    settings: Settings,
    pipeline: Pipeline,
    plan: TrainPlan,
    *,
    progress: Callable[[str], None] = print,
) -> tuple[ModelVersion, dict[str, float]]:
    if pipeline.outcomes is None:
        raise ConfigError(
            f"{pipeline.source} declares no [outcomes]: there is nothing to learn from"
        )
    topics = settings.topics
    progress(f"reading {topics.events} and {topics.outcomes} …")
    bootstrap = settings.kafka_bootstrap
    # Windows reach back lookback_ms: read that much before the training range to warm them.
    warm_start = plan.train_start_ms - pipeline.lookback_ms
    events_slice = await read_range(bootstrap, topics.events, warm_start, plan.test_end_ms)
    outcomes_slice = await read_range(bootstrap, topics.outcomes, warm_start)
    events = decode_slice(pipeline.events, events_slice, settings.max_event_bytes)
    outcomes = decode_slice(pipeline.outcomes, outcomes_slice, settings.max_event_bytes)
    progress(f"computing {len(pipeline.features)} features of {len(events):,} events …")
    features = offline_features(pipeline, events, outcomes)
    train = build_training_set(
        pipeline,
        events,
        outcomes,
        features=features,
        start_ms=plan.train_start_ms,
        end_ms=plan.train_end_ms,
    )
    test = build_training_set(
        pipeline,
        events,
        outcomes,
        features=features,
        start_ms=plan.test_start_ms,
        end_ms=plan.test_end_ms,
    )
    for name, ts in (("training", train), ("test", test)):
        if len(ts.y) == 0 or ts.y.min() == ts.y.max():
            raise ConfigError(
                f"the {name} range has {len(ts.y)} events and a single label class",
                hint="widen the range or simulate more history (`rtscore simulate --days N`)",
            )
    progress(
        f"fitting {plan.estimator} on {len(train.y):,} events ({int(train.y.sum()):,} positive) …"
    )
    model = fit(train.X, train.y, plan.estimator)
    metrics = evaluate(model, test, card_key=test.entity_keys)
    metadata = {
        "pipeline": pipeline.name,
        "feature_names": pipeline.feature_names,
        "feature_spec_hash": pipeline.feature_spec_hash,
        "estimator": plan.estimator,
        "metrics": metrics,
        "training_data": _lineage(events_slice, plan, train, outcomes_slice),
        "test_data": {
            "start_ms": plan.test_start_ms,
            "end_ms": plan.test_end_ms,
            "rows": len(test.y),
            "label_rate": float(test.y.mean()),
        },
    }
    version = Registry(settings.registry_root).register(pipeline.model_name, model, metadata)
    return version, metrics


def _lineage(
    events: TopicSlice, plan: TrainPlan, train: TrainingSet, outcomes: TopicSlice
) -> dict[str, Any]:
    return {
        "topic": events.topic,
        "outcomes_topic": outcomes.topic,
        "start_ms": plan.train_start_ms,
        "end_ms": plan.train_end_ms,
        "read_from_ms": events.start_ms,  # the warm-up before start_ms feeds the windows
        "read_to_ms": events.end_ms,  # includes the test range, computed in the same pass
        "partition_offsets": {str(p): list(r) for p, r in sorted(events.offsets.items())},
        "outcomes_partition_offsets": {
            str(p): list(r) for p, r in sorted(outcomes.offsets.items())
        },
        "rows": len(train.y),
        "label_rate": float(np.mean(train.y)),
        "sha256": train.sha256,
    }
