"""Reference profile of a model version: what its training data looked like, for drift checks.

Built once from the training set and stored with the version (JSON). Numeric columns keep two
nested binnings of the reference, both as left-closed bins ``[e_i, e_{i+1})`` with open outer
bins: ``edges`` (fine: the reference min, its percentiles, 64 even steps and just above its
max, so bin 0 is "below the reference range" and the last bin "above it") and ``psi_edges``
(its deciles, a
subset of ``edges``, so PSI bins are sums of fine bins). The drift processor histograms each
window on ``edges``; KS, Wasserstein and PSI then compare histograms on the same grid.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

PROFILE_FORMAT = 1
# percentiles, finer in the tails
FINE_QUANTILES = (0.001, 0.002, 0.005, *(q / 100 for q in range(1, 100)), 0.995, 0.998, 0.999)
FINE_SPAN_BINS = 64  # plus evenly spaced edges, so no bin is wider than 1/64 of the range
PSI_QUANTILES = tuple(q / 10 for q in range(1, 10))  # deciles
SCORE = "__score__"  # the profile key of the score distribution


def build_profile(
    X: np.ndarray,
    feature_names: list[str],
    scores: np.ndarray,
    labels: np.ndarray,
    categorical: Collection[str] = (),
) -> dict[str, Any]:
    """The JSON-safe reference profile of a training set (rows of ``X`` in feature order)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"X has shape {X.shape}, want (rows, {len(feature_names)})")
    unknown = set(categorical) - set(feature_names)
    if unknown:
        raise ValueError(f"categorical names {sorted(unknown)} are not features")
    labels = np.asarray(labels, dtype=np.float64)
    features: dict[str, Any] = {}
    for j, name in enumerate(feature_names):
        column = X[:, j]
        features[name] = (
            categorical_profile(column) if name in categorical else numeric_profile(column)
        )
    return {
        "format": PROFILE_FORMAT,
        "rows": int(X.shape[0]),
        "feature_names": list(feature_names),
        "features": features,
        "score": numeric_profile(np.asarray(scores, dtype=np.float64)),
        "label_rate": float(labels.mean()) if labels.size else None,
        "positives": int(np.count_nonzero(labels == 1)),
    }


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    """Bins, frequencies, moments and missing rate of one numeric column."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    present = values[~missing]
    out: dict[str, Any] = {
        "kind": "numeric",
        "count": int(present.size),
        "missing_rate": float(missing.mean()) if values.size else 0.0,
    }
    if present.size == 0:
        return {**out, "edges": [], "counts": [0], "psi_edges": [], "psi_frequencies": [1.0]}
    lo, hi = float(present.min()), float(present.max())
    psi_edges = np.unique(np.quantile(present, PSI_QUANTILES))
    inner = np.quantile(present, FINE_QUANTILES)
    above = float(np.nextafter(hi, math.inf))
    span = np.linspace(lo, hi, FINE_SPAN_BINS + 1)
    edges = np.unique(np.concatenate([[lo], inner, span, psi_edges, [above]]))
    counts = bin_counts(present, edges)
    psi_counts = bin_counts(present, psi_edges)
    return {
        **out,
        "min": lo,
        "max": hi,
        "mean": float(present.mean()),
        "std": float(present.std()),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "psi_edges": [float(e) for e in psi_edges],
        "psi_frequencies": [float(c) / present.size for c in psi_counts],
    }


def categorical_profile(values: np.ndarray) -> dict[str, Any]:
    """Category frequencies (keys: :func:`category_key`) and missing rate of one column."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    present = values[~missing]
    cats, counts = np.unique(present, return_counts=True)
    return {
        "kind": "categorical",
        "count": int(present.size),
        "missing_rate": float(missing.mean()) if values.size else 0.0,
        "counts": {category_key(c): int(n) for c, n in zip(cats, counts, strict=True)},
        "frequencies": {
            category_key(c): float(n) / present.size for c, n in zip(cats, counts, strict=True)
        },
    }


def bin_counts(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def category_key(value: float) -> str:
    """A category's name in a profile: integral codes without ".0" (``3.0`` -> ``"3"``)."""
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)
