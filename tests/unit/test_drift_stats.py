"""Each drift statistic against scipy's on the same window data: exact where the statistic is
defined on bins, within the stated bound where it is binned (KS, Wasserstein)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from models.profile import bin_counts, build_profile
from streams.drift import stats
from streams.drift.histogram import Layout, aggregate, merge
from streams.drift.report import column_stats


def _profile_and_counts(ref: np.ndarray, cur: np.ndarray, categorical: bool = False):
    names = ["x"]
    profile = build_profile(
        ref[:, None], names, np.zeros(len(ref)), np.zeros(len(ref)), names if categorical else ()
    )
    layout = Layout.from_profile(profile, names)
    # three partitions merged: the global counts of the window
    parts = np.array_split(cur, 3)
    counts = merge(*(aggregate(layout, p[:, None], np.zeros(len(p))) for p in parts))
    return layout.columns[0], counts


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_ks_and_wasserstein_on_continuous_data_within_the_binning_bound(shift: float) -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0, 1, 20_000), rng.normal(shift, 1.3, 3_000)
    column, counts = _profile_and_counts(ref, cur)
    s = column_stats(column, counts, counts["rows"])
    fine = bin_counts(cur, column.edges)
    reference = np.asarray(column.reference["counts"], dtype=float)
    d, _, ks_bound = stats.ks_binned(reference, fine)
    exact = sps.ks_2samp(ref, cur)
    assert s["ks_statistic"] == d
    assert abs(d - exact.statistic) <= ks_bound
    if shift == 0.0:
        assert ks_bound < 0.02  # percentile bins: about 1 % of the mass each
    w, w_bound = stats.wasserstein_binned(
        column.edges, reference, fine, cur[fine_index(cur, column) == 0].sum(),
        cur[fine_index(cur, column) == len(column.edges)].sum(),
    )  # fmt: skip
    w_exact = sps.wasserstein_distance(ref, cur)
    assert abs(w - w_exact) <= w_bound
    assert s["wasserstein_normed"] == pytest.approx(w / ref.std(), abs=1e-12)
    # the measured error is far inside the bound; say how far in the README
    assert abs(w - w_exact) < 0.02 and abs(d - exact.statistic) < 0.01


def fine_index(values: np.ndarray, column) -> np.ndarray:
    return np.searchsorted(column.edges, values, side="right")


def test_ks_is_exact_when_values_lie_on_the_edges() -> None:
    rng = np.random.default_rng(3)
    ref = rng.poisson(3.0, 20_000).astype(float)
    cur = rng.poisson(3.6, 2_500).astype(float)
    column, counts = _profile_and_counts(ref, cur)
    # make every window value an edge: clip to the reference range
    cur = np.clip(cur, ref.min(), ref.max())
    column, counts = _profile_and_counts(ref, cur)
    s = column_stats(column, counts, counts["rows"])
    exact = sps.ks_2samp(ref, cur, method="asymp")
    assert s["ks_statistic"] == pytest.approx(exact.statistic, abs=1e-6)
    assert s["ks_p_value"] == pytest.approx(exact.pvalue, abs=1e-6)


def test_jensen_shannon_and_psi_equal_their_definitions_on_the_decile_bins() -> None:
    rng = np.random.default_rng(5)
    ref, cur = rng.lognormal(3, 0.8, 20_000), rng.lognormal(3.2, 0.8, 4_000)
    column, counts = _profile_and_counts(ref, cur)
    s = column_stats(column, counts, counts["rows"])
    edges = column.reference["psi_edges"]
    p = bin_counts(ref, edges) / len(ref)
    q = bin_counts(cur, edges) / len(cur)
    assert s["js_distance"] == pytest.approx(jensenshannon(p, q), abs=1e-6)
    pc, qc = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    assert s["psi"] == pytest.approx(np.sum((qc - pc) * np.log(qc / pc)), abs=1e-6)


def test_categorical_chi_square_js_and_new_category_share_equal_scipy() -> None:
    rng = np.random.default_rng(11)
    ref = rng.choice([0.0, 1.0, 2.0], 10_000, p=[0.6, 0.3, 0.1])
    cur = rng.choice([0.0, 1.0, 2.0, 5.0], 3_000, p=[0.5, 0.3, 0.15, 0.05])
    column, counts = _profile_and_counts(ref, cur, categorical=True)
    s = column_stats(column, counts, counts["rows"])
    known = cur[cur != 5.0]
    observed = np.array([(known == c).sum() for c in (0.0, 1.0, 2.0)], dtype=float)
    expected_share = np.array([(ref == c).mean() for c in (0.0, 1.0, 2.0)])
    exact = sps.chisquare(observed, expected_share * observed.sum())
    assert s["chi_square"] == pytest.approx(exact.statistic, abs=1e-6)
    assert s["chi_square_p_value"] == pytest.approx(exact.pvalue, abs=1e-6)
    assert s["new_category_share"] == pytest.approx((cur == 5.0).mean(), abs=1e-12)
    p = np.array([(ref == c).mean() for c in (0.0, 1.0, 2.0, 5.0)])
    q = np.array([(cur == c).mean() for c in (0.0, 1.0, 2.0, 5.0)])
    assert s["js_distance"] == pytest.approx(jensenshannon(p, q), abs=1e-6)


def test_missing_and_out_of_range_rates() -> None:
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 10, 5_000)
    cur = np.concatenate([rng.uniform(0, 10, 900), [-1.0] * 30, [12.0] * 20, [np.nan] * 50])
    column, counts = _profile_and_counts(ref, cur)
    s = column_stats(column, counts, counts["rows"])
    assert s["missing_rate"] == pytest.approx(50 / 1000)
    outside = np.count_nonzero((cur < ref.min()) | (cur > ref.max()))
    assert outside >= 50
    assert s["out_of_range_rate"] == pytest.approx(outside / 950)
    w_exact = sps.wasserstein_distance(ref, cur[~np.isnan(cur)])
    assert s["wasserstein_normed"] * ref.std() == pytest.approx(w_exact, abs=0.05)


def test_merging_partitions_equals_one_pass() -> None:
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(0, 1, 5_000), rng.normal(0.2, 1, 999)
    column, merged = _profile_and_counts(ref, cur)
    layout = Layout((column,), column)
    whole = aggregate(layout, cur[:, None], cur)
    assert {k: v for k, v in whole.items() if not k.startswith("s:")} == pytest.approx(
        {k: v for k, v in merged.items() if not k.startswith("s:")}
    )


def test_two_proportion_p_value_matches_a_chi_square_test() -> None:
    table = np.array([[30, 970], [500, 19_500]])
    expected = sps.chi2_contingency(table, correction=False).pvalue
    assert stats.two_proportion_p(30, 1000, 500, 20_000) == pytest.approx(expected, abs=1e-9)
