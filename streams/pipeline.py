"""The pipeline file: what a user declares about their events, features and model.

A pipeline is a TOML file (see ``streams/demo/fraud.toml``); nothing in ``streams/`` names the
demo's fields, so a second pipeline needs only its own file and schema.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from streams.errors import ConfigError
from streams.features.spec import (
    Entity,
    FeatureSpec,
    StateConfig,
    check_features,
    parse_entities,
    parse_feature,
    parse_state,
)


@dataclass(frozen=True)
class RecordSpec:
    """An input record type: its Avro schema and the roles of its fields."""

    schema: dict[str, Any]  # parsed by fastavro
    id_field: str
    time_field: str
    key_field: str | None = None
    label_field: str | None = None
    event_time_field: str | None = None  # outcomes: the labelled event's time

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
    entities: dict[str, Entity] = field(default_factory=dict)
    state: StateConfig = field(default_factory=StateConfig)
    # The whole parsed file: the join, drift and model parts read their own tables from it
    # (``[join]``, ``[drift]``, ``[model]``) so each part owns its configuration.
    sections: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def lookback_ms(self) -> int:
        """How much history before an event its stateful features can read."""
        return max((f.window_ms + f.delay_ms for f in self.features if f.stateful), default=0)

    @property
    def stateful(self) -> bool:
        return any(f.stateful for f in self.features)

    @property
    def feature_spec_hash(self) -> str:
        """sha256 of the feature definitions; a model trained on another spec is refused."""
        payload = [
            [f.identity() for f in self.features],
            sorted((e.name, e.key_field) for e in self.entities.values()),
            [self.state.allowed_lateness_ms, self.state.late_policy],
        ]
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
        features = tuple(parse_feature(f, str(path)) for f in raw["features"])
        entities = parse_entities(raw.get("entities", {}), str(path))
        state = parse_state(raw.get("state", {}), str(path))
        name = str(raw["name"])
        model_name = str(raw.get("model", {}).get("name", name))
    except KeyError as exc:
        raise ConfigError(f"pipeline file {path} lacks the required key {exc}") from exc
    if not features:
        raise ConfigError(f"pipeline file {path} declares no [[features]]")
    check_features(
        features,
        entities,
        state,
        events.fields,
        outcomes.fields if outcomes else None,
        events.key_field or events.id_field,
        str(path),
    )
    return Pipeline(name, events, outcomes, features, model_name, path, entities, state, raw)


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
        event_time_field=raw.get("event_time_field"),
    )
    for role in ("id_field", "time_field", "key_field", "label_field", "event_time_field"):
        name = getattr(spec, role)
        if name is not None and name not in spec.fields:
            raise ConfigError(f"{path}: {role} {name!r} is not a field of {schema_path.name}")
    return spec
