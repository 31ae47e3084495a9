"""Prometheus metrics of the join worker, on their own registry (``metrics_port + 1``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.metrics import serve_metrics

REPORTED_METRICS = (
    "auc_roc",
    "average_precision",
    "log_loss",
    "brier",
    "precision",
    "recall",
    "label_rate",
    "mean_label_delay_ms",
    "card_precision_at_k",
    "predictions",
    "labeled",
)


class JoinMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "rtscore_join_records",
            "what the join did: predictions, outcomes, matched, expired, orphan_outcome, "
            "outcome_after_window, late_outcome, duplicate_outcome, ...",
            ["pipeline", "result"],
            registry=r,
        )
        self.watermark = Gauge(
            "rtscore_join_watermark_ms",
            "the join's event-time watermark (min over partitions of the latest event time)",
            ["pipeline"],
            registry=r,
        )
        self.recovered = Counter(
            "rtscore_join_recovered",
            "decided records of a dead worker published again by this one",
            ["pipeline"],
            registry=r,
        )
        self.dependency_waits = Counter(
            "rtscore_join_dependency_waits",
            "times a join batch paused because Redis was unavailable (retried, nothing lost)",
            ["pipeline"],
            registry=r,
        )
        self.performance = Gauge(
            "rtscore_model_performance",
            "a metric of the latest closed performance window per model version and variant",
            ["pipeline", "model", "version", "variant", "role", "metric"],
            registry=r,
        )
        self.performance_window = Gauge(
            "rtscore_model_performance_window_start_ms",
            "start of the latest closed performance window",
            ["pipeline"],
            registry=r,
        )

    def count(self, pipeline: str, counts: dict[str, int]) -> None:
        for result, n in counts.items():
            if n:
                self.records.labels(pipeline, result).inc(n)

    def report(self, reports: Iterable[dict[str, Any]]) -> None:
        for rep in reports:
            labels = (
                rep["pipeline"],
                rep["model_name"],
                str(rep["model_version"]),
                rep["variant"],
                rep["role"],
            )
            for name in REPORTED_METRICS:
                value = rep[name]
                if value is not None:
                    self.performance.labels(*labels, name).set(value)
            self.performance_window.labels(rep["pipeline"]).set(rep["window_start"])

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        serve_metrics(self.registry, port, addr, "join", offset=1)
