"""The pipeline file: what a user declares about their events, features and model.

A pipeline is a TOML file (see ``streams/demo/fraud.toml``); nothing in ``streams/`` names the
demo's fields, so a second pipeline needs only its own file and schema.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from streams.errors import ConfigError

FEATURE_KINDS = ("field", "weekend", "hour_at_most")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str
    field: str
    hour: int = 0


@dataclass(frozen=True)
class RecordSpec:
    """An input record type: its Avro schema and the roles of its fields."""

    schema: dict[str, Any]  # parsed by fastavro
    id_field: str
    time_field: str
    key_field: str | None = None
    label_field: str | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """Field name -> Avro type, in schema order."""
        return {f["name"]: f["type"] for f in self.schema["fields"]}


@dataclass(frozen=True)
class Pipeline:
    name: str
    events: RecordSpec
    outcomes: RecordSpec | None
    features: tuple[FeatureSpec, ...]
    model_name: str
    source: Path

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def feature_spec_hash(self) -> str:
        """sha256 of the feature definitions; a model trained on another spec is refused."""
        payload = [(f.name, f.kind, f.field, f.hour) for f in self.features]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def load_pipeline(path: Path, schemas_dir: Path) -> Pipeline:
    """Read and check a pipeline file; every problem is a ConfigError naming the file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"pipeline file {path} does not exist",
            hint="set RTSCORE_PIPELINE to your pipeline file",
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pipeline file {path} is not valid TOML: {exc}") from exc
    try:
        events = _record_spec(raw["events"], schemas_dir, path, key_required=True)
        outcomes = (
            _record_spec(raw["outcomes"], schemas_dir, path, key_required=False)
            if "outcomes" in raw
            else None
        )
        features = tuple(_feature_spec(f, events, path) for f in raw["features"])
        name = str(raw["name"])
        model_name = str(raw.get("model", {}).get("name", name))
    except KeyError as exc:
        raise ConfigError(f"pipeline file {path} lacks the required key {exc}") from exc
    if not features:
        raise ConfigError(f"pipeline file {path} declares no [[features]]")
    return Pipeline(name, events, outcomes, features, model_name, path)


def _record_spec(
    raw: dict[str, Any], schemas_dir: Path, path: Path, *, key_required: bool
) -> RecordSpec:
    schema_path = schemas_dir / raw["schema"]
    try:
        parsed = fastavro.parse_schema(json.loads(schema_path.read_text()))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: schema {schema_path} does not exist",
            hint="schema paths are relative to RTSCORE_SCHEMAS_DIR",
        ) from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ConfigError(f"{path}: schema {schema_path} must be an Avro record")
    spec = RecordSpec(
        schema=parsed,
        id_field=raw["id_field"],
        time_field=raw["time_field"],
        key_field=raw.get("key_field") if not key_required else raw["key_field"],
        label_field=raw.get("label_field"),
    )
    for role in ("id_field", "time_field", "key_field", "label_field"):
        name = getattr(spec, role)
        if name is not None and name not in spec.fields:
            raise ConfigError(f"{path}: {role} {name!r} is not a field of {schema_path.name}")
    return spec


def _feature_spec(raw: dict[str, Any], events: RecordSpec, path: Path) -> FeatureSpec:
    spec = FeatureSpec(
        name=raw["name"], kind=raw["kind"], field=raw["field"], hour=int(raw.get("hour", 0))
    )
    if spec.kind not in FEATURE_KINDS:
        raise ConfigError(
            f"{path}: feature {spec.name!r} has kind {spec.kind!r}",
            hint=f"use one of {', '.join(FEATURE_KINDS)}",
        )
    if spec.field not in events.fields:
        raise ConfigError(f"{path}: feature {spec.name!r} reads unknown field {spec.field!r}")
    return spec
