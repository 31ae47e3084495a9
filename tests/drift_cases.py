"""Synthetic streams for the drift tests: a stationary generator and known injected changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.profile import build_profile
from streams.drift.config import DriftConfig
from streams.drift.histogram import Layout
from streams.drift.report import Reference

FEATURES = ["amount", "count", "channel", "temperature", "weekend"]
CATEGORICAL = ["channel"]
DAY_MS = 86_400_000
LABEL_RATE = 0.05


def rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stationary rows: features, scores, labels."""
    X = np.column_stack(
        [
            rng.lognormal(3.0, 0.8, n),
            rng.poisson(3.0, n).astype(float),
            rng.choice([0.0, 1.0, 2.0], n, p=[0.6, 0.3, 0.1]),
            rng.normal(20.0, 2.0, n),
            (rng.uniform(0, 1, n) < 2 / 7).astype(float),
        ]
    )
    scores = score_of(X)
    labels = (rng.uniform(0, 1, n) < LABEL_RATE).astype(int)
    return X, scores, labels


def score_of(X: np.ndarray) -> np.ndarray:
    z = 0.01 * np.nan_to_num(X[:, 0]) + 0.2 * X[:, 1] - 3.0
    return 1.0 / (1.0 + np.exp(-z))


def reference(seed: int = 0, n: int = 20_000) -> Reference:
    X, scores, labels = rows(np.random.default_rng(seed), n)
    profile = build_profile(X, FEATURES, scores, labels, CATEGORICAL)
    return Reference("synthetic", 1, profile, Layout.from_profile(profile, FEATURES))


def config(**overrides: object) -> DriftConfig:
    return DriftConfig(window_ms=DAY_MS, categorical=tuple(CATEGORICAL), **overrides)  # type: ignore[arg-type]


# A change applied to the rows from its onset on: (X, labels, rng) -> (X, labels), in place.
Change = Callable[[np.ndarray, np.ndarray, np.random.Generator], None]


def mean_shift(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    X[:, 0] *= 1.6  # a campaign: amounts 60 % larger


def variance_change(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    X[:, 3] = 20.0 + (X[:, 3] - 20.0) * 2.5  # a sensor gets noisy: same mean, 2.5x the spread


def new_category(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    X[rng.uniform(0, 1, len(X)) < 0.1, 2] = 7.0  # a new channel


def missing_burst(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    X[rng.uniform(0, 1, len(X)) < 0.2, 3] = np.nan  # the sensor fails for a fifth of rows


def concept_change(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    y[:] = (rng.uniform(0, 1, len(y)) < 3 * LABEL_RATE).astype(int)  # features unchanged


REPO = Path(__file__).resolve().parents[1]


def rows_for(
    rng: np.random.Generator, n: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stationary rows of ``width`` numeric features (the demo pipeline's width)."""
    X = rng.lognormal(1.0, 0.5, (n, width))
    return X, 1.0 / (1.0 + np.exp(-0.1 * X[:, 0])), (rng.uniform(0, 1, n) < LABEL_RATE).astype(int)


def reference_for(names: list[str], seed: int = 0) -> Reference:
    X, scores, labels = rows_for(np.random.default_rng(seed), 5_000, len(names))
    profile = build_profile(X, names, scores, labels)
    return Reference("fraud", 1, profile, Layout.from_profile(profile, names))


def prediction(t: int, x: np.ndarray, score: float, partition: int, offset: int) -> dict:
    return {
        "prediction_id": f"{partition}-{offset}",
        "pipeline": "fraud",
        "event_id": f"{partition}-{offset}",
        "entity_key": str(partition),
        "event_time": t,
        "model_name": "fraud",
        "model_version": 1,
        "variant": "champion",
        "score": score,
        "features": [float(v) for v in x],
        "source_partition": partition,
        "source_offset": offset,
        "ingest_time": t,
        "scored_time": t,
        "batch_size": 1,
        "batch_latency_ms": 1.0,
        "shadows": [],
    }
