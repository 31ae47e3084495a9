"""The [drift] table: defaults, durations, thresholds, and refusals that say what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.drift.config import drift_config, parse_drift
from streams.errors import ConfigError
from streams.pipeline import load_pipeline

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_overrides() -> None:
    c = parse_drift({}, "f.toml")
    assert (c.window_ms, c.grace_ms, c.label_lag_windows) == (86_400_000, 600_000, 30)
    c = parse_drift(
        {"window": "1h", "label_lag": "90m", "thresholds": {"psi_alert": 0.3}}, "f.toml"
    )
    assert c.window_ms == 3_600_000
    assert c.label_lag_windows == 2  # rounded up to whole windows
    assert c.thresholds.psi_alert == 0.3 and c.thresholds.psi_warn == 0.1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"windw": "1d"}, "unknown keys"),
        ({"window": "soon"}, "not a duration"),
        ({"thresholds": {"psi": 1}}, "unknown keys"),
        ({"thresholds": {"psi_warn": "high"}}, "must be numbers"),
    ],
)
def test_mistakes_are_config_errors(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_drift(raw, "f.toml")


def test_the_demo_pipeline_declares_its_drift_table() -> None:
    pipeline = load_pipeline(REPO / "streams" / "demo" / "fraud.toml", REPO / "schemas")
    config = drift_config(pipeline)
    assert config.window_ms == 7 * 86_400_000 and config.label_lag_windows == 2
