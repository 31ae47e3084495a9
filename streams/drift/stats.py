"""Drift statistics between a reference and a window, from counts on a shared binning.

PSI, Jensen-Shannon and chi-square are defined on bins and equal scipy's on the same bins.
KS and Wasserstein are defined on samples; from counts on the reference's percentile grid
they are approximations with a bound that :func:`ks_binned` / :func:`wasserstein_binned`
state: the error is at most the mass (KS) or mass x width (Wasserstein) of single bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import stats as sps

PSI_EPSILON = 1e-4  # a bin empty on one side counts as this share (Evidently does the same)


def proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two histograms on the same bins (counts or shares)."""
    r = np.clip(proportions(reference), epsilon, None)
    c = np.clip(proportions(current), epsilon, None)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log), as ``scipy.spatial.distance.jensenshannon``."""
    p, q = proportions(reference), proportions(current)
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2.0))


def ks_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, float]:
    """KS statistic, its asymptotic p-value and the statistic's error bound.

    Counts are on left-closed bins ``[e_i, e_{i+1})``; the empirical CDFs are compared at the
    bin edges. Against ``scipy.stats.ks_2samp`` on the raw samples the statistic is off by at
    most the largest single-bin mass of either side (returned as the bound); it is exact
    when every value lies on an edge. The p-value is ks_2samp's "asymp" one for this statistic.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return 0.0, 1.0, 0.0
    pr, pc = r / n, c / m
    d = float(np.max(np.abs(np.cumsum(pr) - np.cumsum(pc))))
    en = round(n * m / (n + m))
    p_value = float(np.clip(sps.kstwo.sf(d, en), 0.0, 1.0))
    return d, p_value, float(max(pr.max(), pc.max()))


def wasserstein_binned(
    edges: np.ndarray,
    reference: np.ndarray,
    current: np.ndarray,
    current_below_sum: float = 0.0,
    current_above_sum: float = 0.0,
) -> tuple[float, float]:
    """1-Wasserstein distance and its error bound, from counts on ``edges``' bins.

    The reference has no mass outside ``[edges[0], edges[-1])`` (they are its min and just
    above its max), so the window's outer tails are exact from their sums. Inside, the CDF gap
    is integrated by the trapezoid rule per bin; the error is at most
    ``sum(width * (p_ref + p_cur))`` over the bins (returned as the bound).
    """
    e = np.asarray(edges, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0 or len(e) == 0:
        return 0.0, 0.0
    if r[0] or r[-1]:
        raise ValueError("the reference must have no mass outside its own range")
    pr, pc = r / n, c / m
    gap = np.abs(np.cumsum(pr)[:-1] - np.cumsum(pc)[:-1])  # at each edge: P(X < e_i)
    widths = np.diff(e)
    inside = float(np.sum(widths * (gap[:-1] + gap[1:]) / 2.0))
    below = (c[0] * e[0] - current_below_sum) / m
    above = (current_above_sum - c[-1] * e[-1]) / m
    bound = float(np.sum(widths * (pr[1:-1] + pc[1:-1])))
    return inside + below + above, bound


def chi_square(
    reference_freq: Mapping[str, float], current: Mapping[str, float]
) -> tuple[float, float]:
    """Chi-square statistic and p-value of the window's counts in the reference categories.

    As ``scipy.stats.chisquare(observed, expected)`` with expected = reference share x the
    window's count in known categories; categories the reference never saw are measured by
    the new-category share instead (their expected count would be zero).
    """
    cats = sorted(reference_freq)
    observed = np.array([current.get(k, 0.0) for k in cats])
    total = observed.sum()
    if total == 0 or len(cats) < 2:
        return 0.0, 1.0
    expected = np.array([reference_freq[k] for k in cats])
    expected = expected / expected.sum() * total
    stat = float(np.sum((observed - expected) ** 2 / expected))
    return stat, float(sps.chi2.sf(stat, len(cats) - 1))


def rebin(fine: np.ndarray, fine_edges: np.ndarray, coarse_edges: np.ndarray) -> np.ndarray:
    """Counts on ``coarse_edges``' bins from counts on ``fine_edges``' (a superset)."""
    cut = np.searchsorted(fine_edges, coarse_edges)
    return np.add.reduceat(np.asarray(fine, dtype=np.float64), np.concatenate([[0], cut + 1]))


def two_proportion_p(k1: float, n1: float, k2: float, n2: float) -> float:
    """Two-sided p-value of a difference of two rates (pooled z-test)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return float(2 * sps.norm.sf(abs(z)))
