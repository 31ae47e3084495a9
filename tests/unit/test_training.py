"""Training sets (labels by the join rule, point in time, dedupe), fitting, the evaluation
protocol (known positives left out) and the offline metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from models.estimators import EstimatorSpec, ModelConfig
from models.from_topics import TrainPlan, split
from models.metrics import auc_roc, average_precision, card_precision_at_k
from models.training import (
    NO_LABEL_TIME,
    TrainingSet,
    build_training_set,
    evaluate,
    fit,
    without_known_positives,
)
from streams.errors import ConfigError
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.join.policy import JoinPolicy, join_policy
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
    assert labels(None) == [1, 1]  # everything known; the first outcome wins


def test_labels_follow_the_join_rule(pipeline: Pipeline) -> None:
    # The pipeline's [join]: the first outcome of an id within max_delay (30 days) labels
    # it; later copies and corrections are ignored; none in time -> on_missing.
    events = [tx(i, T0 + i * HOUR) for i in range(1, 6)]
    outcomes = [
        outcome(1, T0 + 8 * MS_PER_DAY, True),
        outcome(1, T0 + 8 * MS_PER_DAY, True),  # a redelivered copy
        outcome(2, T0 + 3 * MS_PER_DAY, False),
        outcome(2, T0 + 5 * MS_PER_DAY, True),  # a later correction: ignored
        outcome(3, T0 + 3 * HOUR + 30 * MS_PER_DAY + 1, True),  # 1 ms past max_delay
        outcome(4, T0 + 4 * HOUR + 30 * MS_PER_DAY, True),  # exactly at max_delay
        outcome(99, T0, True),  # labels no event in range
    ]
    ts = build_training_set(pipeline, events, outcomes)
    assert join_policy(pipeline) == JoinPolicy(30 * MS_PER_DAY, "negative")
    assert ts.event_ids.tolist() == [1, 2, 3, 4, 5]
    assert ts.y.tolist() == [1, 0, 0, 1, 0]
    assert ts.n_unlabeled == 0
    assert ts.label_time_ms is not None
    assert ts.label_time_ms.tolist() == [
        T0 + 8 * MS_PER_DAY,
        T0 + 3 * MS_PER_DAY,
        NO_LABEL_TIME,
        T0 + 4 * HOUR + 30 * MS_PER_DAY,
        NO_LABEL_TIME,
    ]

    # on_missing = "unlabeled": events no outcome labelled in time are left out, counted.
    unlabeled = build_training_set(
        pipeline, events, outcomes, policy=JoinPolicy(30 * MS_PER_DAY, "unlabeled")
    )
    assert unlabeled.event_ids.tolist() == [1, 2, 4]
    assert unlabeled.y.tolist() == [1, 0, 1]
    assert unlabeled.n_unlabeled == 2
    # A shorter max_delay: outcome 1 (8 days later) no longer labels its event.
    short = build_training_set(pipeline, events, outcomes, policy=JoinPolicy(7 * MS_PER_DAY))
    assert short.y.tolist() == [0, 0, 0, 0, 0]


def test_known_positives_are_left_out_from_the_day_after_they_are_known() -> None:
    day = [T0 + d * MS_PER_DAY for d in range(4)]
    positive_keys = np.array(["A", "B", "C", "A"])
    known_at = np.array([day[1] + 12 * HOUR, day[2], NO_LABEL_TIME, day[3] + HOUR])
    rows = [  # (entity, time) -> kept?
        ("A", day[1] + 10 * HOUR),  # known later that same day: kept
        ("A", day[2] + HOUR),  # known before day 2 began: left out
        ("B", day[2] + 5 * HOUR),  # known exactly at midnight, not before it: kept
        ("B", day[3]),  # left out
        ("C", day[3]),  # its "positive" was never labelled: kept
        ("D", day[0]),  # no positive: kept
    ]
    keys = np.array([k for k, _ in rows])
    times = np.array([t for _, t in rows], dtype=np.int64)

    keep = without_known_positives(keys, times, positive_keys, known_at)

    assert keep.tolist() == [True, False, True, False, True, True]


def test_the_evaluation_leaves_out_cards_with_a_fraud_known_by_then(pipeline: Pipeline) -> None:
    # The handbook's rule with a 7-day label delay: on test day T, drop every card with a
    # fraud on any day from the first training day through T - 8. Train on day 0, skip
    # days 1-7, test on days 8 and 9.
    def at(d: int, hour: int = 12) -> int:
        return T0 + d * MS_PER_DAY + hour * HOUR

    frauds = {1: 0, 2: 1, 3: 2, 4: -1}  # card -> day of its fraud
    events, outcomes, tid = [], [], 0
    for card, fraud_day in frauds.items():
        tid += 1
        events.append(tx(tid, at(fraud_day), customer=card, amount=500.0))
        outcomes.append(outcome(tid, at(fraud_day + 7), True))
        for d in (0, 8, 9):
            tid += 1
            events.append(tx(tid, at(d, hour=card), customer=card))
    events.sort(key=lambda e: e["tx_datetime"])
    outcomes.sort(key=lambda o: o["outcome_datetime"])
    plan = TrainPlan.by_days(T0, train_days=1, delay_days=7, test_days=2)

    def test_rows(exclude: bool) -> list[tuple[int, int]]:
        sets = split(pipeline, ModelConfig(exclude_known_positives=exclude), plan, events,
                     outcomes, join_policy(pipeline))  # fmt: skip
        days = (sets.test.event_time_ms - T0) // MS_PER_DAY
        return list(zip(days.tolist(), sets.test.entity_keys.tolist(), strict=True))

    everyone = [(d, card) for d in (8, 9) for card in (1, 2, 3, 4)]
    assert test_rows(exclude=False) == everyone
    # Day 8: card 1 (fraud on day 0 = T - 8). Day 9: cards 1 and 2 (day 1 = T - 8). Card 3's
    # fraud (day 2) is not known by day 9; card 4's came before the first training day.
    assert test_rows(exclude=True) == [(8, 2), (8, 3), (8, 4), (9, 3), (9, 4)]


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
    with pytest.raises(ConfigError, match="params of logistic_regression are invalid"):
        fit(X, y, EstimatorSpec("logistic_regression", {"C": -1.0}))
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
