"""One local service (Kafka, Redis) as the launcher sees it: its status, the parts that differ."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streams.settings import is_loopback

Log = Callable[[str], None]


@dataclass(frozen=True)
class ServiceStatus:
    """One service as the launcher sees it.

    ``state`` is "running" (started by rtscore and answering), "external" (answering, but not
    started by rtscore or not on this machine), "stopped" or "unhealthy" (something holds the
    port or our process but does not answer as it should; ``detail`` says what).
    ``startup_s`` is set when this call started the service: seconds from spawn to ready.
    """

    name: str
    address: str
    state: str
    pid: int | None
    version: str | None
    log_path: Path | None
    detail: str
    startup_s: float | None = None

    def __str__(self) -> str:
        parts = [f"{self.name:<5}", f"{self.address:<21}", f"{self.state:<9}"]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.version:
            parts.append(self.version)
        if self.detail:
            parts.append(self.detail)
        if self.log_path is not None:
            parts.append(f"log {self.log_path}")
        return "  ".join(parts)


@dataclass(frozen=True)
class Probe:
    """The answer on a port: ``listening`` (TCP accepts), ``healthy`` (speaks the protocol)."""

    listening: bool
    healthy: bool
    detail: str
    version: str | None = None


class LocalService(Protocol):
    """The part of a service that differs between Kafka and Redis; launcher.py does the rest."""

    name: str  # "kafka" | "redis"
    product: str  # for messages: "Kafka broker"
    env_var: str  # the setting that moves it: "RTSCORE_KAFKA_BOOTSTRAP"
    host: str
    port: int
    state_dir: Path
    pid_file: Path
    log_path: Path
    ready_timeout_s: float

    @property
    def markers(self) -> tuple[str, ...]:
        """Strings in the command line of a process we started (guards against pid reuse)."""
        ...

    def probe(self, port: int) -> Probe:
        """Ask ``host:port`` whether it is a healthy instance of this service."""
        ...

    def served_port(self) -> int | None:
        """The port of the instance rtscore started last (from its rendered config)."""
        ...

    def running_version(self, pid: int) -> str | None:
        """The version of our running process, when the protocol does not tell."""
        ...

    def other_ports(self) -> list[tuple[int, str]]:
        """Ports besides ``port`` that must be free to start, with what they are for."""
        ...

    def check_prerequisites(self) -> None:
        """Raise InfraError when it cannot be started here (missing runtime, no way to fetch)."""
        ...

    def prepare(self, log: Log) -> list[str]:
        """Do the one-time work (fetch, install, format), write the config; return the argv."""
        ...


def address(host: str, port: int) -> str:
    """``host:port`` as clients write it (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_host(host: str) -> str:
    """The address a local server binds for ``host``: one loopback address, not all of them."""
    return "127.0.0.1" if host == "localhost" else host


def unreachable(host: str, port: int) -> Probe:
    """The probe of a port that refuses TCP connections (or a host that cannot be reached)."""
    where = address(host, port)
    detail = f"nothing listens on {where}" if is_loopback(host) else f"cannot connect to {where}"
    return Probe(False, False, detail)
