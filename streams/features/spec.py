"""The feature section of a pipeline file, parsed and checked.

Kinds (all computed per event, in the order declared):

- stateless, from the event alone: ``field`` (a numeric field), ``weekend`` (1 on Sat/Sun of
  a time field, UTC), ``hour_at_most`` (1 when the UTC hour of a time field is <= ``hour``);
- windowed, per entity, over the event-time window ``(t - delay - window, t - delay]``:
  ``window`` with ``agg`` = count | sum | mean | min | max | std | distinct (of ``field``);
- label-based, over the same kind of window, counting an outcome only once its outcome time
  is <= t: ``label_count`` (positive outcomes) and ``label_rate`` (positives / events);
- per entity, the previous event (time <= t, another id): ``last_value`` of ``field`` and
  ``time_since_previous`` in seconds — ``default`` when there is none;
- derived: ``ratio`` of two earlier features (``numerator`` / ``denominator``, 0 when the
  denominator is 0).

The exact meaning is :mod:`streams.features.reference`; every engine must agree with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from streams.errors import ConfigError

STATELESS_KINDS = ("field", "weekend", "hour_at_most")
WINDOW_KINDS = ("window", "label_count", "label_rate")
PREVIOUS_KINDS = ("last_value", "time_since_previous")
DERIVED_KINDS = ("ratio",)
FEATURE_KINDS = STATELESS_KINDS + WINDOW_KINDS + PREVIOUS_KINDS + DERIVED_KINDS
AGGREGATES = ("count", "sum", "mean", "min", "max", "std", "distinct")
LATE_POLICIES = ("score", "dead_letter")

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str | int, where: str) -> int:
    """'7d', '12h', '30m', '10s', '250ms' (or an int of ms) -> milliseconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _DURATION.match(str(text))
    if match is None:
        raise ConfigError(
            f"{where}: {text!r} is not a duration", hint="write e.g. '7d', '12h', '30m', '10s'"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass(frozen=True)
class Entity:
    """Something features are kept per, e.g. a customer; ``key_field`` names its id."""

    name: str
    key_field: str


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str
    field: str | None = None
    hour: int = 0
    entity: str | None = None
    agg: str | None = None
    window_ms: int = 0
    delay_ms: int = 0
    default: float = 0.0
    numerator: str | None = None
    denominator: str | None = None

    @property
    def stateful(self) -> bool:
        return self.kind in WINDOW_KINDS + PREVIOUS_KINDS

    def identity(self) -> tuple[Any, ...]:
        """What the spec hash covers: everything that changes a value."""
        return (
            self.name,
            self.kind,
            self.field,
            self.hour,
            self.entity,
            self.agg,
            self.window_ms,
            self.delay_ms,
            self.default,
            self.numerator,
            self.denominator,
        )


@dataclass(frozen=True)
class StateConfig:
    """How late an event may be (event time behind its entity's newest) and what then."""

    allowed_lateness_ms: int = 3_600_000
    late_policy: str = "score"
    # How far one partition's event time may run ahead of another's while the worker reads
    # them: state of an entity that is not the partition key is kept that much longer.
    partition_skew_ms: int = 7 * 86_400_000


def parse_entities(raw: dict[str, Any], where: str) -> dict[str, Entity]:
    entities = {}
    for name, body in raw.items():
        if not isinstance(body, dict) or "key_field" not in body:
            raise ConfigError(f'{where}: [entities.{name}] needs key_field = "<field>"')
        entities[name] = Entity(name, str(body["key_field"]))
    return entities


def parse_state(raw: dict[str, Any], where: str) -> StateConfig:
    config = StateConfig(
        allowed_lateness_ms=parse_duration(raw.get("allowed_lateness", "1h"), where),
        late_policy=str(raw.get("late_policy", "score")),
        partition_skew_ms=parse_duration(raw.get("partition_skew", "7d"), where),
    )
    if config.late_policy not in LATE_POLICIES:
        raise ConfigError(
            f"{where}: late_policy {config.late_policy!r}", hint=f"use one of {LATE_POLICIES}"
        )
    return config


def parse_feature(raw: dict[str, Any], where: str) -> FeatureSpec:
    kind = str(raw.get("kind", ""))
    name = str(raw.get("name", ""))
    if kind not in FEATURE_KINDS:
        raise ConfigError(
            f"{where}: feature {name!r} has kind {kind!r}", hint=f"use one of {FEATURE_KINDS}"
        )
    try:
        hour, default = int(raw.get("hour", 0)), float(raw.get("default", 0.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: feature {name!r}: hour must be an integer and default a number ({exc})"
        ) from exc
    if not 0 <= hour <= 23:
        raise ConfigError(f"{where}: feature {name!r} has hour = {hour}", hint="use 0 … 23 (UTC)")
    spec = FeatureSpec(
        name=name,
        kind=kind,
        field=raw.get("field"),
        hour=hour,
        entity=raw.get("entity"),
        agg=raw.get("agg"),
        window_ms=parse_duration(raw["window"], where) if "window" in raw else 0,
        delay_ms=parse_duration(raw["delay"], where) if "delay" in raw else 0,
        default=default,
        numerator=raw.get("numerator"),
        denominator=raw.get("denominator"),
    )
    if kind == "window" and spec.agg not in AGGREGATES:
        raise ConfigError(f"{where}: feature {name!r} needs agg = one of {AGGREGATES}")
    if kind == "window" and spec.agg != "count" and not spec.field:
        raise ConfigError(f'{where}: feature {name!r} ({spec.agg}) needs field = "<field>"')
    if kind in WINDOW_KINDS and spec.window_ms <= 0:
        raise ConfigError(f"{where}: feature {name!r} needs window = e.g. '7d'")
    return spec


def check_features(
    features: tuple[FeatureSpec, ...],
    entities: dict[str, Entity],
    state: StateConfig,
    event_fields: dict[str, Any],
    outcome_fields: dict[str, Any] | None,
    partition_key: str,
    where: str,
) -> None:
    """Cross-checks: fields exist, entities exist, ratios refer to earlier features, and
    windows that late events could still change are kept per the partition key only."""
    seen: set[str] = set()
    for f in features:
        if f.name in seen:
            raise ConfigError(f"{where}: two features are named {f.name!r}")
        reads_field = f.kind in (*STATELESS_KINDS, "window", "last_value")
        if reads_field and f.field is not None and f.field not in event_fields:
            raise ConfigError(f"{where}: feature {f.name!r} reads unknown field {f.field!r}")
        if f.kind in (*STATELESS_KINDS, "last_value") and f.field is None:
            raise ConfigError(f'{where}: feature {f.name!r} needs field = "<field>"')
        if f.stateful:
            if f.entity is None:
                raise ConfigError(
                    f"{where}: feature {f.name!r} names entity None: a {f.kind} feature keeps "
                    "state per entity",
                    hint=f'add entity = "<one of {list(entities)}>"',
                )
            entity = entities.get(f.entity)
            if entity is None:
                raise ConfigError(
                    f"{where}: feature {f.name!r} names entity {f.entity!r}",
                    hint=f"declare [entities.{f.entity}] key_field = ... (have {list(entities)})",
                )
            if entity.key_field not in event_fields:
                raise ConfigError(
                    f"{where}: entity {entity.name} key {entity.key_field!r} "
                    "is not a field of the events"
                )
            # Another partition's events reach an entity in no defined order; only a window
            # that ends before anything late could land in it is the same online and offline.
            if entity.key_field != partition_key and (
                f.kind in PREVIOUS_KINDS or f.delay_ms <= state.allowed_lateness_ms
            ):
                raise ConfigError(
                    f"{where}: feature {f.name!r} keeps state per {entity.name}, which is not "
                    f"the partition key ({partition_key}), without a delay over the allowed "
                    "lateness",
                    hint="add delay = '<more than allowed_lateness>' or key the topic by it",
                )
        if f.kind in ("label_count", "label_rate"):
            if outcome_fields is None:
                raise ConfigError(f"{where}: feature {f.name!r} needs an [outcomes] section")
            key = entities[f.entity or ""].key_field
            if key not in outcome_fields:
                raise ConfigError(f"{where}: outcomes lack {key!r}, needed by {f.name!r}")
        if f.kind == "ratio" and not ({f.numerator, f.denominator} <= seen):
            raise ConfigError(
                f"{where}: ratio {f.name!r} must name two features declared before it"
            )
        seen.add(f.name)
