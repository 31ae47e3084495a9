"""The launcher on this machine: its own broker and Redis on free ports under a tmp home.

It never touches the session infra of conftest.py nor a developer's running services: every
port here is picked free, and down() must leave alone what up() did not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams.errors import InfraError
from streams.localinfra import down, status, up
from streams.localinfra.process import is_alive, port_bindable, port_open, wait_for
from streams.settings import REPO_ROOT, Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def free_port(pairs: bool = False) -> int:
    """A free loopback port (and, with ``pairs``, the next one free too: Kafka's controller)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and (not pairs or port_bindable("127.0.0.1", port + 1)):
            return port


def make_settings(home: Path, kafka_port: int, redis_port: int) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",  # type: ignore[arg-type]
        home=home,
    )


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers: neither Kafka nor Redis."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def external_redis(tmp_path: Path) -> Iterator[int]:
    """A Redis this test starts itself, i.e. one the launcher did not start."""
    port = free_port()
    server = shutil.which("redis-server")
    assert server, "redis-server is needed for the integration tier"
    argv = [
        server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), timeout_s=10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_up_status_reuse_and_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kafka_port, redis_port = free_port(pairs=True), free_port()
    settings = make_settings(home, kafka_port, redis_port)

    # `rtscore infra up` returns and the services keep running without it.
    code = (
        "import sys; from streams.localinfra import up; from streams.settings import Settings; "
        f"up(Settings(kafka_bootstrap='127.0.0.1:{kafka_port}', "
        f"redis_url='redis://127.0.0.1:{redis_port}/0', home=sys.argv[1]))"
    )
    launched = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert f"kafka: ready on 127.0.0.1:{kafka_port} in" in launched.stdout
    assert f"redis: ready on 127.0.0.1:{redis_port} in" in launched.stdout
    print(launched.stdout)  # the start-up times, with -s

    kafka, rds = status(settings)
    assert (kafka.name, kafka.state, kafka.version) == ("kafka", "running", "4.3.0")
    assert (rds.name, rds.state) == ("redis", "running")
    assert kafka.pid and rds.pid and is_alive(kafka.pid) and is_alive(rds.pid)
    assert kafka.log_path == (home / "kafka" / "server.log").resolve()
    assert "Kafka Server started" in kafka.log_path.read_text()
    assert (home / "kafka" / "data" / "meta.properties").exists()

    lines: list[str] = []
    again = up(settings, log=lines.append)
    assert [(s.state, s.pid) for s in again] == [("running", kafka.pid), ("running", rds.pid)]
    assert all("already running" in line for line in lines), lines

    stopped = down(settings, log=lines.append)
    assert [s.state for s in stopped] == ["stopped", "stopped"]
    assert not is_alive(kafka.pid) and not is_alive(rds.pid)
    assert (
        not (home / "kafka" / "kafka.pid").exists() and not (home / "redis" / "redis.pid").exists()
    )
    assert [s.state for s in status(settings)] == ["stopped", "stopped"]


def test_down_leaves_alone_what_it_did_not_start(tmp_path: Path, external_redis: int) -> None:
    settings = make_settings(tmp_path / "home", free_port(pairs=True), external_redis)
    assert [s.state for s in status(settings)] == ["stopped", "external"]
    kafka, rds = down(settings, log=lambda line: None)
    assert kafka.state == "stopped"
    assert (rds.state, rds.detail) == ("external", "not started by rtscore: left running")
    client = redis.Redis(host="127.0.0.1", port=external_redis)
    try:
        assert client.ping()
    finally:
        client.close()


def test_a_port_taken_by_something_else_is_named(tmp_path: Path, silent_listener: int) -> None:
    home = tmp_path / "home"
    settings = make_settings(home, silent_listener, free_port())
    with pytest.raises(InfraError, match=f"port {silent_listener} on 127.0.0.1 is taken") as err:
        up(settings, log=lambda line: None)
    assert "not a healthy Kafka broker" in err.value.message
    assert "RTSCORE_KAFKA_BOOTSTRAP" in str(err.value.hint)
    assert not (home / "redis" / "redis.pid").exists()  # nothing is started after a conflict

    settings = make_settings(home, free_port(pairs=True), silent_listener)
    with pytest.raises(InfraError, match=f"port {silent_listener} on 127.0.0.1 is taken") as err:
        up(settings, log=lambda line: None)
    assert "not a healthy Redis server" in err.value.message
    assert not (home / "kafka" / "kafka.pid").exists()
