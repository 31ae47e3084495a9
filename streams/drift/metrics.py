"""Prometheus gauges of the drift processor: the latest window's statistics and statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from streams.drift.severity import NAMES

GAUGED = (
    "psi", "ks_statistic", "ks_p_value", "js_distance", "wasserstein_normed",
    "chi_square_p_value", "new_category_share", "out_of_range_rate", "missing_rate",
)  # fmt: skip


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.statistic = Gauge(
            "rtscore_drift_statistic",
            "a drift statistic of a feature in the latest reported window",
            ["pipeline", "feature", "statistic"],
            registry=r,
        )
        self.feature_status = Gauge(
            "rtscore_drift_feature_status",
            "0 ok, 1 warn, 2 alert: a feature (or __score__, __label__) in the latest window",
            ["pipeline", "feature"],
            registry=r,
        )
        self.status = Gauge(
            "rtscore_drift_status", "0 ok, 1 warn, 2 alert: the latest window", ["pipeline"],
            registry=r,
        )  # fmt: skip
        self.drifted_share = Gauge(
            "rtscore_drift_drifted_share", "share of features in alert", ["pipeline"], registry=r
        )
        self.window_end = Gauge(
            "rtscore_drift_window_end_seconds",
            "event-time end of the latest reported window",
            ["pipeline"],
            registry=r,
        )
        self.dead_letter_rate = Gauge(
            "rtscore_drift_dead_letter_rate",
            "dead letters per input record in the latest window, by reason",
            ["pipeline", "reason"],
            registry=r,
        )
        self.label_rate = Gauge(
            "rtscore_drift_label_rate",
            "label rate of the latest window whose labels are complete",
            ["pipeline"],
            registry=r,
        )
        self.reports = Counter(
            "rtscore_drift_reports", "drift reports published", ["pipeline", "status"], registry=r
        )
        self.records = Counter(
            "rtscore_drift_records", "records applied to windows", ["pipeline", "topic"], registry=r
        )
        self.late = Counter(
            "rtscore_drift_late_records",
            "records for a window already reported (not counted in it)",
            ["pipeline", "topic"],
            registry=r,
        )
        self.skipped = Counter(
            "rtscore_drift_skipped_records",
            "records the drift processor could not read (logged)",
            ["pipeline", "topic"],
            registry=r,
        )
        self.reference_fallbacks = Counter(
            "rtscore_drift_reference_fallbacks",
            "versions whose profile could not be used: their windows were compared with the "
            "champion's of the processor's start (logged)",
            ["pipeline", "model_name", "model_version"],
            registry=r,
        )

    def observe(self, report: Mapping[str, Any]) -> None:
        p = report["pipeline"]
        for f in [*report["features"], report["score"]]:
            for stat in GAUGED:
                if f.get(stat) is not None:
                    self.statistic.labels(p, f["name"], stat).set(f[stat])
            self.feature_status.labels(p, f["name"]).set(NAMES.index(f["status"]))
        self.dead_letter_rate.clear()
        for d in report["dead_letters"]:
            self.dead_letter_rate.labels(p, d["reason"]).set(d["rate"])
        if report["labels"] is not None:
            self.label_rate.labels(p).set(report["labels"]["label_rate"])
            self.feature_status.labels(p, "__label__").set(NAMES.index(report["labels"]["status"]))
        self.status.labels(p).set(NAMES.index(report["status"]))
        self.drifted_share.labels(p).set(report["drifted_share"])
        self.window_end.labels(p).set(report["window_end"] / 1000.0)
        self.reports.labels(p, report["status"]).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
