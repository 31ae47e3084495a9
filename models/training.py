"""Training sets from decoded events and outcomes, model fitting and offline evaluation (pure).

Features come from :func:`streams.features.offline.offline_features`, the vectorised twin of
the online store (both match :mod:`streams.features.reference`), so a model is trained on the
numbers it is served (invariant 2). Reading the
topics and registering the result are the caller's business (``topic_reader``, ``registry``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from models import metrics
from streams.errors import ConfigError, InvalidEvent
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.features.reference import FeatureResult
from streams.pipeline import Pipeline

# Outcomes are a chargeback-style feed: most legitimate events never get one, so an event
# without an outcome (by as_of) counts as legitimate.
NO_OUTCOME_LABEL = 0
ESTIMATORS = ("logistic_regression", "random_forest")


@dataclass(frozen=True)
class TrainingSet:
    """Rows in (event time, event id) order, so the same events give the same bytes."""

    X: np.ndarray
    y: np.ndarray
    event_ids: np.ndarray
    event_time_ms: np.ndarray
    entity_keys: np.ndarray
    sha256: str  # of X's and y's shapes and bytes

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def n_positive(self) -> int:
        return int(np.count_nonzero(self.y))


def build_training_set(
    pipeline: Pipeline,
    events: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    *,
    as_of_ms: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    no_outcome_label: int = NO_OUTCOME_LABEL,
    features: FeatureResult | None = None,
) -> TrainingSet:
    """Join decoded events with their outcomes into features and labels.

    ``events`` are in arrival order (a topic read partition by partition is) and may start
    before ``start_ms``: the earlier ones only warm the windows up; rows are the events with
    ``start_ms`` <= time < ``end_ms``. Window features see outcomes as they were known at each
    event's own time, whatever ``as_of_ms`` says about labels. Pass ``features`` (the
    offline features of these events) to cut several sets from one computation.

    An event's label is the ``label_field`` of its outcome (matched on the outcomes'
    ``id_field`` = the events' ``id_field``); with ``as_of_ms`` only outcomes whose
    ``time_field`` <= ``as_of_ms`` are known (point in time). When several known outcomes
    label one event, the latest one counts. An event redelivered (same id) is kept once.
    """
    spec = pipeline.outcomes
    if spec is None or spec.label_field is None:
        raise ConfigError(
            f"pipeline {pipeline.name!r} ({pipeline.source}) declares no outcomes with a "
            "label_field",
            hint="add an [outcomes] table with id_field, time_field and label_field",
        )
    ev = pipeline.events
    key_field = ev.key_field or ev.id_field  # load_pipeline requires an events key_field
    if features is None:
        features = offline_features(pipeline, events, outcomes)
    lo = start_ms if start_ms is not None else -(2**63)
    hi = end_ms if end_ms is not None else 2**63 - 1
    first: dict[Any, int] = {}  # event id -> the occurrence the worker scored first
    for i, e in enumerate(events):
        if not features.dropped[i] and lo <= e[ev.time_field] < hi:
            first.setdefault(e[ev.id_field], i)
    order = sorted(first.values(), key=lambda i: (events[i][ev.time_field], events[i][ev.id_field]))
    rows = [events[i] for i in order]

    labels = _known_labels(outcomes, spec.id_field, spec.time_field, spec.label_field, as_of_ms)
    X = features.X[np.asarray(order, dtype=np.int64)] if order else features.X[:0]
    y = np.fromiter(
        (labels.get(e[ev.id_field], no_outcome_label) for e in rows),
        dtype=np.int64,
        count=len(rows),
    )
    return TrainingSet(
        X=X,
        y=y,
        event_ids=np.asarray([e[ev.id_field] for e in rows]),
        event_time_ms=np.fromiter(
            (e[ev.time_field] for e in rows), dtype=np.int64, count=len(rows)
        ),
        entity_keys=np.asarray([e[key_field] for e in rows]),
        sha256=_hash_xy(X, y),
    )


def _known_labels(
    outcomes: Sequence[Mapping[str, Any]],
    id_field: str,
    time_field: str,
    label_field: str,
    as_of_ms: int | None,
) -> dict[Any, int]:
    latest: dict[Any, tuple[int, int]] = {}  # event id -> (outcome time, label)
    for o in outcomes:
        at = o[time_field]
        if as_of_ms is not None and at > as_of_ms:
            continue
        label = o[label_field]
        if label not in (0, 1):  # True/False compare equal to 1/0
            raise InvalidEvent(
                "bad_label",
                f"outcome for {id_field}={o[id_field]!r} has {label_field}={label!r}",
                stage="train",
            )
        seen = latest.get(o[id_field])
        if seen is None or at >= seen[0]:
            latest[o[id_field]] = (at, int(label))
    return {event_id: label for event_id, (_, label) in latest.items()}


def _hash_xy(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)):
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fit(X: np.ndarray, y: np.ndarray, estimator: str = "logistic_regression") -> SkPipeline:
    """Standardise the inputs and fit the named estimator (the note's protocol settings)."""
    if estimator == "logistic_regression":
        model: Any = LogisticRegression()
    elif estimator == "random_forest":
        model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
    else:
        raise ConfigError(f"unknown estimator {estimator!r}", hint=f"use one of {ESTIMATORS}")
    classes = np.unique(y)
    if classes.size < 2:
        raise ConfigError(
            f"the training set ({len(y)} rows) has only label {classes.tolist()}",
            hint="widen the training range, or wait until its outcomes have arrived",
        )
    pipe = SkPipeline([("scaler", StandardScaler()), ("model", model)])
    pipe.fit(X, y)
    return pipe


def evaluate(
    model: Any, ts: TrainingSet, *, card_key: np.ndarray | None = None, k: int = 100
) -> dict[str, float]:
    """AUC ROC, average precision and daily Card Precision@k of ``model`` on ``ts``.

    Cards default to the training set's entity keys (the demo keys events by card); days are
    UTC days of the event time.
    """
    cards = ts.entity_keys if card_key is None else np.asarray(card_key)
    if len(cards) != ts.n_rows:
        raise ValueError(f"card_key has {len(cards)} entries for {ts.n_rows} rows")
    scores = model.predict_proba(ts.X)[:, 1] if ts.n_rows else np.empty(0)
    days = np.floor_divide(ts.event_time_ms, MS_PER_DAY)
    return {
        "auc_roc": metrics.auc_roc(ts.y, scores),
        "average_precision": metrics.average_precision(ts.y, scores),
        "card_precision_at_k": metrics.card_precision_at_k(ts.y, scores, cards, days, k),
        "k": float(k),
        "n_rows": float(ts.n_rows),
        "n_positive": float(ts.n_positive),
    }
