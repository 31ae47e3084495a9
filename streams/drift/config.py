"""The pipeline file's ``[drift]`` table: window, grace, categorical features, thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from streams.errors import ConfigError
from streams.features.spec import parse_duration


@dataclass(frozen=True)
class Thresholds:
    """warn / alert levels; see README "Drift" for why these defaults."""

    psi_warn: float = 0.1  # the credit-scoring convention: < 0.1 stable, > 0.25 shifted
    psi_alert: float = 0.25
    distance_warn: float = 0.1  # Evidently's default for Jensen-Shannon and normed Wasserstein
    distance_alert: float = 0.2
    p_value: float = 0.05  # KS / chi-square significance (Evidently's default)
    ks_warn: float = 0.1  # a significant KS counts only with at least this statistic
    ks_alert: float = 0.2
    missing_warn: float = 0.02  # missing-rate increase over the reference (absolute)
    missing_alert: float = 0.05
    out_of_range_warn: float = 0.02  # share of values outside the reference [min, max]
    out_of_range_alert: float = 0.05
    new_category_warn: float = 0.01  # share of values in categories the reference never saw
    new_category_alert: float = 0.05
    dead_letter_warn: float = 0.005  # dead letters per input record, per reason
    dead_letter_alert: float = 0.02
    label_ratio_warn: float = 1.5  # window label rate / reference label rate (or inverse)
    label_ratio_alert: float = 2.0
    share_alert: float = 0.3  # overall alert when this share of features is in alert


@dataclass(frozen=True)
class DriftConfig:
    window_ms: int = 86_400_000
    grace_ms: int = 600_000
    categorical: tuple[str, ...] = ()
    label_lag_windows: int = 30  # labels of window w are complete w + lag windows later
    labels: bool = True  # label drift (needs [outcomes] with label_field, event_time_field)
    min_rows: int = 200  # smaller windows are reported but never alert
    thresholds: Thresholds = field(default_factory=Thresholds)


def parse_drift(raw: dict[str, Any], where: str) -> DriftConfig:
    """Parse ``[drift]`` (every key optional); unknown keys are refused."""
    known = {"window", "grace", "categorical", "label_lag", "labels", "min_rows", "thresholds"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(
            f"{where}: [drift] has unknown keys {sorted(extra)}",
            hint=f"use {', '.join(sorted(known))}",
        )
    window_ms = parse_duration(raw.get("window", "1d"), f"{where} [drift] window")
    if window_ms <= 0:
        raise ConfigError(f"{where}: [drift] window must be positive")
    grace_ms = parse_duration(raw.get("grace", "10m"), f"{where} [drift] grace")
    lag_ms = parse_duration(raw.get("label_lag", "30d"), f"{where} [drift] label_lag")
    thresholds_raw = dict(raw.get("thresholds", {}))
    names = {f.name for f in fields(Thresholds)}
    bad = set(thresholds_raw) - names
    if bad:
        raise ConfigError(
            f"{where}: [drift.thresholds] has unknown keys {sorted(bad)}",
            hint=f"use {', '.join(sorted(names))}",
        )
    try:
        thresholds = Thresholds(**{k: float(v) for k, v in thresholds_raw.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: [drift.thresholds] values must be numbers: {exc}") from exc
    return DriftConfig(
        window_ms=window_ms,
        grace_ms=grace_ms,
        categorical=tuple(str(c) for c in raw.get("categorical", ())),
        label_lag_windows=max(0, -(-lag_ms // window_ms)),
        labels=bool(raw.get("labels", True)),
        min_rows=int(raw.get("min_rows", 200)),
        thresholds=thresholds,
    )


def drift_config(pipeline: Any) -> DriftConfig:
    """The drift configuration of a loaded :class:`streams.pipeline.Pipeline`."""
    config = parse_drift(pipeline.sections.get("drift", {}), str(pipeline.source))
    unknown = set(config.categorical) - set(pipeline.feature_names)
    if unknown:
        raise ConfigError(
            f"{pipeline.source}: [drift] categorical names {sorted(unknown)}, not features",
            hint=f"choose from {', '.join(pipeline.feature_names)}",
        )
    return config
