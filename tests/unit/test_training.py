"""Training sets (labels, point in time, dedupe), fitting and the offline metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from models.metrics import auc_roc, average_precision, card_precision_at_k
from models.training import TrainingSet, build_training_set, evaluate, fit
from streams.errors import ConfigError
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.pipeline import Pipeline, load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT

T0 = 1_533_081_600_000  # 2018-08-01T00:00:00Z, a Wednesday
HOUR = 3_600_000


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas")


def tx(tid: int, at: int, customer: int = 1, amount: float = 10.0) -> dict:
    return {
        "transaction_id": tid,
        "tx_datetime": at,
        "customer_id": customer,
        "terminal_id": 7,
        "tx_amount": amount,
    }


def outcome(tid: int, at: int, fraud: bool) -> dict:
    return {
        "transaction_id": tid,
        "outcome_datetime": at,
        "tx_datetime": 0,
        "customer_id": 1,
        "terminal_id": 7,
        "is_fraud": fraud,
        "scenario": 1 if fraud else 0,
    }


def test_labels_come_from_the_outcome_of_the_same_event(pipeline: Pipeline) -> None:
    events = [tx(3, T0 + 3 * HOUR, amount=300.0), tx(1, T0 + HOUR), tx(2, T0 + 2 * HOUR)]
    events.append(dict(events[0]))  # redelivered: kept once
    outcomes = [outcome(3, T0 + 7 * MS_PER_DAY, True), outcome(2, T0 + 7 * MS_PER_DAY, False)]

    ts = build_training_set(pipeline, events, outcomes)

    assert ts.event_ids.tolist() == [1, 2, 3]  # event-time order, once each
    assert ts.y.tolist() == [0, 0, 1]  # 1: no outcome -> legitimate; 2: outcome says so
    assert ts.event_time_ms.tolist() == [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]
    assert ts.entity_keys.tolist() == [1, 1, 1]
    # rows in time order; features from the offline path over the events in arrival order
    offline = offline_features(pipeline, events, outcomes).X
    np.testing.assert_array_equal(ts.X, offline[[1, 2, 0]])
    assert ts.X[2][:3].tolist() == [300.0, 0.0, 1.0]  # amount, not weekend, night (03:00)
    assert (ts.n_rows, ts.n_positive) == (3, 1)


def test_only_outcomes_known_as_of_a_time_count(pipeline: Pipeline) -> None:
    events = [tx(1, T0), tx(2, T0 + HOUR)]
    outcomes = [
        outcome(1, T0 + 7 * MS_PER_DAY, True),
        outcome(2, T0 + 2 * MS_PER_DAY, True),
        outcome(2, T0 + 9 * MS_PER_DAY, False),  # a later correction
    ]

    def labels(as_of: int | None) -> list[int]:
        return build_training_set(pipeline, events, outcomes, as_of_ms=as_of).y.tolist()

    assert labels(T0 + MS_PER_DAY) == [0, 0]
    assert labels(T0 + 2 * MS_PER_DAY) == [0, 1]  # time_field <= as_of counts
    assert labels(T0 + 7 * MS_PER_DAY - 1) == [0, 1]
    assert labels(T0 + 7 * MS_PER_DAY) == [1, 1]
    assert labels(None) == [1, 0]  # everything known; the latest outcome wins


def test_the_no_outcome_policy_is_an_argument(pipeline: Pipeline) -> None:
    ts = build_training_set(pipeline, [tx(1, T0)], [], no_outcome_label=1)
    assert ts.y.tolist() == [1]


def test_the_hash_depends_on_the_rows_not_on_their_arrival_order(pipeline: Pipeline) -> None:
    # one event per customer: partitions (customers) may be read in any order; within one
    # customer arrival order is part of the features' meaning
    events = [tx(i, T0 + i * HOUR, customer=i, amount=float(i)) for i in range(20)]
    outcomes = [outcome(i, T0 + 8 * MS_PER_DAY, True) for i in range(0, 20, 3)]
    a = build_training_set(pipeline, events, outcomes)
    b = build_training_set(pipeline, events[::-1], outcomes[::-1])
    c = build_training_set(pipeline, events, outcomes[1:])

    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256


def test_a_pipeline_without_labels_cannot_train(pipeline: Pipeline) -> None:
    unlabeled = dataclasses.replace(pipeline, outcomes=None)
    with pytest.raises(ConfigError, match="no outcomes"):
        build_training_set(unlabeled, [tx(1, T0)], [])


def test_fit_uses_the_protocol_estimators() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0.5).astype(np.int64)

    lr = fit(X, y)
    assert isinstance(lr.named_steps["scaler"], StandardScaler)
    assert isinstance(lr.named_steps["model"], LogisticRegression)
    assert lr.named_steps["model"].get_params() == LogisticRegression().get_params()
    rf = fit(X, y, "random_forest").named_steps["model"]
    assert isinstance(rf, RandomForestClassifier)
    assert (rf.n_estimators, rf.random_state, rf.n_jobs, rf.max_depth) == (100, 0, 1, None)
    assert lr.predict_proba(X).shape == (200, 2)

    with pytest.raises(ConfigError, match="unknown estimator"):
        fit(X, y, "svm")
    with pytest.raises(ConfigError, match="only label"):
        fit(X, np.zeros(200, dtype=np.int64))


def test_auc_and_average_precision_are_sklearns() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=500)
    s = rng.random(500) + 0.3 * y
    assert auc_roc(y, s) == roc_auc_score(y, s)
    assert average_precision(y, s) == average_precision_score(y, s)
    assert np.isnan(auc_roc([0, 0], [0.1, 0.2]))
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_card_precision_at_k_by_hand() -> None:
    rows = [  # (day, card, score, label)
        # day 0: cards A .9/1, B .8/0, C .7/1, D .1/1; top 2 = A, B -> 1/2. Only the fraud
        # found, A, is detected: B stays in.
        (0, "A", 0.9, 1),
        (0, "A", 0.2, 0),
        (0, "B", 0.8, 0),
        (0, "C", 0.7, 1),
        (0, "D", 0.1, 1),
        # day 1: A is left out; B .7/1, D .65/1 (max of its two), C .6/1, E .3/0;
        # top 2 = B, D -> 2/2. B and D are detected.
        (1, "A", 0.95, 1),
        (1, "B", 0.7, 1),
        (1, "C", 0.6, 1),
        (1, "D", 0.5, 0),
        (1, "D", 0.65, 1),
        (1, "E", 0.3, 0),
        # day 2: D is left out; C .99/1, E .4/0; top 2 = C, E -> 1/2.
        (2, "C", 0.99, 1),
        (2, "D", 0.98, 1),
        (2, "E", 0.4, 0),
        # day 3: only detected cards -> 0/2 (always divided by k, even with no card).
        (3, "A", 0.5, 1),
    ]
    days, cards, scores, labels = (np.array(col) for col in zip(*rows, strict=True))

    # (1/2 + 2/2 + 1/2 + 0/2) / 4
    assert card_precision_at_k(labels, scores, cards, days, k=2) == pytest.approx(0.5)
    # k = 1: day 0 A -> 1; day 1 B -> 1; day 2 C -> 1 (not yet detected); day 3 -> 0.
    assert card_precision_at_k(labels, scores, cards, days, k=1) == pytest.approx(0.75)


def test_card_precision_ties_break_by_card_key() -> None:
    labels, scores = np.array([0, 1]), np.array([0.5, 0.5])
    assert card_precision_at_k(labels, scores, np.array(["x", "w"]), np.zeros(2), k=1) == 1.0
    assert card_precision_at_k(labels, scores, np.array(["w", "x"]), np.zeros(2), k=1) == 0.0


class _ScoreIsTheFirstFeature:
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([1 - X[:, 0], X[:, 0]])


def test_evaluate_reports_every_metric_by_day_and_card() -> None:
    X = np.array([[0.9], [0.8], [0.1], [0.7]])
    y = np.array([1, 0, 0, 1])
    times = np.array([T0, T0 + HOUR, T0 + MS_PER_DAY, T0 + MS_PER_DAY + HOUR])
    ts = TrainingSet(X, y, np.arange(4), times, np.array([1, 2, 1, 3]), "x")

    got = evaluate(_ScoreIsTheFirstFeature(), ts, k=1)

    assert got["auc_roc"] == roc_auc_score(y, X[:, 0])
    assert got["average_precision"] == average_precision_score(y, X[:, 0])
    # day 0: card 1 (.9, fraud) -> 1; day 1: card 1 detected, card 3 (.7, fraud) -> 1.
    assert got["card_precision_at_k"] == 1.0
    assert (got["n_rows"], got["n_positive"], got["k"]) == (4, 2, 1)
    # Other cards, k = 2: day 0 cards 1 (fraud) and 2 -> 1/2; day 1 card 9 holds both rows
    # (max .7, fraud) and is the only card -> 1/2, still divided by k.
    other = evaluate(_ScoreIsTheFirstFeature(), ts, card_key=np.array([1, 2, 9, 9]), k=2)
    assert other["card_precision_at_k"] == pytest.approx((0.5 + 0.5) / 2)
