"""The Prometheus alert rules on the drift gauges: valid, and their promtool unit tests pass;
the gauges they read are the ones the drift processor exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from streams.drift.metrics import DriftMetrics
from streams.drift.report import build_report
from tests import drift_cases as dc

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (apt-get install prometheus)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def test_the_rules_and_the_config_are_valid(promtool: str) -> None:
    checked = _run(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _run(promtool, "check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout  # the config loads the rules


def test_the_promtool_unit_tests_pass(promtool: str) -> None:
    result = _run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_read_gauges_the_processor_exports() -> None:
    metrics = DriftMetrics()
    ref = dc.reference()
    metrics.observe(
        build_report("fraud", ref, dc.config(), 0, {"rows": 1000.0, "dlq:undecodable": 9.0}, None)
    )
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line and not line.startswith("#")
    }
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    used = set()
    for rule in rules:
        used |= set(re.findall(r"\brtscore_drift_[a-z_]+", rule["expr"]))
    assert used and used <= exported, used - exported
