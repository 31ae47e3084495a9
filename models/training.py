"""Training sets from decoded events and outcomes, model fitting and offline evaluation (pure).

Features come from :func:`streams.features.offline.offline_features`, the vectorised twin of
the online store (both match :mod:`streams.features.reference`), so a model is trained on the
numbers it is served (invariant 2). Reading the
topics and registering the result are the caller's business (``topic_reader``, ``registry``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import metrics
from models.estimators import BUILTIN, EstimatorSpec
from streams.errors import ConfigError, InvalidEvent
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.features.reference import FeatureResult
from streams.join.policy import JoinPolicy, join_policy
from streams.pipeline import Pipeline

ESTIMATORS = tuple(BUILTIN)
NO_LABEL_TIME = -1  # label_time_ms of a row that no outcome labelled


@dataclass(frozen=True)
class TrainingSet:
    """Rows in (event time, event id) order, so the same events give the same bytes."""

    X: np.ndarray
    y: np.ndarray
    event_ids: np.ndarray
    event_time_ms: np.ndarray
    entity_keys: np.ndarray
    sha256: str  # of X's and y's shapes and bytes
    n_unlabeled: int = 0  # events in range left out: no outcome and on_missing = "unlabeled"
    label_time_ms: np.ndarray | None = None  # time of the outcome that labelled each row

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def n_positive(self) -> int:
        return int(np.count_nonzero(self.y))

    def subset(self, keep: np.ndarray) -> TrainingSet:
        """The rows where ``keep`` is True, in the same order (hash recomputed)."""
        X, y = self.X[keep], self.y[keep]
        return dataclasses.replace(
            self,
            X=X,
            y=y,
            event_ids=self.event_ids[keep],
            event_time_ms=self.event_time_ms[keep],
            entity_keys=self.entity_keys[keep],
            sha256=_hash_xy(X, y),
            label_time_ms=None if self.label_time_ms is None else self.label_time_ms[keep],
        )


def build_training_set(
    pipeline: Pipeline,
    events: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    *,
    as_of_ms: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    policy: JoinPolicy | None = None,
    features: FeatureResult | None = None,
) -> TrainingSet:
    """Join decoded events with their outcomes into features and labels.

    ``events`` are in arrival order (a topic read partition by partition is) and may start
    before ``start_ms``: the earlier ones only warm the windows up; rows are the events with
    ``start_ms`` <= time < ``end_ms``. Window features see outcomes as they were known at each
    event's own time, whatever ``as_of_ms`` says about labels. Pass ``features`` (the
    offline features of these events) to cut several sets from one computation.

    Labels follow the pipeline's ``[join]`` rule (``policy`` overrides it), the one the join
    processor and backtests apply: an event is labelled by the ``label_field`` of the first
    outcome of its id (outcomes' ``id_field`` = events' ``id_field``, in arrival order) whose
    time is within ``max_delay`` of the event's; later outcomes are ignored. With
    ``as_of_ms`` only outcomes whose ``time_field`` <= ``as_of_ms`` are known (point in
    time). An event with none gets ``on_missing``: label 0 ("negative") or no row
    ("unlabeled", counted in ``n_unlabeled``). An event redelivered (same id) is kept once.
    """
    spec = pipeline.outcomes
    if spec is None or spec.label_field is None:
        raise ConfigError(
            f"pipeline {pipeline.name!r} ({pipeline.source}) declares no outcomes with a "
            "label_field",
            hint="add an [outcomes] table with id_field, time_field and label_field",
        )
    policy = policy or join_policy(pipeline)
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

    times = {str(events[i][ev.id_field]): events[i][ev.time_field] for i in order}
    known = label_events(pipeline, policy, times, outcomes, as_of_ms)
    missing = policy.missing_label()
    labels: list[int] = []
    label_times: list[int] = []
    kept: list[int] = []
    for i in order:
        label, at = known.get(str(events[i][ev.id_field]), (missing, NO_LABEL_TIME))
        if label is not None:
            kept.append(i)
            labels.append(label)
            label_times.append(at)
    rows = [events[i] for i in kept]
    X = features.X[np.asarray(kept, dtype=np.int64)] if kept else features.X[:0]
    y = np.asarray(labels, dtype=np.int64)
    return TrainingSet(
        X=X,
        y=y,
        event_ids=np.asarray([e[ev.id_field] for e in rows]),
        event_time_ms=np.fromiter(
            (e[ev.time_field] for e in rows), dtype=np.int64, count=len(rows)
        ),
        entity_keys=np.asarray([e[key_field] for e in rows]),
        sha256=_hash_xy(X, y),
        n_unlabeled=len(order) - len(kept),
        label_time_ms=np.asarray(label_times, dtype=np.int64),
    )


def label_events(
    pipeline: Pipeline,
    policy: JoinPolicy,
    event_times: Mapping[str, int],
    outcomes: Sequence[Mapping[str, Any]],
    as_of_ms: int | None = None,
) -> dict[str, tuple[int, int]]:
    """str(event id) -> (label, outcome time) for the events of ``event_times`` (str(id) ->
    event time) that an outcome labels under ``policy``: the first of their id, in the order
    given, that is known by ``as_of_ms`` and within ``max_delay``."""
    spec = pipeline.outcomes
    assert spec is not None and spec.label_field is not None
    id_field, time_field, label_field = spec.id_field, spec.time_field, spec.label_field
    out: dict[str, tuple[int, int]] = {}
    for o in outcomes:
        event_id = str(o[id_field])
        at = o[time_field]
        event_time = event_times.get(event_id)
        if event_time is None or event_id in out or (as_of_ms is not None and at > as_of_ms):
            continue
        if not policy.in_window(event_time, at):
            continue
        label = o[label_field]
        if label not in (0, 1):  # True/False compare equal to 1/0
            raise InvalidEvent(
                "bad_label",
                f"outcome for {id_field}={o[id_field]!r} has {label_field}={label!r}",
                stage="train",
            )
        out[event_id] = (int(label), at)
    return out


def without_known_positives(
    entity_keys: np.ndarray,
    event_time_ms: np.ndarray,
    positive_keys: np.ndarray,
    known_at_ms: np.ndarray,
) -> np.ndarray:
    """Which rows to keep: False for a row on (UTC) day D whose entity had a positive label
    known (its outcome arrived) before D began.

    The positives are those of events from the first training day on, so this is the
    handbook's "on test day T drop every card with a fraud from the first training day
    through T - 8" when labels arrive 7 days after their events: a fraud of day T - 8 is
    known on day T - 1, one of day T - 7 only on day T.
    """
    first_known: dict[Any, int] = {}
    for key, at in zip(positive_keys.tolist(), known_at_ms.tolist(), strict=True):
        if at != NO_LABEL_TIME and at < first_known.get(key, 2**63):
            first_known[key] = at
    day_start = np.floor_divide(event_time_ms, MS_PER_DAY) * MS_PER_DAY
    known = np.fromiter(
        (first_known.get(k, 2**63 - 1) for k in entity_keys.tolist()),
        dtype=np.int64,
        count=len(entity_keys),
    )
    keep: np.ndarray = known >= day_start
    return keep


def _hash_xy(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)):
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fit(
    X: np.ndarray, y: np.ndarray, estimator: str | EstimatorSpec = "logistic_regression"
) -> Any:
    """Fit the estimator the spec describes (a built-in name: its protocol settings,
    standardised) on ``X``, ``y``."""
    spec = estimator if isinstance(estimator, EstimatorSpec) else _builtin(estimator)
    classes = np.unique(y)
    if classes.size < 2:
        raise ConfigError(
            f"the training set ({len(y)} rows) has only label {classes.tolist()}",
            hint="widen the training range, or wait until its outcomes have arrived",
        )
    model = spec.build()
    try:
        model.fit(X, y)
    except ValueError as exc:
        if type(exc).__name__ != "InvalidParameterError":  # scikit-learn's, a ValueError
            raise
        raise ConfigError(
            f"[model] params of {spec.estimator} are invalid: {exc}",
            hint="fix the value in the pipeline's [model] params table",
        ) from exc
    return model


def _builtin(name: str) -> EstimatorSpec:
    if name not in BUILTIN:
        raise ConfigError(
            f"unknown estimator {name!r}",
            hint=f"use one of {ESTIMATORS}, or an EstimatorSpec with a class's dotted path",
        )
    return EstimatorSpec(name)


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
