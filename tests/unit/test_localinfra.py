"""The launcher's logic without a broker: configs it writes, pid files, and what its errors say."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.errors import InfraError
from streams.localinfra import ServiceStatus, kafka_dist, launcher, process
from streams.localinfra import redis as local_redis
from streams.localinfra.kafka import (
    KafkaBroker,
    new_cluster_id,
    parse_properties,
    render_server_properties,
)
from streams.localinfra.service import Log, Probe
from streams.settings import REPO_ROOT, Settings

TEMPLATE = (REPO_ROOT / "infra" / "kafka" / "server.properties.template").read_text()


def settings(
    tmp_path: Path, kafka: str = "127.0.0.1:39092", redis: str = "redis://127.0.0.1:36379/0"
):
    return Settings(kafka_bootstrap=kafka, redis_url=redis, home=tmp_path / "home")  # type: ignore[arg-type]


# --- configs -------------------------------------------------------------------------------


def test_server_properties_listen_on_loopback_with_the_controller_on_port_plus_one(tmp_path):
    text = render_server_properties(
        TEMPLATE, host="localhost", port=39092, controller_port=39093, data_dir=tmp_path / "data"
    )
    props = parse_properties(text)
    assert "$" not in text
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:39092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:39093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["process.roles"] == "broker,controller"


def test_server_properties_keep_history_and_let_faust_create_its_topics(tmp_path):
    props = parse_properties(
        render_server_properties(
            TEMPLATE, host="127.0.0.1", port=1, controller_port=2, data_dir=tmp_path
        )
    )
    assert props["log.retention.ms"] == "-1"  # demo events are from 2018
    assert props.get("auto.create.topics.enable", "true") == "true"
    assert props["num.partitions"] == "6"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "1"


def test_server_properties_bracket_an_ipv6_loopback(tmp_path):
    props = parse_properties(
        render_server_properties(
            TEMPLATE, host="::1", port=39092, controller_port=39093, data_dir=tmp_path
        )
    )
    assert props["advertised.listeners"] == "PLAINTEXT://[::1]:39092"


def test_kafka_ports_and_state_paths_come_from_settings(tmp_path):
    broker = KafkaBroker(settings(tmp_path, kafka="localhost:39092,other:9092"))
    assert (broker.host, broker.port, broker.controller_port) == ("localhost", 39092, 39093)
    assert broker.state_dir == (tmp_path / "home" / "kafka").resolve()
    assert broker.libs.name == "libs-4.3.0"
    assert broker.served_port() is None
    broker.state_dir.mkdir(parents=True)
    broker.config_path.write_text(
        render_server_properties(
            TEMPLATE, host="localhost", port=39555, controller_port=39556, data_dir=tmp_path
        )
    )
    assert broker.served_port() == 39555


def test_kafka_version_of_our_process_is_read_from_its_jar_cache_path(tmp_path, monkeypatch):
    broker = KafkaBroker(settings(tmp_path))
    cmdline = f"java -Xmx512m -cp {tmp_path}/kafka/libs-4.3.0/* kafka.Kafka x.properties"
    monkeypatch.setattr("streams.localinfra.kafka.command_line", lambda pid: cmdline)
    assert broker.running_version(123) == "4.3.0"


def test_pom_pins_kafka_and_a_log4j2_backend():
    assert kafka_dist.pinned_version() == "4.3.0"
    pom = kafka_dist.POM.read_text()
    for artifact in ("log4j-api", "log4j-core", "log4j-slf4j-impl"):
        assert f"<artifactId>{artifact}</artifactId>\n      <version>2.25.3</version>" in pom


def test_broker_command_uses_a_small_g1_heap_and_our_log4j2_config(tmp_path):
    argv = kafka_dist.java_command(
        "java", tmp_path / "libs", tmp_path / "server.log", "kafka.Kafka", "s.p"
    )
    assert argv[0] == "java" and argv[-2:] == ["kafka.Kafka", "s.p"]
    assert {"-Xmx512m", "-XX:+UseG1GC"} <= set(argv)
    assert f"-Drtscore.kafka.log={tmp_path / 'server.log'}" in argv
    assert f"{tmp_path / 'libs'}/*" in argv
    assert "${sys:rtscore.kafka.log}" in kafka_dist.LOG4J2_CONFIG.read_text()


def test_cluster_ids_look_like_kafkas():
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_391"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_major_version(output, major):
    assert kafka_dist.java_major(output) == major


def test_redis_config_includes_the_base_and_sets_where_it_listens_and_writes(tmp_path):
    server = local_redis.RedisServer(settings(tmp_path, redis="redis://localhost:36380/0"))
    text = local_redis.render_config(
        base=local_redis.BASE_CONFIG,
        host=server.host,
        port=server.port,
        data_dir=tmp_path / "d",
        log_path=tmp_path / "r.log",
    )
    assert f'include "{local_redis.BASE_CONFIG}"' in text
    assert "bind 127.0.0.1\nport 36380\n" in text
    assert f'dir "{tmp_path / "d"}"' in text
    server.state_dir.mkdir(parents=True)
    server.config_path.write_text(text)
    assert server.served_port() == 36380


def test_redis_base_config_is_loopback_only_and_append_only():
    lines = set(local_redis.BASE_CONFIG.read_text().splitlines())
    expected = {"bind 127.0.0.1", "protected-mode yes", "appendonly yes", "appendfsync everysec"}
    assert expected <= lines
    assert 'save ""' in lines and "daemonize no" in lines


# --- pid files and processes (only harmless ones) ------------------------------------------


def test_pid_file_round_trip_and_garbage(tmp_path):
    pid_file = tmp_path / "x.pid"
    assert process.read_pid(pid_file) is None
    process.write_pid(pid_file, 4242)
    assert pid_file.read_text() == "4242\n"
    assert process.read_pid(pid_file) == 4242
    pid_file.write_text("not a pid\n")
    assert process.read_pid(pid_file) is None
    process.remove_pid(pid_file)
    process.remove_pid(pid_file)  # twice is fine
    assert not pid_file.exists()


def test_owned_pid_requires_a_live_process_with_our_command_line(tmp_path):
    pid_file = tmp_path / "x.pid"
    pid = process.spawn_detached(["sleep", "30"], log_path=tmp_path / "out.log")
    try:
        process.write_pid(pid_file, pid)
        assert process.owned_pid(pid_file, "sleep", "30") == pid
        # Someone else's process under our pid (pid reuse): not ours, and the file goes.
        assert process.owned_pid(pid_file, "kafka.Kafka", remove_stale=False) is None
        assert pid_file.exists()
        assert process.owned_pid(pid_file, "kafka.Kafka") is None
        assert not pid_file.exists()
    finally:
        process.terminate(pid, grace_s=5)
    process.write_pid(pid_file, pid)
    assert process.owned_pid(pid_file, "sleep") is None  # dead
    assert not pid_file.exists()


def test_spawned_processes_are_detached_and_write_to_their_log(tmp_path):
    log_path = tmp_path / "out.log"
    pid = process.spawn_detached(["sh", "-c", "echo hello; echo oops >&2"], log_path=log_path)
    assert process.wait_for(lambda: not process.is_alive(pid), timeout_s=5)
    assert log_path.read_text().splitlines() == ["hello", "oops"]
    pid = process.spawn_detached(["sleep", "30"], log_path=log_path)
    try:
        assert os.getsid(pid) == pid != os.getsid(0)  # its own session: survives our exit
    finally:
        process.terminate(pid, grace_s=5)


def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    argv = ["sh", "-c", "trap '' TERM; echo ready; exec sleep 30"]
    pid = process.spawn_detached(argv, log_path=tmp_path / "out.log")
    assert process.wait_for(lambda: "ready" in (tmp_path / "out.log").read_text(), timeout_s=5)
    took = process.terminate(pid, grace_s=0.5)
    assert 0.5 <= took < 5 and not process.is_alive(pid)


def test_tail_and_rotate(tmp_path):
    log_path = tmp_path / "server.log"
    assert process.tail(log_path) == ""
    log_path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log_path, 3) == "line 97\nline 98\nline 99"
    process.rotate(log_path)
    assert not log_path.exists() and (tmp_path / "server.log.1").exists()


def test_service_status_is_one_line():
    status = ServiceStatus(
        "kafka",
        "127.0.0.1:9092",
        "running",
        1234,
        "4.3.0",
        Path("/h/server.log"),
        "started in 3.9 s",
    )
    assert str(status).split() == (
        [
            "kafka",
            "127.0.0.1:9092",
            "running",
            "pid",
            "1234",
            "4.3.0",
            "started",
            "in",
            "3.9",
            "s",
            "log",
            "/h/server.log",
        ]
    )
    assert "pid" not in str(ServiceStatus("redis", "h:1", "stopped", None, None, None, "nothing"))


# --- what the errors say -------------------------------------------------------------------


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_missing_java_says_to_install_openjdk_17(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InfraError, match="java") as err:
        kafka_dist.find_java()
    assert "OpenJDK 17" in str(err.value.hint)


def test_old_java_is_refused(tmp_path, monkeypatch):
    _fake_tool(tmp_path / "bin", "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(InfraError, match="Java 11; Kafka 4 needs Java 17"):
        kafka_dist.find_java()


def test_missing_maven_says_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InfraError, match="mvn") as err:
        kafka_dist.find_maven()
    assert "maven" in str(err.value.hint)


def test_maven_failure_shows_the_end_of_its_output(tmp_path, monkeypatch):
    _fake_tool(
        tmp_path / "bin",
        "mvn",
        "echo '[ERROR] Could not transfer artifact org.apache.kafka:kafka_2.13:pom:4.3.0 from/to "
        "central: Connection refused'; exit 1",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    libs = tmp_path / "libs-4.3.0"
    with pytest.raises(InfraError, match="exit status 1") as err:
        kafka_dist.fetch_jars(libs, maven_log=tmp_path / "maven.log")
    assert "Maven Central" in str(err.value.hint)
    assert "Connection refused" in str(err.value.hint)
    assert not kafka_dist.jars_ready(libs)


def test_missing_redis_server_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InfraError, match="redis-server") as err:
        local_redis.RedisServer(settings(tmp_path)).check_prerequisites()
    assert "apt-get install -y redis-server" in str(err.value.hint)


@dataclass
class FakeService:
    """A LocalService whose probe answers what the test says; no sockets."""

    state_dir: Path
    healthy: bool = False
    listening: bool = True
    argv: list[str] = field(
        default_factory=lambda: ["sh", "-c", "echo 'FATAL: cannot start'; exit 1"]
    )
    name: str = "kafka"
    product: str = "Kafka broker"
    env_var: str = "RTSCORE_KAFKA_BOOTSTRAP"
    host: str = "127.0.0.1"
    port: int = 39092
    ready_timeout_s: float = 5.0
    markers: tuple[str, ...] = ("sh",)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "fake.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "fake.log"

    def probe(self, port: int) -> Probe:
        return Probe(self.listening, self.healthy, "OK" if self.healthy else "speaks HTTP")

    def served_port(self) -> int | None:
        return None

    def running_version(self, pid: int) -> str | None:
        return None

    def other_ports(self) -> list[tuple[int, str]]:
        return []

    def check_prerequisites(self) -> None:
        pass

    def prepare(self, log: Log) -> list[str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.argv


def test_a_port_held_by_something_else_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "port_open", lambda host, port, **kw: True)
    svc = FakeService(tmp_path)
    with pytest.raises(
        InfraError, match=re.escape("port 39092 on 127.0.0.1 is taken by something that is not")
    ) as err:
        launcher._plan(svc)
    assert "RTSCORE_KAFKA_BOOTSTRAP" in str(err.value.hint)


def test_a_healthy_service_not_started_by_us_is_external(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "port_open", lambda host, port, **kw: True)
    plan = launcher._plan(FakeService(tmp_path, healthy=True))
    assert plan.action == "keep" and plan.status is not None
    assert plan.status.state == "external" and plan.status.pid is None


def test_nothing_is_started_for_a_remote_host(tmp_path):
    svc = FakeService(tmp_path, host="kafka.example.com", listening=False)
    with pytest.raises(InfraError, match="rtscore starts one only on this machine"):
        launcher._plan(svc)


def test_a_service_that_exits_during_start_up_shows_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "port_open", lambda host, port, **kw: False)
    svc = FakeService(tmp_path)
    with pytest.raises(InfraError, match="exited during start-up") as err:
        launcher._carry_out(svc, launcher._Plan("start"), log=lambda line: None)
    assert str(svc.log_path) in str(err.value.hint)
    assert "FATAL: cannot start" in str(err.value.hint)
    assert not svc.pid_file.exists()


def test_a_service_that_never_answers_is_stopped_after_its_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "port_open", lambda host, port, **kw: True)
    svc = FakeService(tmp_path, argv=["sleep", "30"], ready_timeout_s=0.5, markers=("sleep",))
    with pytest.raises(
        InfraError, match=re.escape("did not answer on 127.0.0.1:39092 within 0.5 s; stopped it")
    ):
        launcher._carry_out(svc, launcher._Plan("start"), log=lambda line: None)
    assert not svc.pid_file.exists()


def test_start_up_time_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "port_open", lambda host, port, **kw: True)
    svc = FakeService(tmp_path, healthy=True, argv=["sleep", "30"], markers=("sleep",))
    lines: list[str] = []
    status = launcher._carry_out(svc, launcher._Plan("start"), log=lines.append)
    try:
        assert status.state == "running" and status.pid == process.read_pid(svc.pid_file)
        assert (
            status.startup_s is not None and status.detail == f"started in {status.startup_s:.1f} s"
        )
        assert any("ready on 127.0.0.1:39092 in" in line for line in lines)
    finally:
        assert status.pid is not None
        process.terminate(status.pid, grace_s=5)
