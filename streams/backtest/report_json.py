"""The backtest report as JSON: the same figures the HTML shows (NaN -> null)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.backtest.dataset import Dataset
from streams.backtest.score import ScoredVersion
from streams.pipeline import Pipeline
from streams.replay.ranges import show_time


def report(
    pipeline: Pipeline,
    data: Dataset,
    versions: Sequence[ScoredVersion],
    figures: dict[str, Any],
    drift: dict[str, Any],
    timing: dict[str, float],
) -> dict[str, Any]:
    known = ~np.isnan(data.labels)
    return {
        "pipeline": pipeline.name,
        "pipeline_file": str(pipeline.source),
        "feature_spec_hash": pipeline.feature_spec_hash,
        "range": {
            "from": show_time(data.start_ms),
            "to": show_time(data.end_ms),
            "from_ms": data.start_ms,
            "to_ms": data.end_ms,
            "warm_up_from_ms": data.warm_start_ms,
        },
        "models": [
            {
                "label": v.label,
                "ref": v.ref,
                "name": v.name,
                "version": v.version,
                "sha256": v.sha256,
                "created_at": v.metadata.get("created_at"),
                "estimator": v.metadata.get("estimator"),
                "trained_on": v.metadata.get("training_data", {}),
            }
            for v in versions
        ],
        "rows": {
            "events": data.n_rows,
            "labelled": int(np.count_nonzero(known)),
            "positives": int(np.nansum(data.labels)),
            "unlabelled": int(np.count_nonzero(~known)),
            "open_windows": data.open_windows,
            "events_read_with_warm_up": data.events_read,
            "outcomes_read": data.outcomes_read,
        },
        "read_offsets": {
            topic: {str(p): list(r) for p, r in sorted(offsets.items())}
            for topic, offsets in data.read_offsets.items()
        },
        "timing_s": timing,
        "metrics": figures,
        "drift": drift,
    }


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        return clean(value.item())
    return value


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(clean(doc), indent=1, allow_nan=False) + "\n")
