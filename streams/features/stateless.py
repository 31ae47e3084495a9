"""Feature vectors of a batch of decoded events, vectorised; one code path online and offline.

The worker calls :func:`feature_matrix` on each micro-batch and training/backtests call it on
a whole range read from the topic, so a model sees the same numbers in both (no skew).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.features.spec import STATELESS_KINDS, FeatureSpec

if TYPE_CHECKING:
    from streams.pipeline import Pipeline

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
# 1970-01-01 was a Thursday: day index 0 -> weekday 3 (Monday = 0).
_EPOCH_WEEKDAY = 3


def feature_matrix(pipeline: Pipeline, events: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The (n_events, n_stateless) float64 matrix of the pipeline's stateless features."""
    specs = [f for f in pipeline.features if f.kind in STATELESS_KINDS]
    out = np.empty((len(events), len(specs)), dtype=np.float64)
    for j, spec in enumerate(specs):
        out[:, j] = _column(spec, events)
    return out


def _column(spec: FeatureSpec, events: Sequence[Mapping[str, Any]]) -> np.ndarray:
    assert spec.field is not None, "load_pipeline checks stateless features name a field"
    if spec.kind == "field":
        return np.fromiter((e[spec.field] for e in events), dtype=np.float64, count=len(events))
    millis = np.fromiter((e[spec.field] for e in events), dtype=np.int64, count=len(events))
    if spec.kind == "weekend":
        weekday = (np.floor_divide(millis, MS_PER_DAY) + _EPOCH_WEEKDAY) % 7
        return (weekday >= 5).astype(np.float64)
    if spec.kind == "hour_at_most":
        hour = np.floor_divide(np.mod(millis, MS_PER_DAY), MS_PER_HOUR)
        return (hour <= spec.hour).astype(np.float64)
    raise AssertionError(f"feature kind {spec.kind!r} passed load_pipeline's check")
