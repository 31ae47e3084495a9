"""A window's rows as mergeable counts: a flat ``field -> number`` map that adds up.

The map is what Redis holds per window (``HINCRBYFLOAT`` per field), so counts from any
partition or worker merge by addition. Fields, for column ``j`` (``s`` for the score):
``{j}:b{k}`` rows in fine bin ``k`` of the reference grid, ``{j}:lo`` / ``{j}:hi`` the sums of
the values below / above the reference range (exact Wasserstein tails), ``{j}:nan`` missing
values, ``{j}:c:{category}`` categorical counts; ``rows``; ``dlq:{reason}`` dead letters;
``pos`` positive labels of events in the window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.profile import category_key

SCORE_COLUMN = "s"
Counts = dict[str, float]


@dataclass(frozen=True)
class Column:
    key: str  # field prefix: the feature's index, or "s" for the score
    name: str
    kind: str  # numeric | categorical
    reference: Mapping[str, Any]  # the profile entry
    edges: np.ndarray  # fine edges (numeric)


@dataclass(frozen=True)
class Layout:
    """Which columns are histogrammed, and how, for one reference profile."""

    columns: tuple[Column, ...]
    score: Column

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any], feature_names: list[str]) -> Layout:
        missing = [n for n in feature_names if n not in profile["features"]]
        if missing:
            raise ValueError(f"the reference profile lacks features {missing}")
        columns = tuple(
            _column(str(j), name, profile["features"][name]) for j, name in enumerate(feature_names)
        )
        return cls(columns, _column(SCORE_COLUMN, "__score__", profile["score"]))


def _column(key: str, name: str, reference: Mapping[str, Any]) -> Column:
    edges = np.asarray(reference.get("edges", []), dtype=np.float64)
    return Column(key, name, str(reference["kind"]), reference, edges)


def aggregate(layout: Layout, X: np.ndarray, scores: np.ndarray) -> Counts:
    """The counts of rows ``X`` (feature order) scored ``scores``: one window's increment."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, len(layout.columns))
    out: Counts = {"rows": float(X.shape[0])}
    if X.shape[0] == 0:
        return out
    for column in layout.columns:
        _add_column(out, column, X[:, int(column.key)])
    _add_column(out, layout.score, np.asarray(scores, dtype=np.float64))
    return out


def _add_column(out: Counts, column: Column, values: np.ndarray) -> None:
    nan = np.isnan(values)
    if nan.any():
        out[f"{column.key}:nan"] = float(np.count_nonzero(nan))
        values = values[~nan]
    if column.kind == "categorical":
        cats, counts = np.unique(values, return_counts=True)
        for c, n in zip(cats, counts, strict=True):
            out[f"{column.key}:c:{category_key(c)}"] = float(n)
        return
    edges = column.edges
    index = np.searchsorted(edges, values, side="right")
    bins, counts = np.unique(index, return_counts=True)
    for b, n in zip(bins, counts, strict=True):
        out[f"{column.key}:b{int(b)}"] = float(n)
    last = len(edges)
    if len(edges):
        below = values[index == 0]
        above = values[index == last]
        if below.size:
            out[f"{column.key}:lo"] = float(below.sum())
        if above.size:
            out[f"{column.key}:hi"] = float(above.sum())


def merge(*parts: Mapping[str, float]) -> Counts:
    """The counts of the union of the parts' rows."""
    total: defaultdict[str, float] = defaultdict(float)
    for part in parts:
        for key, value in part.items():
            total[key] += value
    return dict(total)


def fine_counts(counts: Mapping[str, float], column: Column) -> np.ndarray:
    """The window's counts per fine bin of ``column`` (len(edges) + 1 bins)."""
    out = np.zeros(len(column.edges) + 1)
    prefix = f"{column.key}:b"
    for key, value in counts.items():
        if key.startswith(prefix):
            out[int(key[len(prefix) :])] += value
    return out


def category_counts(counts: Mapping[str, float], column: Column) -> dict[str, float]:
    prefix = f"{column.key}:c:"
    return {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}


def dead_letter_counts(counts: Mapping[str, float]) -> dict[str, float]:
    return {k[4:]: v for k, v in counts.items() if k.startswith("dlq:")}
