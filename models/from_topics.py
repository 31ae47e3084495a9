"""`rtscore train`: a training set read from the topics, fitted, evaluated on a later range
separated by the label delay, and registered with its lineage (invariant 6)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.estimators import ModelConfig, model_config
from models.profile import build_profile
from models.registry import ModelVersion, Registry
from models.topic_reader import TopicSlice, read_range
from models.training import TrainingSet, build_training_set, evaluate, fit, without_known_positives
from streams.drift.config import drift_config
from streams.errors import ConfigError, InvalidEvent
from streams.features.offline import offline_features
from streams.join.policy import JoinPolicy, join_policy
from streams.pipeline import Pipeline, RecordSpec
from streams.settings import Settings
from streams.validation import EventDecoder

log = logging.getLogger(__name__)
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class TrainPlan:
    """Train on [train_start, train_end), skip the label delay, test on [test_start, test_end).

    ``estimator`` overrides the pipeline's ``[model] estimator`` (None: the pipeline's)."""

    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int
    estimator: str | None = None

    @classmethod
    def by_days(
        cls,
        start_ms: int,
        train_days: int,
        delay_days: int,
        test_days: int,
        estimator: str | None = None,
    ) -> TrainPlan:
        if train_days < 1 or test_days < 1 or delay_days < 0:
            raise ConfigError(
                f"train {train_days} days, delay {delay_days}, test {test_days}",
                hint="train and test at least 1 day each; the delay is 0 days or more",
            )
        train_end = start_ms + train_days * MS_PER_DAY
        test_start = train_end + delay_days * MS_PER_DAY
        return cls(start_ms, train_end, test_start, test_start + test_days * MS_PER_DAY, estimator)


def decode_slice(spec: RecordSpec, data: TopicSlice, max_bytes: int) -> list[dict[str, Any]]:
    """Decode with the worker's decoder; records the worker would dead-letter are skipped."""
    decoder = EventDecoder(spec, max_bytes=max_bytes)
    out: list[dict[str, Any]] = []
    skipped = 0
    for _key, value, _ts, partition, offset in data.records:
        try:
            out.append(decoder.decode(value, data.headers.get((partition, offset))))
        except InvalidEvent:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d records that the worker dead-letters", data.topic, skipped)
    return out


@dataclass(frozen=True)
class Split:
    """The training and test sets of a plan, and what evaluation left out of the test set."""

    train: TrainingSet
    test: TrainingSet
    excluded: int  # test rows of entities with a positive known before their day


def split(
    pipeline: Pipeline,
    config: ModelConfig,
    plan: TrainPlan,
    events: list[dict[str, Any]],
    outcomes: list[dict[str, Any]],
    policy: JoinPolicy,
) -> Split:
    """Training and test sets of decoded events and outcomes (features computed once)."""
    features = offline_features(pipeline, events, outcomes)

    def rows(start_ms: int, end_ms: int) -> TrainingSet:
        return build_training_set(
            pipeline, events, outcomes, features=features, policy=policy,
            start_ms=start_ms, end_ms=end_ms,
        )  # fmt: skip

    train = rows(plan.train_start_ms, plan.train_end_ms)
    test = rows(plan.test_start_ms, plan.test_end_ms)
    excluded = 0
    if config.exclude_known_positives:
        seen = rows(plan.train_start_ms, plan.test_end_ms)
        positive = seen.y == 1
        assert seen.label_time_ms is not None
        keep = without_known_positives(
            test.entity_keys,
            test.event_time_ms,
            seen.entity_keys[positive],
            seen.label_time_ms[positive],
        )
        excluded = int(np.count_nonzero(~keep))
        test = test.subset(keep)
    return Split(train, test, excluded)


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
    config = model_config(pipeline, plan.estimator)
    policy = join_policy(pipeline)
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
    sets = split(pipeline, config, plan, events, outcomes, policy)
    train, test = sets.train, sets.test
    for name, ts in (("training", train), ("test", test)):
        if len(ts.y) == 0 or ts.y.min() == ts.y.max():
            raise ConfigError(
                f"the {name} range has {len(ts.y)} events and a single label class",
                hint="widen the range or simulate more history (`rtscore simulate --days N`)",
            )
    spec = config.spec
    progress(
        f"fitting {spec.estimator} on {train.n_rows:,} events ({train.n_positive:,} positive) …"
    )
    model = fit(train.X, train.y, spec)
    if sets.excluded:
        progress(f"test: {sets.excluded:,} events of entities with a known positive left out")
    metrics = evaluate(model, test, card_key=test.entity_keys)
    # The drift processor compares by category the features [drift] declares categorical.
    profile = build_profile(
        train.X,
        pipeline.feature_names,
        model.predict_proba(train.X)[:, 1],
        train.y,
        categorical=drift_config(pipeline).categorical,
    )
    metadata = {
        "pipeline": pipeline.name,
        "feature_names": pipeline.feature_names,
        "feature_spec_hash": pipeline.feature_spec_hash,
        "estimator": spec.describe(),
        "metrics": metrics,
        "training_data": _lineage(events_slice, plan, train, outcomes_slice, policy),
        "test_data": {
            "start_ms": plan.test_start_ms,
            "end_ms": plan.test_end_ms,
            "rows": test.n_rows,
            "positives": test.n_positive,
            "label_rate": float(test.y.mean()),
            "excluded": {
                "rule": "entities with a positive known before the row's day"
                if config.exclude_known_positives
                else "none",
                "rows": sets.excluded,
            },
        },
    }
    version = Registry(settings.registry_root).register(
        pipeline.model_name, model, metadata, profile=profile, trusted=spec.trusted
    )
    return version, metrics


def _lineage(
    events: TopicSlice,
    plan: TrainPlan,
    train: TrainingSet,
    outcomes: TopicSlice,
    policy: JoinPolicy,
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
        "rows": train.n_rows,
        "positives": train.n_positive,
        "unlabeled_rows_left_out": train.n_unlabeled,
        "label_rate": float(np.mean(train.y)),
        "labels": {
            "rule": "first outcome of the event's id within max_delay",
            "max_delay_ms": policy.max_delay_ms,
            "on_missing": policy.on_missing,
        },
        "sha256": train.sha256,
    }
