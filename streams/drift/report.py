"""One window's DriftReport (schemas/drift_report.avsc) from its merged counts (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.drift import severity, stats
from streams.drift.config import DriftConfig
from streams.drift.histogram import (
    Column,
    Layout,
    category_counts,
    dead_letter_counts,
    fine_counts,
)


@dataclass(frozen=True)
class Reference:
    """What a window is compared with: the serving model's profile."""

    model_name: str
    model_version: int
    profile: Mapping[str, Any]
    layout: Layout


def column_stats(column: Column, counts: Mapping[str, float], rows: float) -> dict[str, Any]:
    """Every statistic of one column in one window (None where it does not apply)."""
    ref = column.reference
    missing = counts.get(f"{column.key}:nan", 0.0)
    out: dict[str, Any] = dict.fromkeys(
        (
            "psi",
            "ks_statistic",
            "ks_p_value",
            "js_distance",
            "wasserstein_normed",
            "chi_square",
            "chi_square_p_value",
            "new_category_share",
            "out_of_range_rate",
        )
    )
    out.update(
        name=column.name,
        kind=column.kind,
        missing_rate=missing / rows if rows else None,
        reference_missing_rate=float(ref.get("missing_rate", 0.0)),
    )
    present = rows - missing
    if present <= 0:
        return out
    if column.kind == "categorical":
        cats = category_counts(counts, column)
        freq = dict(ref["frequencies"])
        new = sum(v for k, v in cats.items() if k not in freq)
        keys = sorted(set(freq) | set(cats))
        out["new_category_share"] = new / present
        out["js_distance"] = stats.js_distance(
            np.array([freq.get(k, 0.0) for k in keys]), np.array([cats.get(k, 0.0) for k in keys])
        )
        out["chi_square"], out["chi_square_p_value"] = stats.chi_square(freq, cats)
        return out
    edges = column.edges
    fine = fine_counts(counts, column)
    reference = np.asarray(ref["counts"], dtype=np.float64)
    psi_edges = np.asarray(ref["psi_edges"], dtype=np.float64)
    coarse = stats.rebin(fine, edges, psi_edges)
    ref_coarse = np.asarray(ref["psi_frequencies"], dtype=np.float64)
    ks, p_value, _ = stats.ks_binned(reference, fine)
    w, _ = stats.wasserstein_binned(
        edges,
        reference,
        fine,
        counts.get(f"{column.key}:lo", 0.0),
        counts.get(f"{column.key}:hi", 0.0),
    )
    std = float(ref.get("std") or 0.0)
    out.update(
        psi=stats.psi(ref_coarse, coarse),
        js_distance=stats.js_distance(ref_coarse, coarse),
        ks_statistic=ks,
        ks_p_value=p_value,
        wasserstein_normed=w / std if std > 0 else w,
        out_of_range_rate=float(fine[0] + fine[-1]) / present,
    )
    return out


def build_report(
    pipeline: str,
    reference: Reference,
    config: DriftConfig,
    window_start: int,
    counts: Mapping[str, float],
    labels: tuple[int, Mapping[str, float]] | None = None,
    created_ms: int = 0,
) -> dict[str, Any]:
    """The report of the window starting at ``window_start``; ``labels`` = (start, counts) of
    the earlier window whose labels are complete now."""
    t = config.thresholds
    rows = float(counts.get("rows", 0.0))
    judged = rows >= config.min_rows
    features = []
    for column in reference.layout.columns:
        s = column_stats(column, counts, rows)
        _judge(s, column.kind, t, judged)
        features.append(s)
    score = column_stats(reference.layout.score, counts, rows)
    _judge(score, "numeric", t, judged)

    dead = dead_letter_counts(counts)
    inputs = rows + sum(dead.values())
    dead_letters = []
    for reason, n in sorted(dead.items()):
        rate = n / inputs if inputs else 0.0
        lvl = severity.level(rate, t.dead_letter_warn, t.dead_letter_alert)
        dead_letters.append(
            {"reason": reason, "count": int(n), "rate": rate, "status": severity.NAMES[lvl]}
        )
    dead_level = max((severity.NAMES.index(d["status"]) for d in dead_letters), default=0)

    label = _label_drift(reference, config, labels)
    label_level = severity.NAMES.index(label["status"]) if label else 0
    feature_levels = [severity.NAMES.index(f["status"]) for f in features]
    overall, share = severity.overall_status(
        feature_levels, [severity.NAMES.index(score["status"]), label_level], dead_level, t
    )
    drifted = [f["name"] for f in features if f["status"] != "ok"]
    if score["status"] != "ok":
        drifted.append(score["name"])
    drifted += [f"dead_letters:{d['reason']}" for d in dead_letters if d["status"] != "ok"]
    if label_level:
        drifted.append("__label__")
    return {
        "report_id": f"{pipeline}:{window_start}",
        "pipeline": pipeline,
        "model_name": reference.model_name,
        "model_version": reference.model_version,
        "window_start": window_start,
        "window_end": window_start + config.window_ms,
        "rows": int(rows),
        "status": severity.NAMES[overall],
        "drifted_share": share,
        "drifted": drifted,
        "features": features,
        "score": score,
        "dead_letters": dead_letters,
        "labels": label,
        "created_time": created_ms,
    }


def _judge(s: dict[str, Any], kind: str, t: Any, judged: bool) -> None:
    if not judged:
        s["status"], s["reasons"] = "ok", []
        return
    judge = severity.categorical_status if kind == "categorical" else severity.numeric_status
    lvl, reasons = judge(s, t)
    s["status"], s["reasons"] = severity.NAMES[lvl], reasons


def _label_drift(
    reference: Reference, config: DriftConfig, labels: tuple[int, Mapping[str, float]] | None
) -> dict[str, Any] | None:
    if labels is None:
        return None
    start, counts = labels
    rows, positives = float(counts.get("rows", 0.0)), float(counts.get("pos", 0.0))
    ref_rate = reference.profile.get("label_rate")
    ref_rows = float(reference.profile.get("rows", 0))
    if not rows or ref_rate is None:
        return None
    rate = positives / rows
    ratio = rate / ref_rate if ref_rate > 0 else None
    p_value = stats.two_proportion_p(positives, rows, ref_rate * ref_rows, ref_rows)
    lvl = severity.label_status(ratio, p_value, config.thresholds) if rows >= config.min_rows else 0
    return {
        "window_start": start,
        "window_end": start + config.window_ms,
        "rows": int(rows),
        "positives": int(positives),
        "label_rate": rate,
        "reference_label_rate": float(ref_rate),
        "p_value": p_value,
        "status": severity.NAMES[lvl],
    }
