"""Load the listed model versions and score a backtest's rows: one predict_proba per version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.registry import Registry
from streams.errors import ConfigError
from streams.pipeline import Pipeline


@dataclass(frozen=True)
class ScoredVersion:
    """A version's scores of every row, and how it was asked for ("champion", "3")."""

    ref: str
    name: str
    version: int
    sha256: str
    metadata: dict[str, Any]
    scores: np.ndarray

    @property
    def label(self) -> str:
        return (
            f"v{self.version}" if self.ref == str(self.version) else f"v{self.version} ({self.ref})"
        )


def parse_refs(text: str) -> list[str]:
    refs = [r.strip() for r in text.split(",") if r.strip()]
    if not refs:
        raise ConfigError("--models names no version", hint="e.g. --models champion,3")
    return refs


def load_versions(
    registry: Registry, pipeline: Pipeline, refs: Sequence[str]
) -> list[tuple[str, Any]]:
    """(ref, LoadedModel) per distinct version; a version trained on other features is refused.

    An unknown version or alias raises the registry's own error (it lists what exists).
    """
    loaded: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for ref in refs:
        model = registry.load(pipeline.model_name, ref)
        mv = model.version
        if mv.version in seen:
            continue
        seen.add(mv.version)
        trained_on = mv.metadata.get("feature_spec_hash")
        if trained_on != pipeline.feature_spec_hash:
            raise ConfigError(
                f"{mv.name} v{mv.version} ({ref}) was trained on features {trained_on} but the "
                f"pipeline {pipeline.source} declares {pipeline.feature_spec_hash}",
                hint="backtest versions trained on this pipeline's features, or point "
                "RTSCORE_PIPELINE at the pipeline file the version was trained with",
            )
        loaded.append((ref, model))
    return loaded


def score_versions(loaded: Sequence[tuple[str, Any]], X: np.ndarray) -> list[ScoredVersion]:
    out = []
    for ref, model in loaded:
        mv = model.version
        if len(X):
            scores = np.asarray(model.estimator.predict_proba(X)[:, 1], dtype=np.float64)
        else:
            scores = np.empty(0)
        out.append(ScoredVersion(ref, mv.name, mv.version, mv.sha256, mv.metadata, scores))
    return out
