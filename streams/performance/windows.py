"""Windowed performance as pure functions: a labeled prediction becomes one row per window,
and a closed window's rows become one PerformanceReport per model version and variant.

A row carries every score made for the event (the decision's and each shadow's), so the
champion, the shadow challengers and the A/B arms are judged on the same labels. Rows without
a label (``on_missing = "unlabeled"``) count in ``predictions`` but not in the metrics.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score

from models.metrics import auc_roc, average_precision, card_precision_at_k
from streams.performance.config import DAY_MS, PerformanceConfig

ScoreKey = tuple[str, int, str, str]  # model name, version, variant, role


def row_of(labeled: dict[str, Any]) -> str:
    """The window row of a LabeledPrediction (compact JSON, stored per prediction id)."""
    scores = [
        [labeled["model_name"], labeled["model_version"], labeled["variant"], "decision",
         labeled["score"]],
        *(
            [s["model_name"], s["model_version"], s["variant"], "shadow", s["score"]]
            for s in labeled["shadows"]
        ),
    ]  # fmt: skip
    return json.dumps(
        {
            "t": labeled["event_time"],
            "e": labeled["entity_key"],
            "y": labeled["label"],
            "st": labeled["status"],
            "d": labeled["label_delay_ms"],
            "s": scores,
        },
        separators=(",", ":"),
    )


def window_reports(
    rows: list[str], pipeline: str, start: int, cfg: PerformanceConfig, reported_ms: int
) -> list[dict[str, Any]]:
    """One PerformanceReport (schemas/performance_report.avsc) per scorer seen in the rows."""
    parsed = [json.loads(r) for r in rows]
    by_scorer: dict[ScoreKey, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    for row in parsed:
        for name, version, variant, role, score in row["s"]:
            by_scorer[(name, int(version), variant, role)].append((row, float(score)))
    return [
        {
            "pipeline": pipeline,
            "window_start": start,
            "window_end": start + cfg.window_ms,
            "model_name": name,
            "model_version": version,
            "variant": variant,
            "role": role,
            **metrics([row for row, _ in scored], [s for _, s in scored], cfg),
            "reported_time": reported_ms,
        }
        for (name, version, variant, role), scored in sorted(by_scorer.items())
    ]


def metrics(
    rows: list[dict[str, Any]], scores: list[float], cfg: PerformanceConfig
) -> dict[str, Any]:
    """The metrics of one scorer over one window's rows (undefined ones are None)."""
    labeled = [i for i, row in enumerate(rows) if row["y"] is not None]
    y = np.asarray([rows[i]["y"] for i in labeled], dtype=np.int64)
    p = np.asarray([scores[i] for i in labeled], dtype=np.float64)
    delays = [row["d"] for row in rows if row["st"] == "matched" and row["d"] is not None]
    out: dict[str, Any] = {
        "predictions": len(rows),
        "matched": sum(1 for row in rows if row["st"] == "matched"),
        "expired": sum(1 for row in rows if row["st"] == "expired"),
        "labeled": len(labeled),
        "positives": int(y.sum()),
        "label_rate": float(y.mean()) if len(y) else None,
        "mean_label_delay_ms": float(np.mean(delays)) if delays else None,
        "threshold": cfg.threshold,
        "k": cfg.k,
        "auc_roc": None,
        "average_precision": None,
        "log_loss": None,
        "brier": None,
        "precision": None,
        "recall": None,
        "card_precision_at_k": None,
    }
    if not len(y):
        return out
    decided = p >= cfg.threshold
    out.update(
        auc_roc=_defined(auc_roc(y, p)),
        average_precision=_defined(average_precision(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        precision=_defined(precision_score(y, decided, zero_division=np.nan)),
        recall=_defined(recall_score(y, decided, zero_division=np.nan)),
    )
    if cfg.k is not None:
        cards = [rows[i]["e"] for i in labeled]
        days = [rows[i]["t"] // DAY_MS for i in labeled]
        out["card_precision_at_k"] = _defined(card_precision_at_k(y, p, cards, days, cfg.k))
    return out


def _defined(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
