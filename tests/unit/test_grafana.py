"""The Grafana dashboard and its provisioning agree with the code's metrics and the compose file.

Structure only (no Grafana, no Prometheus): the dashboard queries only series the workers
export, with labels those series have, through the ``${datasource}`` variable; the compose
service mounts files that exist where the provisioning expects them.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "rtscore.json"
COMPOSE_FILE = REPO / "docker-compose.yml"
DATASOURCE = "${datasource}"
# Series names a prometheus_client metric exposes, by type (the _created samples are not queried).
SUFFIXES = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "Summary": ("_sum", "_count", ""),
    "Info": ("_info",),
    "Enum": ("",),
}
EXTRA_LABELS = {"Histogram": {"le"}, "Summary": {"quantile"}}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time

_METRIC = re.compile(r"\b(rtscore_[A-Za-z0-9_]*)\b")
_SELECTOR = re.compile(r"\b(rtscore_[A-Za-z0-9_]*)\b(?:\s*\{([^}]*)\})?")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _string(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _labelnames(call: ast.Call) -> tuple[str, ...]:
    node = call.args[2] if len(call.args) > 2 else None
    for keyword in call.keywords:
        if keyword.arg == "labelnames":
            node = keyword.value
    if isinstance(node, ast.List | ast.Tuple):
        names = [_string(element) for element in node.elts]
        assert all(names), f"labelnames must be literal strings: {ast.unparse(node)}"
        return tuple(str(name) for name in names)
    assert node is None, f"labelnames must be a literal list: {ast.unparse(node)}"
    return ()


def metric_definitions(source: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{name: (type, labelnames)}`` of the prometheus_client metrics a module creates."""
    tree = ast.parse(source)
    kinds: dict[str, str] = {}  # local name -> prometheus_client class
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client":
            for alias in node.names:
                if alias.name in SUFFIXES:
                    kinds[alias.asname or alias.name] = alias.name
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            kind = kinds.get(node.func.id)
            if kind is None:
                continue  # e.g. collections.Counter
            name = _string(node.args[0]) if node.args else None
            assert name, f"a {kind} without a literal name: {ast.unparse(node)}"
            if kind == "Counter":
                name = name.removesuffix("_total")  # prometheus_client adds it back
            found[name] = (kind, _labelnames(node))
    return found


@pytest.fixture(scope="module")
def definitions() -> dict[str, tuple[str, tuple[str, ...]]]:
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for path in sorted((REPO / "streams").glob("**/metrics.py")):
        for name, definition in metric_definitions(path.read_text()).items():
            assert name not in found, f"{name} is defined twice"
            found[name] = definition
    return found


@pytest.fixture(scope="module")
def series(definitions: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, set[str]]:
    """Every series name the workers expose -> the label names it can carry."""
    out = {}
    for name, (kind, labels) in definitions.items():
        for suffix in SUFFIXES[kind]:
            out[name + suffix] = set(labels) | EXTRA_LABELS.get(kind, set()) | TARGET_LABELS
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))  # inside collapsed rows


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query: panel targets and variable queries."""
    for panel in walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"${variable['name']}", query["query"] if isinstance(query, dict) else query


def check_expression(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What is wrong with one expression: unknown series, unknown labels."""
    problems = []
    used = _METRIC.findall(expr)
    if not used:
        problems.append("queries no rtscore series")
    for name in used:
        if name not in series:
            problems.append(f"{name} is not a metric the code defines")
    known = set().union(*(series.get(name, set()) for name in used))
    for name, matchers in _SELECTOR.findall(expr):
        labels = series.get(name, set())
        parsed = _MATCHER.findall(matchers)
        rebuilt = ",".join(f'{label}{op}"{value}"' for label, op, value in parsed)
        assert rebuilt == re.sub(r"\s+", "", matchers), f"unparsed matchers in {expr}"
        for label, _op, _value in parsed:
            if label not in labels:
                problems.append(f"{name} has no label {label!r}")
        if ("pipeline", "=~", "$pipeline") not in parsed and name in series:
            problems.append(f"{name} is not filtered by the $pipeline variable")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in known:
                problems.append(f"grouping by {label!r}, a label none of {used} has")
    return problems


def test_the_metric_definitions_are_found(
    definitions: dict[str, tuple[str, tuple[str, ...]]],
) -> None:
    # the parser sees all three processors (a parser that found nothing would pass everything)
    assert definitions["rtscore_events_in"] == ("Counter", ("pipeline",))
    assert definitions["rtscore_batch_latency_seconds"][0] == "Histogram"
    assert definitions["rtscore_join_watermark_ms"] == ("Gauge", ("pipeline",))
    assert definitions["rtscore_drift_status"] == ("Gauge", ("pipeline",))


def test_the_dashboard_parses_and_is_current(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "rtscore"
    assert dashboard["schemaVersion"] >= 39
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Scoring", "Models", "Outcome join & performance", "Drift"]
    ids = [p["id"] for p in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    pipeline = variables["pipeline"]
    assert pipeline["datasource"]["uid"] == DATASOURCE
    query = pipeline["query"]
    query = query["query"] if isinstance(query, dict) else query
    assert query == "label_values(rtscore_events_in_total, pipeline)"


def test_every_query_uses_defined_metrics_and_labels(
    dashboard: dict[str, Any], series: dict[str, set[str]]
) -> None:
    problems = [
        f"{where}: {expr}: {problem}"
        for where, expr in expressions(dashboard)
        for problem in check_expression(expr, series)
        if not (where.startswith("$") and "filtered by" in problem)  # the variable's own query
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('rate(rtscore_events_total{pipeline=~"$pipeline"}[1m])', "rtscore_events_total is not"),
        ('rate(rtscore_events_in{pipeline=~"$pipeline"}[1m])', "rtscore_events_in is not"),
        ('rtscore_batch_size{pipeline=~"$pipeline"}', "rtscore_batch_size is not"),
        ('rtscore_drift_status{pipeline=~"$pipeline", model="x"}', "has no label 'model'"),
        ("rtscore_drift_status", "not filtered by the $pipeline"),
        ('sum by (result) (rtscore_drift_status{pipeline=~"$pipeline"})', "grouping by 'result'"),
    ],
)
def test_the_checker_rejects(series: dict[str, set[str]], expr: str, problem: str) -> None:
    assert any(problem in p for p in check_expression(expr, series)), expr


def test_a_renamed_metric_is_caught() -> None:
    source = (REPO / "streams" / "metrics.py").read_text()
    renamed = metric_definitions(source.replace('"rtscore_events_in"', '"rtscore_events_read"'))
    assert "rtscore_events_in" not in renamed and "rtscore_events_read" in renamed


def test_the_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    queried = " ".join(expr for _where, expr in expressions(dashboard))
    for name in (
        "rtscore_events_in_total",
        "rtscore_predictions_out_total",
        "rtscore_dead_letters_total",
        "rtscore_batch_latency_seconds_bucket",
        "rtscore_dependency_waits_total",
        "rtscore_model_info",
        "rtscore_model_swaps_refused_total",
        "rtscore_join_records_total",
        "rtscore_join_watermark_ms",
        "rtscore_model_performance",
        "rtscore_drift_status",
        "rtscore_drift_feature_status",
        "rtscore_drift_statistic",
        "rtscore_drift_dead_letter_rate",
        "rtscore_drift_label_rate",
    ):
        assert re.search(rf"\b{name}\b", queried), name
    for metric in ("auc_roc", "average_precision", "log_loss", "brier"):
        assert f'metric="{metric}"' in queried, metric
    assert 'statistic="psi"' in queried


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: `make test` installs it (apt-get install prometheus)"
        )
    # as recording rules, with the variables as Grafana would substitute them
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$pipeline", "fraud")}
        for i, (_where, expr) in enumerate(expressions(dashboard))
        if not expr.startswith("label_values(")  # Grafana's, not PromQL
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout


def test_every_panel_queries_through_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in walk_panels(dashboard["panels"]):
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE


def test_drift_status_panels_name_the_levels(dashboard: dict[str, Any]) -> None:
    status_panels = [
        panel
        for panel in walk_panels(dashboard["panels"])
        if any(
            re.search(r"rtscore_drift_(feature_)?status\b", t["expr"])
            for t in panel.get("targets", [])
        )
    ]
    assert len(status_panels) >= 2
    for panel in status_panels:
        mappings = panel["fieldConfig"]["defaults"]["mappings"]
        texts = {k: v["text"] for m in mappings for k, v in m["options"].items()}
        assert texts == {"0": "ok", "1": "warn", "2": "alert"}, panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_provisioning(dashboard: dict[str, Any]) -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/rtscore.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_compose_service_mounts_files_that_exist() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grafana = compose["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", grafana["image"]), "pin an 11.x tag"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "prometheus" in grafana["depends_on"]
    env = {str(k): str(v) for k, v in grafana["environment"].items()}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, mode = str(volume).split(":")
        assert mode == "ro", volume
        assert (REPO / source).exists(), f"{source} does not exist"
        mounts[target] = REPO / source
    assert mounts["/etc/grafana/provisioning/datasources"] == GRAFANA / "provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == GRAFANA / "provisioning/dashboards"
    dashboards = mounts["/var/lib/grafana/dashboards"]
    assert (dashboards / DASHBOARD.name).is_file()
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert home.startswith("/var/lib/grafana/dashboards/")
        assert (dashboards / Path(home).name).is_file(), home
