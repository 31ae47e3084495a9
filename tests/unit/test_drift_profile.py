"""The reference profile: JSON-safe, nested binnings, moments, missing and label rates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.profile import bin_counts, build_profile, category_key


def _data(n: int = 5000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n)
    amount[:50] = np.nan
    counts = rng.poisson(3.0, n).astype(float)
    weekend = rng.integers(0, 2, n).astype(float)
    X = np.column_stack([amount, counts, weekend])
    scores = rng.uniform(0, 1, n)
    labels = (rng.uniform(0, 1, n) < 0.1).astype(int)
    return X, scores, labels


def test_profile_is_strict_json_and_round_trips() -> None:
    X, scores, labels = _data()
    profile = build_profile(X, ["amount", "count", "weekend"], scores, labels, ["weekend"])
    text = json.dumps(profile, allow_nan=False)  # no NaN / inf anywhere
    assert json.loads(text) == profile
    assert profile["rows"] == 5000
    assert profile["label_rate"] == pytest.approx(labels.mean())


def test_numeric_bins_cover_the_reference_and_nest() -> None:
    X, scores, labels = _data()
    p = build_profile(X, ["amount", "count", "weekend"], scores, labels, ["weekend"])
    amount = p["features"]["amount"]
    present = X[:, 0][~np.isnan(X[:, 0])]
    assert amount["missing_rate"] == pytest.approx(50 / 5000)
    assert amount["min"] == present.min() and amount["max"] == present.max()
    assert amount["mean"] == pytest.approx(present.mean())
    assert amount["std"] == pytest.approx(present.std())
    counts = amount["counts"]
    assert sum(counts) == present.size
    assert counts[0] == 0 and counts[-1] == 0, "outer bins are outside the reference range"
    assert set(amount["psi_edges"]) <= set(amount["edges"])
    assert sum(amount["psi_frequencies"]) == pytest.approx(1.0)
    # deciles: each PSI bin holds about a tenth of the reference
    assert max(amount["psi_frequencies"]) < 0.11
    # percentiles: no fine bin holds much more than a hundredth
    assert max(counts) / present.size < 0.012
    # the same counts come back from the stored edges
    assert list(bin_counts(present, amount["edges"])) == counts


def test_discrete_columns_get_unique_edges() -> None:
    X, scores, labels = _data()
    p = build_profile(X, ["amount", "count", "weekend"], scores, labels, ["weekend"])
    edges = p["features"]["count"]["edges"]
    assert edges == sorted(set(edges))
    assert p["score"]["kind"] == "numeric"


def test_categorical_frequencies() -> None:
    X, scores, labels = _data()
    p = build_profile(X, ["amount", "count", "weekend"], scores, labels, ["weekend"])
    weekend = p["features"]["weekend"]
    assert weekend["kind"] == "categorical"
    assert set(weekend["frequencies"]) == {"0", "1"}
    assert weekend["frequencies"]["1"] == pytest.approx(X[:, 2].mean())
    assert category_key(2.5) == "2.5" and category_key(3.0) == "3"


def test_bad_shapes_are_refused() -> None:
    X, scores, labels = _data()
    with pytest.raises(ValueError, match="shape"):
        build_profile(X, ["a", "b"], scores, labels)
    with pytest.raises(ValueError, match="categorical"):
        build_profile(X, ["a", "b", "c"], scores, labels, ["nope"])
