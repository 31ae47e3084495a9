"""The figures of a backtest report, as plain data: metrics overall and per UTC day, ROC and
precision-recall curves, score histograms, and per-day drift (PSI) of every feature."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, precision_recall_curve, roc_curve

from models import metrics
from models.profile import bin_counts, category_key
from streams.backtest.dataset import Dataset
from streams.backtest.score import ScoredVersion
from streams.drift import stats
from streams.features import MS_PER_DAY

HIST_BINS = 40
PSI_BINS = 10


def metric_set(
    y: np.ndarray, s: np.ndarray, cards: np.ndarray, days: np.ndarray, k: int
) -> dict[str, float]:
    """The report's metrics of labelled rows ``y`` (0/1) scored ``s``; NaN where undefined."""
    n = len(y)
    positives = int(np.count_nonzero(y == 1))
    both = 0 < positives < n
    clipped = np.clip(s, 1e-15, 1 - 1e-15)
    return {
        "auc_roc": metrics.auc_roc(y, s),
        "average_precision": metrics.average_precision(y, s),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])) if n else math.nan,
        "brier": float(brier_score_loss(y, s)) if n and both else _brier(y, s),
        "card_precision_at_k": metrics.card_precision_at_k(y, s, cards, days, k) if n else math.nan,
        "rows": float(n),
        "positives": float(positives),
        "mean_score": float(np.mean(s)) if n else math.nan,
    }


def _brier(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s - y) ** 2)) if len(y) else math.nan


def evaluate(data: Dataset, versions: Sequence[ScoredVersion], k: int) -> dict[str, Any]:
    """Overall and per-day metrics of every version, on the rows that have a label."""
    known = ~np.isnan(data.labels)
    y = data.labels[known].astype(np.int64)
    cards = data.entity_keys[known]
    days = np.floor_divide(data.event_time_ms[known], MS_PER_DAY)
    day_list = np.unique(np.floor_divide(data.event_time_ms, MS_PER_DAY)).tolist()
    out: dict[str, Any] = {"k": k, "days": [_day(d) for d in day_list], "models": {}}
    for v in versions:
        s = v.scores[known]
        per_day = []
        for d in day_list:
            rows = days == d
            per_day.append(metric_set(y[rows], s[rows], cards[rows], days[rows], k))
        out["models"][v.label] = {
            "overall": metric_set(y, s, cards, days, k),
            "per_day": per_day,
            "roc": _roc(y, s),
            "precision_recall": _pr(y, s),
            "histogram": _histogram(y, s),
        }
    return out


def _day(day: int) -> str:
    return np.datetime_as_string(np.datetime64(day * MS_PER_DAY, "ms"), unit="D")


def _thin(x: np.ndarray, y: np.ndarray, step: float = 0.004) -> list[list[float]]:
    """The curve's points, one kept wherever it has moved ``step`` (on either axis) since the
    last one kept, and the last point: a few hundred points that draw the same line."""
    kept: list[list[float]] = []
    last_x = last_y = math.inf
    xs, ys = x.tolist(), y.tolist()
    for i, (a, b) in enumerate(zip(xs, ys, strict=True)):
        if abs(a - last_x) >= step or abs(b - last_y) >= step or i == len(xs) - 1:
            kept.append([round(a, 6), round(b, 6)])
            last_x, last_y = a, b
    return kept


def _roc(y: np.ndarray, s: np.ndarray) -> list[list[float]]:
    if len(np.unique(y)) < 2:
        return []
    fpr, tpr, _ = roc_curve(y, s)
    return _thin(fpr, tpr)


def _pr(y: np.ndarray, s: np.ndarray) -> list[list[float]]:
    if not np.any(y == 1):
        return []
    precision, recall, _ = precision_recall_curve(y, s)
    return _thin(recall[::-1], precision[::-1])


def _histogram(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]]:
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "negatives": np.histogram(s[y == 0], edges)[0].astype(float).tolist(),
        "positives": np.histogram(s[y == 1], edges)[0].astype(float).tolist(),
    }


def psi(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> float:
    """Population stability index of ``current`` against ``reference`` over bins ``edges``."""
    if not len(reference) or not len(current):
        return math.nan
    return stats.psi(np.histogram(reference, edges)[0], np.histogram(current, edges)[0])


def bin_edges(reference: np.ndarray) -> np.ndarray:
    """Decile edges of the reference (its distinct values when it has few), open-ended."""
    finite = reference[np.isfinite(reference)]
    distinct = np.unique(finite)
    if distinct.size <= PSI_BINS:
        inner = (distinct[1:] + distinct[:-1]) / 2
    else:
        inner = np.unique(np.quantile(finite, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def profile_psi(column: Mapping[str, Any], current: np.ndarray) -> float:
    """PSI of ``current`` against one feature of a model's reference profile (its deciles,
    or its categories' frequencies), as the drift processor computes it."""
    present = current[~np.isnan(current)]
    if not present.size:
        return math.nan
    if column.get("kind") == "categorical":
        freqs = column["frequencies"]
        keys = [category_key(v) for v in present.tolist()]
        names = sorted(set(freqs) | set(keys))
        seen = {k: 0 for k in names}
        for k in keys:
            seen[k] += 1
        return stats.psi(
            np.array([freqs.get(k, 0.0) for k in names]), np.array(list(seen.values()))
        )
    reference = np.asarray(column["psi_frequencies"], dtype=np.float64)
    return stats.psi(reference, bin_counts(present, column["psi_edges"]).astype(np.float64))


def drift(
    data: Dataset, feature_names: Sequence[str], profile: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """PSI per feature and UTC day against ``profile`` (a model version's reference profile:
    its training data) or, without one, against the first day of the range (its deciles)."""
    days = np.floor_divide(data.event_time_ms, MS_PER_DAY)
    day_list = np.unique(days).tolist()
    order = np.argsort(days, kind="stable")
    bounds = np.searchsorted(days[order], [*day_list, day_list[-1] + 1 if day_list else 0])
    by_day = [order[bounds[i] : bounds[i + 1]] for i in range(len(day_list))]
    reference = by_day[0] if by_day else np.zeros(0, dtype=np.int64)
    columns = (profile or {}).get("features", {})
    table: dict[str, list[float]] = {}
    for j, name in enumerate(feature_names):
        column = data.X[:, j]
        if name in columns:
            values = [profile_psi(columns[name], column[rows]) for rows in by_day]
        else:
            base = column[reference]
            edges = bin_edges(base)
            values = [psi(base, column[rows], edges) for rows in by_day]
        table[name] = [round(v, 6) for v in values]
    return {
        "reference": "training data of the model's reference profile"
        if columns
        else "first day of the range",
        "days": [_day(d) for d in day_list],
        "psi": table,
    }
