"""docker-compose.yml, its Dockerfile and Prometheus config agree with each other and the code.

Structure only (no Docker engine needed): services, healthchecks, start order, listener
wiring, and that every RTSCORE_ variable the stack sets is a real setting with a valid value.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SETTING_ENV_NAMES = {f"RTSCORE_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_every_service_exists(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "simulator", "prometheus"} <= set(services)


def test_kafka_is_a_single_kraft_node_with_an_internal_and_a_host_listener(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.3.0"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(advertised.values()) == {("kafka", 19092), ("localhost", 9092)}
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, f"{name} is advertised on a port it does not listen on"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound and controller not in advertised
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == ("kafka", 19092)
    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{bound[controller][1]}"
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1"
    for name, value in env.items():
        if name.endswith("REPLICATION_FACTOR") or name.endswith("MIN_ISR"):
            assert value == "1", name
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in env
    assert "127.0.0.1:9092:9092" in kafka["ports"]
    assert any(v.endswith(":" + env["KAFKA_LOG_DIRS"]) for v in kafka["volumes"])


def test_healthchecks(services: dict[str, Any]) -> None:
    kafka_check = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka_check
    assert "--bootstrap-server" in kafka_check
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["redis"]["image"] == "redis:7-alpine"
    command = services["redis"]["command"]
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"


def test_start_order_waits_for_healthy_dependencies(services: dict[str, Any]) -> None:
    worker = services["worker"]["depends_on"]
    assert worker["kafka"]["condition"] == "service_healthy"
    assert worker["redis"]["condition"] == "service_healthy"
    assert services["simulator"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_published_ports_bind_to_loopback_only(services: dict[str, Any]) -> None:
    published = {
        name: [str(p) for p in service.get("ports", [])] for name, service in services.items()
    }
    assert published["redis"] == ["127.0.0.1:6379:6379"]
    assert published["prometheus"] == ["127.0.0.1:9090:9090"]
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


@pytest.mark.parametrize("name", ["worker", "simulator"])
def test_rtscore_services_set_only_real_settings_with_valid_values(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(services[name])
    rtscore_env = {k: v for k, v in env.items() if k.startswith("RTSCORE_")}
    assert set(rtscore_env) <= SETTING_ENV_NAMES, set(rtscore_env) - SETTING_ENV_NAMES
    assert rtscore_env["RTSCORE_KAFKA_BOOTSTRAP"] == "kafka:19092"
    monkeypatch.delenv("RTSCORE_PIPELINE", raising=False)
    for key in SETTING_ENV_NAMES:
        monkeypatch.delenv(key, raising=False)
    for key, value in rtscore_env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the values parse, as the container will parse them
    if "RTSCORE_REDIS_URL" in rtscore_env:
        host, port = settings.redis_host_port
        assert host in services and port == 6379


def test_worker_runs_the_worker_with_a_registry_volume(services: dict[str, Any]) -> None:
    worker = services["worker"]
    env = env_of(worker)
    assert worker["command"] == ["worker"]
    assert env["RTSCORE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["RTSCORE_METRICS_PORT"] == "9108"
    assert env.get("RTSCORE_METRICS_ADDR", "0.0.0.0") == "0.0.0.0"  # else not scrapable
    assert env["RTSCORE_HOME"] == "/data"
    assert any(str(v).endswith(":/data") for v in worker["volumes"])


def test_rtscore_commands_parse(services: dict[str, Any]) -> None:
    from streams import cli

    parser = getattr(cli, "_parser", None)
    if parser is None:
        pytest.skip("streams.cli has no _parser() to check the commands against")
    assert services["simulator"]["command"][:2] == ["simulate", "--live"]
    for name in ("worker", "simulator"):
        parser().parse_args(services[name]["command"])  # SystemExit on an unknown flag


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_the_image_is_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in ("worker", "simulator"):
        build = services[name]["build"]
        dockerfile = REPO / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["rtscore"\]', text, re.MULTILINE)
    assert "pip install" in text
    env_names = set(re.findall(r"\b(RTSCORE_[A-Z_]+)=", text))
    assert env_names <= SETTING_ENV_NAMES, env_names - SETTING_ENV_NAMES
    # schemas/ is not package data: the image must point the setting at its copy.
    workdir = re.search(r"^WORKDIR (\S+)", text, re.MULTILINE)
    assert workdir and "COPY schemas/ schemas/" in text
    assert f"RTSCORE_SCHEMAS_DIR={workdir.group(1)}/schemas" in text
    for source in re.findall(r"^COPY (\S+)/ ", text, re.MULTILINE):
        assert (REPO / source).is_dir(), source


def test_prometheus_scrapes_the_workers_metrics_port(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert str(prometheus["image"]).startswith("prom/prometheus:")
    mounts = [str(v).split(":") for v in prometheus["volumes"]]
    source = next(s for s, target, *_ in mounts if target == "/etc/prometheus/prometheus.yml")
    config_path = REPO / source
    assert config_path == REPO / "infra" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    port = int(env_of(services["worker"])["RTSCORE_METRICS_PORT"])
    scraped = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            scraped.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            scraped.update(f"{name}:{dns['port']}" for name in dns["names"])
    # scoring, join (+1) and drift (+2): `rtscore worker` runs the three processors
    assert {f"worker:{port + i}" for i in range(3)} <= scraped
    # every rule file Prometheus loads is mounted beside its config
    mounted = {target: REPO / s for s, target, *_ in mounts}
    for rule_file in config.get("rule_files", []):
        target = f"/etc/prometheus/{rule_file}"
        assert target in mounted, f"{rule_file} is not mounted into the prometheus container"
        assert mounted[target] == config_path.parent / rule_file


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not on PATH; the structural checks above still ran")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
