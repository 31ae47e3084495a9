"""The pipeline's ``[performance]`` table: window size, decision threshold and CP@k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.errors import ConfigError
from streams.features.spec import parse_duration

DAY_MS = 86_400_000


@dataclass(frozen=True)
class PerformanceConfig:
    window_ms: int = DAY_MS
    threshold: float = 0.5
    k: int | None = None  # Card Precision@k when set (the fraud demo: 100)

    def window_start(self, event_time_ms: int) -> int:
        """Tumbling windows aligned on the epoch (daily windows start at 00:00 UTC)."""
        return event_time_ms - event_time_ms % self.window_ms


def parse_performance(raw: dict[str, Any], where: str) -> PerformanceConfig:
    unknown = set(raw) - {"window", "threshold", "k"}
    if unknown:
        raise ConfigError(
            f"{where}: [performance] has unknown keys {sorted(unknown)}",
            hint='[performance] takes window (e.g. "1d"), threshold (0-1) and k (CP@k)',
        )
    window_ms = parse_duration(raw.get("window", "1d"), f"{where} [performance] window")
    if window_ms <= 0:
        raise ConfigError(f"{where}: [performance] window must be positive")
    threshold = raw.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ConfigError(f"{where}: [performance] threshold {threshold!r} is not a number")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"{where}: [performance] threshold {threshold} is outside [0, 1]")
    k = raw.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"{where}: [performance] k must be a positive integer, got {k!r}")
    return PerformanceConfig(window_ms, float(threshold), k)


def performance_config(pipeline: Any) -> PerformanceConfig:
    """The ``[performance]`` table of a loaded :class:`streams.pipeline.Pipeline`."""
    return parse_performance(pipeline.sections.get("performance", {}), str(pipeline.source))
