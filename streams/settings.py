"""One settings object, read from the environment when the CLI starts, then passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_PIPELINE = Path(__file__).resolve().parent / "demo" / "fraud.toml"


class Settings(BaseSettings):
    """Every setting once, with its environment name (``RTSCORE_`` + the field name)."""

    model_config = SettingsConfigDict(env_prefix="RTSCORE_", extra="forbid", frozen=True)

    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers")
    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"), description="Redis URL (may hold a password)"
    )
    topic_prefix: str = Field("rtscore", description="prefix of every topic name")
    topic_partitions: int = Field(6, ge=1, description="partitions of topics rtscore creates")
    topic_retention_ms: int = Field(
        -1, description="retention.ms of topics rtscore creates; -1 keeps history for replay"
    )
    home: Path = Field(Path(".rtscore"), description="local state: infra data, logs, registry")
    registry_dir: Path | None = Field(
        None, description="model registry root (default home/registry)"
    )
    schemas_dir: Path = Field(REPO_ROOT / "schemas", description="folder of the .avsc schemas")
    pipeline: Path = Field(DEMO_PIPELINE, description="the pipeline file (TOML)")
    feature_namespace: str | None = Field(
        None, description="Redis key prefix of the online features (default: topic_prefix)"
    )
    batch_max: int = Field(1000, ge=1, description="largest micro-batch the worker scores")
    batch_within_s: float = Field(
        0.01,
        gt=0,
        description="longest wait to fill a micro-batch (latency: a backlog's batches fill "
        "anyway, a live stream's would wait this long)",
    )
    fetch_bytes_per_partition: int = Field(
        32768,
        ge=1024,
        description="bytes fetched per partition at a time (bounds what the worker holds "
        "back to keep partitions in step)",
    )
    session_timeout_s: float = Field(
        30.0,
        ge=6,
        description="consumer group session timeout: how soon a dead worker's "
        "partitions move to the others",
    )
    max_event_bytes: int = Field(65536, ge=64, description="larger input records are dead-lettered")
    metrics_port: int = Field(9108, ge=0, description="Prometheus /metrics port (0 disables)")
    metrics_addr: str = Field(
        "127.0.0.1", description="address /metrics binds (0.0.0.0 in containers)"
    )

    def as_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process (e.g. a worker)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"RTSCORE_{name.upper()}"] = str(value)
        return env

    @property
    def namespace(self) -> str:
        return self.feature_namespace or self.topic_prefix

    @property
    def registry_root(self) -> Path:
        return self.registry_dir if self.registry_dir is not None else self.home / "registry"

    @property
    def topics(self) -> Topics:
        return Topics.for_prefix(self.topic_prefix)

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return (host or "localhost", int(port or 9092))

    @property
    def redis_host_port(self) -> tuple[str, int]:
        url = urlparse(self.redis_url.get_secret_value())
        return (url.hostname or "localhost", url.port or 6379)


@dataclass(frozen=True)
class Topics:
    """The topic names of DESIGN.md for one prefix."""

    events: str
    outcomes: str
    predictions: str
    labeled: str
    drift: str
    performance: str
    dlq: str
    model_events: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Topics:
        return cls(
            events=f"{prefix}.events",
            outcomes=f"{prefix}.outcomes",
            predictions=f"{prefix}.predictions",
            labeled=f"{prefix}.labeled",
            drift=f"{prefix}.drift",
            performance=f"{prefix}.performance",
            dlq=f"{prefix}.dlq",
            model_events=f"{prefix}.model-events",
        )


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS
