"""The local single-node Kafka broker (KRaft: broker and controller in one JVM).

State lives under ``<home>/kafka/``: ``libs-<version>/`` (jar cache), ``data/`` (formatted
once; the cluster id is kept in ``cluster.id``), ``server.properties``, ``server.log``,
``kafka.pid``. The controller listens on the Kafka port + 1.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import re
import subprocess
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from string import Template
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient

from streams.errors import InfraError
from streams.localinfra import kafka_dist
from streams.localinfra.process import command_line, port_open
from streams.localinfra.service import Log, Probe, address, bind_host, unreachable
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

PROBE_TIMEOUT_S = 2.0
FORMAT_TIMEOUT_S = 120.0
# The storage tool is a short-lived JVM: no need for the broker's fixed heap.
_TOOL_JVM_OPTS = ("-Xmx256m", "-Djava.awt.headless=true")


class KafkaBroker:
    """The broker rtscore starts on ``settings.kafka_host_port`` when nothing answers there."""

    name = "kafka"
    product = "Kafka broker"
    env_var = "RTSCORE_KAFKA_BOOTSTRAP"
    ready_timeout_s = 60.0  # a cold JVM on a 2-core machine takes a few seconds; budget more

    def __init__(self, settings: Settings) -> None:
        self.host, self.port = settings.kafka_host_port
        self.state_dir = settings.home.resolve() / "kafka"
        self.pid_file = self.state_dir / "kafka.pid"
        self.log_path = self.state_dir / "server.log"
        self.config_path = self.state_dir / "server.properties"
        self.data_dir = self.state_dir / "data"
        self.cluster_id_file = self.state_dir / "cluster.id"
        self.version = kafka_dist.pinned_version()
        self.libs = self.state_dir / f"libs-{self.version}"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def markers(self) -> tuple[str, ...]:
        return ("kafka.Kafka", str(self.config_path))

    def probe(self, port: int) -> Probe:
        if not port_open(self.host, port):
            return unreachable(self.host, port)
        try:
            brokers = run_sync(fetch_broker_count(address(self.host, port), PROBE_TIMEOUT_S))
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            detail = f"no Kafka metadata answer within {PROBE_TIMEOUT_S:.0f} s: {reason}"
            return Probe(True, False, detail)
        if brokers == 0:
            return Probe(True, False, "Kafka answers but lists no broker yet")
        return Probe(True, True, f"metadata OK, {brokers} broker(s)")

    def served_port(self) -> int | None:
        try:
            config = parse_properties(self.config_path.read_text())
        except FileNotFoundError:
            return None
        m = re.search(r":(\d+)$", config.get("advertised.listeners", ""))
        return int(m.group(1)) if m else None

    def running_version(self, pid: int) -> str | None:
        m = re.search(r"libs-([^/\s]+)/", command_line(pid))
        return m.group(1) if m else None

    def other_ports(self) -> list[tuple[int, str]]:
        return [(self.controller_port, "the broker's KRaft controller port, Kafka port + 1")]

    def check_prerequisites(self) -> None:
        kafka_dist.find_java()
        if not kafka_dist.jars_ready(self.libs):
            kafka_dist.find_maven()

    def prepare(self, log: Log) -> list[str]:
        java = kafka_dist.find_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not kafka_dist.jars_ready(self.libs):
            log(f"kafka: fetching the Kafka {self.version} jars with Maven (once) into {self.libs}")
            started = time.monotonic()
            count = kafka_dist.fetch_jars(self.libs, maven_log=self.state_dir / "maven.log")
            log(f"kafka: fetched {count} jars in {time.monotonic() - started:.1f} s")
        template = kafka_dist.SERVER_TEMPLATE.read_text()
        self.config_path.write_text(
            render_server_properties(
                template,
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.data_dir,
            )
        )
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, log)
        return kafka_dist.java_command(
            java, self.libs, self.log_path, "kafka.Kafka", str(self.config_path)
        )

    def _format(self, java: str, log: Log) -> None:
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        log(f"kafka: formatting {self.data_dir} (once), cluster id {cluster_id}")
        started = time.monotonic()
        argv = kafka_dist.java_command(
            java, self.libs, self.log_path, "kafka.tools.StorageTool",
            "format", "-t", cluster_id, "-c", str(self.config_path), "--ignore-formatted",
            jvm_opts=_TOOL_JVM_OPTS,
        )  # fmt: skip
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(
                f"formatting the Kafka data dir {self.data_dir} took over {FORMAT_TIMEOUT_S:.0f} s",
                hint=f"see {self.log_path}",
            ) from exc
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise InfraError(
                f"formatting the Kafka data dir {self.data_dir} failed (exit {result.returncode})",
                hint=f"its output ends with:\n{output}\n(remove {self.data_dir} to start afresh; "
                f"it holds the local topics)",
            )
        log(f"kafka: formatted in {time.monotonic() - started:.1f} s")


def render_server_properties(
    template: str, *, host: str, port: int, controller_port: int, data_dir: Path
) -> str:
    """infra/kafka/server.properties.template filled in for one local broker."""
    listen = bind_host(host)
    return Template(template).substitute(
        listen_host=f"[{listen}]" if ":" in listen else listen,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
    )


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines of a Java properties file (enough for the files we write)."""
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def new_cluster_id() -> str:
    """A KRaft cluster id as ``StorageTool random-uuid`` makes it, without starting a JVM.

    URL-safe base64 of a random UUID, unpadded; like Kafka's Uuid.randomUuid it never starts
    with '-', which command-line parsers would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def fetch_broker_count(bootstrap: str, timeout_s: float) -> int:
    """How many brokers a metadata request through ``bootstrap`` lists."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
        return len(metadata.brokers())
    finally:
        await client.close()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, also when called from code already inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
