"""The full feature matrix from its parts, shared by the online and the offline path.

Whichever engine computed the stateful columns (an online store, the offline path), they are
combined with the stateless columns and the ratios here, so the last step is the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.features.reference import FeatureResult
from streams.features.stateless import feature_matrix
from streams.pipeline import Pipeline


def assemble(
    pipeline: Pipeline,
    events: Sequence[Mapping[str, Any]],
    stateful: np.ndarray,
    late: np.ndarray,
    dropped: np.ndarray,
) -> FeatureResult:
    """The (n, n_features) matrix in declaration order; rows of ``dropped`` events are NaN.

    ``stateful`` holds the pipeline's stateful features (``FeatureSpec.stateful``) in
    declaration order; a ``ratio`` is numerator / denominator, 0 when the denominator is 0.
    """
    n = len(events)
    n_stateful = sum(1 for f in pipeline.features if f.stateful)
    if stateful.shape != (n, n_stateful) or late.shape != (n,) or dropped.shape != (n,):
        raise ValueError(
            f"assemble: stateful {stateful.shape}, late {late.shape}, dropped {dropped.shape} "
            f"for {n} events and {n_stateful} stateful features"
        )
    stateless = feature_matrix(pipeline, events)
    X = np.empty((n, len(pipeline.features)), dtype=np.float64)
    column: dict[str, int] = {}
    next_stateful = next_stateless = 0
    for j, f in enumerate(pipeline.features):
        if f.stateful:
            X[:, j] = stateful[:, next_stateful]
            next_stateful += 1
        elif f.kind == "ratio":
            num = X[:, column[f.numerator or ""]]
            den = X[:, column[f.denominator or ""]]
            # inf / inf and overflow give nan / inf silently, as Python's float division does.
            with np.errstate(invalid="ignore", over="ignore"):
                np.divide(num, den, out=X[:, j], where=den != 0)
            X[den == 0, j] = 0.0
        else:
            X[:, j] = stateless[:, next_stateless]
            next_stateless += 1
        column[f.name] = j
    X[dropped] = np.nan
    return FeatureResult(X, np.asarray(late, dtype=bool), np.asarray(dropped, dtype=bool))
