"""The local Redis server (online features), started from ``redis-server`` on PATH.

State lives under ``<home>/redis/``: ``redis.conf`` (includes infra/redis/redis.conf, then sets
bind, port, dir and logfile), ``data/`` (append-only file), ``redis.log``, ``redis.pid``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.errors import InfraError
from streams.localinfra.process import port_open, tail
from streams.localinfra.service import Log, Probe, bind_host, unreachable
from streams.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

BASE_CONFIG = REPO_ROOT / "infra" / "redis" / "redis.conf"
PROBE_TIMEOUT_S = 1.0
APT_TIMEOUT_S = 600
INSTALL_HINT = (
    "install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: "
    "`brew install redis`), or set RTSCORE_REDIS_URL to a running Redis"
)


class RedisServer:
    """The Redis rtscore starts on ``settings.redis_host_port`` when nothing answers there."""

    name = "redis"
    product = "Redis server"
    env_var = "RTSCORE_REDIS_URL"
    ready_timeout_s = 10.0
    markers = ("redis-server",)  # Redis rewrites its process title, but keeps this

    def __init__(self, settings: Settings) -> None:
        self.host, self.port = settings.redis_host_port
        self.url = settings.redis_url.get_secret_value()
        self.state_dir = settings.home.resolve() / "redis"
        self.pid_file = self.state_dir / "redis.pid"
        self.log_path = self.state_dir / "redis.log"
        self.config_path = self.state_dir / "redis.conf"
        self.data_dir = self.state_dir / "data"

    def probe(self, port: int) -> Probe:
        if not port_open(self.host, port):
            return unreachable(self.host, port)
        url = urlparse(self.url)
        client = redis.Redis(
            host=self.host,
            port=port,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            ssl=url.scheme == "rediss",
            socket_timeout=PROBE_TIMEOUT_S,
            socket_connect_timeout=PROBE_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # one question, one answer: a probe must not retry
        )
        try:
            client.ping()
            version = client.info("server").get("redis_version")
        except redis.AuthenticationError as exc:
            return Probe(True, False, f"Redis refuses the credentials of RTSCORE_REDIS_URL: {exc}")
        except redis.RedisError as exc:
            reason = str(exc) or type(exc).__name__
            detail = f"no Redis PING answer within {PROBE_TIMEOUT_S:.0f} s: {reason}"
            return Probe(True, False, detail)
        finally:
            client.close()
        return Probe(True, True, "PING OK", str(version) if version else None)

    def served_port(self) -> int | None:
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return None
        ports = re.findall(r"^port (\d+)$", text, flags=re.MULTILINE)
        return int(ports[-1]) if ports else None

    def running_version(self, pid: int) -> str | None:
        return None  # INFO tells

    def other_ports(self) -> list[tuple[int, str]]:
        return []

    def check_prerequisites(self) -> None:
        if shutil.which("redis-server") is None and not _can_apt_install():
            raise InfraError("`redis-server` is not on PATH", hint=INSTALL_HINT)

    def prepare(self, log: Log) -> list[str]:
        server = shutil.which("redis-server") or self._install(log)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                base=BASE_CONFIG,
                host=self.host,
                port=self.port,
                data_dir=self.data_dir,
                log_path=self.log_path,
            )
        )
        return [server, str(self.config_path)]

    def _install(self, log: Log) -> str:
        apt_log = self.state_dir / "apt-get.log"
        log(f"redis: `redis-server` is not on PATH; installing it with apt-get (output: {apt_log})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with apt_log.open("wb") as out:
            for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
                try:
                    code = subprocess.run(
                        argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                        timeout=APT_TIMEOUT_S, check=False,
                    ).returncode  # fmt: skip
                except subprocess.TimeoutExpired:
                    code = None
                if code != 0:
                    raise InfraError(
                        f"`{' '.join(argv)}` failed ({'timed out' if code is None else code})",
                        hint=f"{INSTALL_HINT}. The end of {apt_log}:\n{tail(apt_log)}",
                    )
        server = shutil.which("redis-server")
        if server is None:
            raise InfraError(
                "apt-get installed redis-server, but it is not on PATH", hint=INSTALL_HINT
            )
        return server


def render_config(*, base: Path, host: str, port: int, data_dir: Path, log_path: Path) -> str:
    """The redis.conf of one local server: the project's base config, then its own settings."""
    return (
        f"# Written by `rtscore infra up`; edit {base} instead.\n"
        f'include "{base}"\n'
        f"bind {bind_host(host)}\n"
        f"port {port}\n"
        f'dir "{data_dir}"\n'
        f'logfile "{log_path}"\n'
    )


def _can_apt_install() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0
