"""Session-wide real Kafka and Redis for the integration and e2e tiers.

Where they come from, in order: RTSCORE_KAFKA_BOOTSTRAP / RTSCORE_REDIS_URL when set; else
the project's own launcher (on test ports, so a running demo is left alone); else
testcontainers when a Docker engine answers. Unit tests never touch these fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_KAFKA_PORT = int(os.environ.get("RTSCORE_TEST_KAFKA_PORT", "29092"))
TEST_REDIS_PORT = int(os.environ.get("RTSCORE_TEST_REDIS_PORT", "26379"))


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    redis_url: str


def _docker_engine_reachable() -> bool:
    sock_path = "/var/run/docker.sock"
    if not os.path.exists(sock_path):
        return False
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(sock_path)
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    env_kafka = os.environ.get("RTSCORE_KAFKA_BOOTSTRAP")
    env_redis = os.environ.get("RTSCORE_REDIS_URL")
    if env_kafka and env_redis:
        yield Infra(env_kafka, env_redis)
        return

    from streams import localinfra
    from streams.errors import InfraError
    from streams.settings import Settings

    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{TEST_KAFKA_PORT}",
        redis_url=f"redis://127.0.0.1:{TEST_REDIS_PORT}/0",  # type: ignore[arg-type]
        home=REPO / ".rtscore" / "test-infra",
    )
    try:
        statuses = localinfra.up(settings, log=lambda line: print(f"[infra] {line}"))
    except InfraError:
        if not _docker_engine_reachable():
            raise
        yield from _testcontainers()
        return
    started_here = [s for s in statuses if s.state == "running"]
    try:
        yield Infra(settings.kafka_bootstrap, settings.redis_url.get_secret_value())
    finally:
        if started_here and not os.environ.get("RTSCORE_TEST_KEEP_INFRA"):
            localinfra.down(settings, log=lambda line: print(f"[infra] {line}"))


def _testcontainers() -> Iterator[Infra]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer("apache/kafka:4.3.0").with_kraft() as kafka, RedisContainer() as redis:
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield Infra(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Infra) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(infra: Infra) -> str:
    return infra.redis_url


@pytest.fixture
def unique_prefix() -> str:
    """Topic prefix / key namespace of one test: tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def test_settings(infra: Infra, unique_prefix: str, tmp_path: Path):  # -> Settings
    from streams.settings import Settings

    return Settings(
        kafka_bootstrap=infra.kafka_bootstrap,
        redis_url=infra.redis_url,  # type: ignore[arg-type]
        topic_prefix=unique_prefix,
        topic_partitions=3,
        home=tmp_path / "home",
        metrics_port=0,
        # a killed worker's partitions move to its successor after this long
        session_timeout_s=6,
    )


@pytest.fixture(scope="session")
def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is not installed: `make test` installs it (apt-get install kcat)")
    return path
