"""Windowed performance: per scorer (decision and shadows), sklearn's numbers, None when
undefined; the [performance] table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from streams.errors import ConfigError
from streams.performance.config import PerformanceConfig, parse_performance, performance_config
from streams.performance.windows import row_of, window_reports
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT

DAY = 86_400_000


def labeled(i: int, label: int | None, score: float, shadow: float, status: str) -> dict:
    return {
        "prediction_id": f"p{i}",
        "event_time": 3 * DAY + i * 1000,
        "entity_key": f"c{i % 7}",
        "label": label,
        "status": status,
        "label_delay_ms": 5000 + i if status == "matched" else None,
        "model_name": "fraud",
        "model_version": 2,
        "variant": "champion",
        "score": score,
        "shadows": [{"model_name": "fraud", "model_version": 3, "variant": "challenger",
                     "score": shadow}],
    }  # fmt: skip


def test_reports_equal_sklearn_per_scorer() -> None:
    rng = np.random.default_rng(4)
    n = 400
    y = (rng.random(n) < 0.2).astype(int)
    champion = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    shadow = rng.random(n)
    records = [
        labeled(
            i, int(y[i]), float(champion[i]), float(shadow[i]), "matched" if y[i] else "expired"
        )
        for i in range(n)
    ]
    records.append(labeled(n, None, 0.9, 0.9, "expired"))  # unlabeled: counted, not scored
    cfg = PerformanceConfig(window_ms=DAY, threshold=0.5, k=10)
    reports = window_reports([row_of(r) for r in records], "fraud", 3 * DAY, cfg, 0)
    assert [(r["model_version"], r["role"]) for r in reports] == [(2, "decision"), (3, "shadow")]
    for rep, p in zip(reports, (champion, shadow), strict=True):
        assert rep["window_end"] == 4 * DAY and rep["predictions"] == n + 1
        assert rep["labeled"] == n and rep["positives"] == int(y.sum())
        assert rep["matched"] == int(y.sum()) and rep["expired"] == n + 1 - int(y.sum())
        assert rep["auc_roc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert rep["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert rep["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-12)
        assert rep["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
        assert rep["precision"] == pytest.approx(precision_score(y, p >= 0.5), abs=1e-12)
        assert rep["recall"] == pytest.approx(recall_score(y, p >= 0.5), abs=1e-12)
        assert rep["label_rate"] == pytest.approx(y.mean())
        delays = [5000 + i for i in range(n) if y[i]]
        assert rep["mean_label_delay_ms"] == pytest.approx(np.mean(delays))
        assert 0.0 <= rep["card_precision_at_k"] <= 1.0


def test_undefined_metrics_are_none() -> None:
    rows = [row_of(labeled(i, 0, 0.1 * i, 0.2, "expired")) for i in range(5)]
    [rep, _] = window_reports(rows, "fraud", 0, PerformanceConfig(), 0)
    assert rep["auc_roc"] is None and rep["average_precision"] is None
    assert rep["recall"] is None and rep["mean_label_delay_ms"] is None
    assert rep["card_precision_at_k"] is None and rep["k"] is None
    assert not math.isnan(rep["log_loss"]) and rep["positives"] == 0
    only_unlabeled = [row_of(labeled(1, None, 0.5, 0.5, "expired"))]
    [rep, _] = window_reports(only_unlabeled, "fraud", 0, PerformanceConfig(), 0)
    assert rep["labeled"] == 0 and rep["label_rate"] is None and rep["brier"] is None
    assert json.loads(only_unlabeled[0])["y"] is None


def test_performance_table() -> None:
    demo = performance_config(load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas"))
    assert demo == PerformanceConfig(DAY, 0.5, 100)
    assert demo.window_start(3 * DAY + 5) == 3 * DAY
    assert parse_performance({}, "p.toml") == PerformanceConfig()
    for raw, needle in [
        ({"window": "0d"}, "positive"),
        ({"threshold": 2}, "outside"),
        ({"threshold": "high"}, "not a number"),
        ({"k": 0}, "positive integer"),
        ({"size": "1d"}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            parse_performance(raw, "p.toml")


def test_show_keeps_the_latest_windows_and_the_last_report_of_each() -> None:
    from streams.performance.show import format_table, latest_reports

    rows = [row_of(labeled(i, i % 2, 0.1 * (i % 10), 0.5, "matched")) for i in range(20)]
    reports = []
    for day in range(4):
        for rep in window_reports(rows, "fraud", day * DAY, PerformanceConfig(k=5), day):
            reports.append(rep)
    reports.append({**reports[0], "window_start": 3 * DAY, "predictions": 999})  # re-reported
    latest = latest_reports(reports, 2)
    assert sorted({r["window_start"] for r in latest}) == [2 * DAY, 3 * DAY]
    assert len(latest) == 4 and 999 in [r["predictions"] for r in latest]
    table = format_table(latest).splitlines()
    assert len(table) == 5 and table[0].split()[:3] == ["window", "(UTC)", "model"]
    assert table[1].startswith("1970-01-03 00:00") and " decision " in table[1]
    assert latest_reports(reports, 0) == []
