"""Prometheus metrics of a worker, on their own registry so tests can build several."""

from __future__ import annotations

import errno

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streams.errors import ConfigError

_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "rtscore_events_in", "input records consumed", ["pipeline"], registry=r
        )
        self.predictions_out = Counter(
            "rtscore_predictions_out",
            "predictions acknowledged by the broker",
            ["pipeline", "model", "version", "variant"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rtscore_dead_letters",
            "input records sent to the dead-letter topic",
            ["pipeline", "stage", "reason"],
            registry=r,
        )
        self.publish_retries = Counter(
            "rtscore_publish_retries",
            "batches re-published after a broker error (work paused, nothing lost)",
            ["pipeline"],
            registry=r,
        )
        self.outcomes_in = Counter(
            "rtscore_outcomes_in",
            "valid outcome events applied to the label state",
            ["pipeline"],
            registry=r,
        )
        self.late_events = Counter(
            "rtscore_late_events",
            "events later than the allowed lateness, scored with the state there was",
            ["pipeline"],
            registry=r,
        )
        self.dependency_waits = Counter(
            "rtscore_dependency_waits",
            "times a batch paused because Redis was unavailable (retried, nothing lost)",
            ["pipeline"],
            registry=r,
        )
        self.batch_size = Histogram(
            "rtscore_batch_size",
            "records per micro-batch",
            ["pipeline"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "rtscore_batch_latency_seconds",
            "decode + features + score + publish time of a micro-batch",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "rtscore_model_info",
            "1 for each model version a worker serves, as an A/B arm or a shadow",
            ["pipeline", "model", "version", "variant", "role", "sha256"],
            registry=r,
        )
        self.shadow_scores = Counter(
            "rtscore_shadow_scores",
            "rows scored in shadow (recorded in predictions, never the decision)",
            ["pipeline", "model", "version", "variant"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "rtscore_shadow_failures",
            "rows a shadow model could not score (their predictions lack that shadow)",
            ["pipeline"],
            registry=r,
        )
        self.model_swaps = Counter(
            "rtscore_model_swaps",
            "serving states applied without a restart (promote, rollback, split, shadow)",
            ["pipeline"],
            registry=r,
        )
        self.model_swaps_refused = Counter(
            "rtscore_model_swaps_refused",
            "serving states not applied (the serving version stays), by reason",
            ["pipeline", "reason"],
            registry=r,
        )
        self.pacing_held = Gauge(
            "rtscore_pacing_held_events",
            "events received and held back until every partition is scored close to their time",
            ["pipeline"],
            registry=r,
        )
        self.pacing_remote_floor = Gauge(
            "rtscore_pacing_remote_floor_seconds",
            "event time reached by the slowest partition another worker holds (0: none waits)",
            ["pipeline"],
            registry=r,
        )
        self.model_swap_lag = Gauge(
            "rtscore_model_swap_lag_seconds",
            "seconds from the publication of the last serving state applied to its swap",
            ["pipeline"],
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose /metrics over HTTP (port 0 = off)."""
        serve_metrics(self.registry, port, addr, "scoring", offset=0)


def serve_metrics(
    registry: CollectorRegistry, port: int, addr: str, processor: str, offset: int
) -> None:
    """Serve ``registry`` on ``addr:port`` (0 = off); a port in use is a configuration error
    that names the fix: each worker's three processors take ``RTSCORE_METRICS_PORT`` + 0..2."""
    if not port:
        return
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        base = port - offset
        raise ConfigError(
            f"the {processor} processor's metrics port {addr}:{port} "
            f"(RTSCORE_METRICS_PORT {base} + {offset}) is already in use",
            hint=(
                "give each worker on this host its own RTSCORE_METRICS_PORT, 3 apart "
                f"(its scoring, join and drift processors use {base}, {base + 1} and "
                f"{base + 2}; e.g. {base + 3} for the next worker), or 0 to turn metrics off"
            ),
        ) from None
