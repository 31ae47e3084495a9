"""The backtest's pure parts: rows and labels (join policy), metrics, PSI, and the reports."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from streams.backtest import evaluate, report_html, report_json
from streams.backtest.command import card_k
from streams.backtest.dataset import Dataset, build_dataset, label_rows
from streams.backtest.score import ScoredVersion, parse_refs
from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.errors import ConfigError
from streams.features import MS_PER_DAY
from streams.features.offline import offline_features
from streams.join.policy import JoinPolicy
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT

PIPELINE = load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas")
DAY = MS_PER_DAY


def _outcome(tid: int, at: int, label: int) -> dict:
    return {"transaction_id": tid, "outcome_datetime": at, "is_fraud": label}


def test_first_outcome_within_max_delay_labels_an_event() -> None:
    policy = JoinPolicy(max_delay_ms=7 * DAY, on_missing="negative")
    times = np.array([0, 0, 0, 10 * DAY], dtype=np.int64)
    outcomes = [
        _outcome(1, 8 * DAY, 1),  # too late for event 1: ignored
        _outcome(1, 6 * DAY, 0),  # the first one in time: labels it 0
        _outcome(1, 6 * DAY, 1),  # a later copy: ignored
        _outcome(2, 7 * DAY, 1),  # exactly max_delay: counts
        _outcome(9, DAY, 1),  # an event outside the rows
    ]
    labels, still_open = label_rows(PIPELINE, policy, ["1", "2", "3", "4"], times, outcomes)
    assert labels.tolist() == [0.0, 1.0, 0.0, 0.0]  # event 3: none -> negative
    # event 4's window (to day 17) is open at the newest outcome (day 8); event 3's closed
    assert still_open == 1
    unlabeled = dataclasses.replace(policy, on_missing="unlabeled")
    labels, _ = label_rows(PIPELINE, unlabeled, ["1", "2", "3", "4"], times, outcomes)
    assert labels[:2].tolist() == [0.0, 1.0] and np.isnan(labels[2:]).all()


@pytest.fixture(scope="module")
def small_sim() -> tuple[list[dict], list[dict]]:
    cfg = dataclasses.replace(SimConfig.light(seed=4, n_customers=150, n_terminals=300), n_days=16)
    sim = simulate(cfg)
    return transaction_records(sim), outcome_records(sim, cfg)


def test_rows_are_the_range_once_each_with_the_offline_features(small_sim) -> None:
    events, outcomes = small_sim
    start = min(e["tx_datetime"] for e in events) // DAY * DAY + 5 * DAY
    end = start + 4 * DAY
    delivered = events + events[100:110]  # ten redelivered copies, arriving last
    data = build_dataset(
        PIPELINE, JoinPolicy(), delivered, outcomes, start, end, warm_start_ms=start - 5 * DAY
    )
    in_range = [e for e in events if start <= e["tx_datetime"] < end]
    assert data.n_rows == len(in_range) and len(set(data.event_ids.tolist())) == data.n_rows
    assert np.all(np.diff(data.event_time_ms) >= 0)
    assert data.events_read == len(delivered)
    full = offline_features(PIPELINE, events, outcomes).X
    by_id = {str(e["transaction_id"]): full[i] for i, e in enumerate(events)}
    expected = np.array([by_id[i] for i in data.event_ids])
    np.testing.assert_array_equal(data.X, expected)
    frauds = {str(o["transaction_id"]) for o in outcomes if o["is_fraud"]}
    assert data.labels.tolist() == [float(i in frauds) for i in data.event_ids]


def test_metric_set_matches_sklearn_and_is_nan_when_undefined() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    s = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    cards = rng.integers(0, 50, 500)
    days = np.repeat([0, 1], 250)
    m = evaluate.metric_set(y, s, cards, days, k=5)
    assert m["auc_roc"] == pytest.approx(roc_auc_score(y, s))
    assert m["log_loss"] == pytest.approx(log_loss(y, s))
    assert m["brier"] == pytest.approx(brier_score_loss(y, s))
    assert m["rows"] == 500 and m["positives"] == y.sum()
    assert 0 < m["card_precision_at_k"] <= 1
    single = evaluate.metric_set(
        np.zeros(3, int), np.array([0.1, 0.2, 0.3]), cards[:3], days[:3], 5
    )
    assert math.isnan(single["auc_roc"]) and math.isnan(single["average_precision"])
    assert single["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=20_000)
    edges = evaluate.bin_edges(ref)
    assert len(edges) == evaluate.PSI_BINS + 1 and edges[0] == -np.inf
    assert evaluate.psi(ref, ref, edges) == 0.0
    assert evaluate.psi(ref, rng.normal(size=20_000), edges) < 0.01
    assert evaluate.psi(ref, rng.normal(1.0, size=20_000), edges) > 0.25
    flags = np.array([0.0, 1.0] * 50)
    assert evaluate.bin_edges(flags).tolist() == [-np.inf, 0.5, np.inf]  # discrete: by value


def _doc(data, versions) -> dict:
    figures = evaluate.evaluate(data, versions, k=10)
    drift = evaluate.drift(data, PIPELINE.feature_names)
    timing = {"total": 1.0, "events_per_s": 1000.0}
    return report_json.report(PIPELINE, data, versions, figures, drift, timing)


def test_reports_hold_the_same_figures_and_render(small_sim) -> None:
    events, outcomes = small_sim
    start = min(e["tx_datetime"] for e in events) // DAY * DAY + 3 * DAY
    data = build_dataset(PIPELINE, JoinPolicy(), events, outcomes, start, start + 12 * DAY, 0)
    rng = np.random.default_rng(2)
    versions = [
        ScoredVersion(
            "champion", "fraud", 1, "a" * 64, {"estimator": "x"}, rng.random(data.n_rows)
        ),
        ScoredVersion("2", "fraud", 2, "b" * 64, {}, np.clip(data.labels * 0.8 + 0.1, 0, 1)),
    ]
    doc = _doc(data, versions)
    text = json.dumps(report_json.clean(doc), allow_nan=False)  # NaN -> null, valid JSON
    back = json.loads(text)
    perfect = back["metrics"]["models"]["v2"]["overall"]
    assert perfect["auc_roc"] == 1.0 and perfect["rows"] == data.n_rows
    assert len(back["metrics"]["days"]) == 12 == len(back["drift"]["days"])
    assert list(back["drift"]["psi"]) == PIPELINE.feature_names
    assert back["drift"]["psi"]["TX_AMOUNT"][0] == 0.0  # the first day against itself
    html = report_html.render(back)
    assert html.count("<svg") == 2 + 2 + 4 + 1  # curves, histograms, per day, drift
    assert "v1 (champion)" in html and ">nan<" not in html.lower()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_refs_and_k() -> None:
    assert parse_refs("champion, 3,,") == ["champion", "3"]
    with pytest.raises(ConfigError):
        parse_refs(" , ")
    assert card_k(PIPELINE) == 100
    bad = dataclasses.replace(PIPELINE, sections={"backtest": {"card_precision_k": 0}})
    with pytest.raises(ConfigError, match="card_precision_k"):
        card_k(bad)


def test_drift_against_a_profile_matches_the_profile_s_own_bins() -> None:
    from models.profile import build_profile

    rng = np.random.default_rng(3)
    train = np.column_stack([rng.normal(size=5000), rng.integers(0, 2, 5000).astype(float)])
    profile = build_profile(train, ["x", "flag"], rng.random(5000), np.zeros(5000), ["flag"])
    n = 2000
    X = np.column_stack([rng.normal(size=n), np.r_[np.zeros(n // 2), np.ones(n // 2)]])
    X[n // 2 :, 0] += 1.0  # the second day shifts
    times = np.repeat([0, DAY], n // 2).astype(np.int64)
    data = Dataset(
        0, 2 * DAY, 0, np.arange(n).astype(str), times, np.zeros(n), X, np.zeros(n), n, 0, 0, {}
    )
    out = evaluate.drift(data, ["x", "flag"], profile)
    assert out["reference"] != "first day of the range"
    x_psi, flag_psi = out["psi"]["x"], out["psi"]["flag"]
    assert x_psi[0] < 0.05 and x_psi[1] > 0.25
    assert flag_psi[0] > 1 and flag_psi[1] > 1  # all zeros, then all ones, against 50/50
    fallback = evaluate.drift(data, ["x", "flag"])
    assert fallback["psi"]["x"][0] == 0.0 and fallback["psi"]["x"][1] > 0.25
