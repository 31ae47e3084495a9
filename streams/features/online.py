"""The online feature store's interface and the state layout every backend shares.

An :class:`OnlineStore` keeps, per entity key, the events and labels its stateful features
read; for a micro-batch of events (arrival order) it adds them and returns each one's stateful
features as :mod:`streams.features.reference` defines them, with the state as of its arrival.
:class:`StatePlan` derives from the pipeline what each entity keeps and for how long;
:class:`~streams.features.memory_store.MemoryStore` is the executable spec of the incremental
algorithm, :class:`~streams.features.redis_store.RedisStore` runs it in Redis.

Equal to the reference (|Δ| <= 1e-9) when outcomes are added before the events they should
count for, and under these assumptions:

- Order: windows of the partition-key entity are exact for every event that is not late.
  Another entity's windows (load_pipeline allows them only with a delay over the allowed
  lateness) see what has been added so far, which is what the reference sees as long as no
  event arrives more than ``allowed_lateness`` behind one already added — across partitions
  too, so consumer lag between the workers of a group must stay below it.
- Retention: state older than ``newest - (longest window + delay + allowed_lateness)`` of an
  entity key is trimmed (no on-time event reads it; for last_value / time_since_previous the
  newest entry below that stays). A late event under policy ``score`` is scored with the state
  kept: where its windows reach below that horizon it can differ from the reference (it is
  flagged ``late`` and counted). Under ``dead_letter`` it is neither added nor scored.
- Expiry: the keys of an entity key that sees no event for ``retention + allowed_lateness``
  (at least a day; wall clock) expire, forgetting its newest time too. An entity with
  last_value / time_since_previous keeps its keys (a customer returning after months still
  gets the gap); the trim bounds them to about one entry each.
- Identity: an event id names one event, and a redelivery carries the same keys and time.
  Dedupe is per entity key while the id is kept: a redelivery of a trimmed event is late and
  is added again and trimmed in the same step. Two different events sharing an id but not
  their entity keys would each count under their own keys (the reference keeps the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streams.features.spec import PREVIOUS_KINDS, Entity, FeatureSpec
from streams.features.stateless import MS_PER_DAY
from streams.pipeline import Pipeline

# The lateness-deciding entity when no declared entity is keyed by the partition key: it keeps
# only ids and times (for dedupe and the newest time). '~' cannot appear in a bare TOML key.
PARTITION_ENTITY = "~partition"

FLAG_ON_TIME, FLAG_LATE, FLAG_DROPPED = 0, 1, 2


@dataclass(frozen=True)
class StatefulBlock:
    """The stateful columns of one micro-batch.

    ``values`` is (n, n_stateful) float64, the pipeline's stateful features in declaration
    order (NaN rows for dropped events); ``dropped`` marks late events under late_policy
    ``dead_letter`` (not added, not scored).
    """

    values: np.ndarray
    late: np.ndarray
    dropped: np.ndarray


class OnlineStore(Protocol):
    def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> StatefulBlock:
        """Add a micro-batch of events (arrival order, deduped by id) and return each one's
        stateful features with the state as of its arrival."""
        ...

    def add_outcomes(self, outcomes: Sequence[Mapping[str, Any]]) -> int:
        """Record label state; returns how many outcomes were new (first per labelled id)."""
        ...


@dataclass(frozen=True)
class EntityPlan:
    """What one entity keeps per key, and the features computed from it."""

    name: str
    key_field: str
    features: tuple[FeatureSpec, ...]  # stateful features of this entity, declaration order
    columns: tuple[int, ...]  # their columns in StatefulBlock.values
    fields: tuple[str, ...]  # event fields the features read, kept per event
    decides_lateness: bool  # the partition-key entity whose newest time makes an event late
    lookback_ms: int  # max window + delay: how far behind its own time an event reads
    min_delay_ms: int  # min delay: the newest part of the state a window reads
    retention_ms: int  # lookback + allowed lateness: older state no on-time event reads
    keeps_previous: bool  # last_value / time_since_previous: the newest entry is never trimmed
    ttl_ms: int  # idle keys expire after this (wall clock): retention + lateness, >= a day

    @property
    def has_labels(self) -> bool:
        return any(f.kind in ("label_count", "label_rate") for f in self.features)

    def field_index(self, f: FeatureSpec) -> int:
        return self.fields.index(f.field or "")


@dataclass(frozen=True)
class StatePlan:
    """The per-entity state of a pipeline; the lateness-deciding entity comes first."""

    entities: tuple[EntityPlan, ...]
    n_stateful: int
    id_field: str
    time_field: str
    lateness_ms: int
    drop_late: bool
    # outcomes: labelled event id, its time, when the label became known, the label
    outcome_fields: tuple[str, str, str, str] | None

    @classmethod
    def of(cls, pipeline: Pipeline) -> StatePlan:
        events = pipeline.events
        partition_key = events.key_field or events.id_field
        lateness = pipeline.state.allowed_lateness_ms
        stateful = [f for f in pipeline.features if f.stateful]
        by_entity: dict[str, list[tuple[int, FeatureSpec]]] = {}
        for column, f in enumerate(stateful):
            by_entity.setdefault(f.entity or "", []).append((column, f))
        decider = next(
            (name for name in by_entity if pipeline.entities[name].key_field == partition_key),
            None,
        )
        if decider is None:
            by_entity = {PARTITION_ENTITY: [], **by_entity}
            decider = PARTITION_ENTITY
        entities = [Entity(PARTITION_ENTITY, partition_key), *pipeline.entities.values()]
        key_fields = {e.name: e.key_field for e in entities}
        plans = [
            _entity_plan(
                name,
                key_fields[name],
                by_entity[name],
                name == decider,
                lateness,
                pipeline.state.partition_skew_ms,
            )
            for name in sorted(by_entity, key=lambda name: name != decider)
        ]
        o = pipeline.outcomes
        outcome_fields = (
            (o.id_field, o.event_time_field, o.time_field, o.label_field)
            if o is not None and o.event_time_field is not None and o.label_field is not None
            else None
        )
        return cls(
            entities=tuple(plans),
            n_stateful=len(stateful),
            id_field=events.id_field,
            time_field=events.time_field,
            lateness_ms=lateness,
            drop_late=pipeline.state.late_policy == "dead_letter",
            outcome_fields=outcome_fields,
        )

    @property
    def label_entities(self) -> tuple[EntityPlan, ...]:
        return tuple(e for e in self.entities if e.has_labels)


def _entity_plan(
    name: str,
    key_field: str,
    columns_features: list[tuple[int, FeatureSpec]],
    decides: bool,
    lateness_ms: int,
    partition_skew_ms: int,
) -> EntityPlan:
    features = tuple(f for _, f in columns_features)
    fields: list[str] = []
    for f in features:
        reads = f.kind == "last_value" or (f.kind == "window" and f.agg != "count")
        if reads and f.field and f.field not in fields:
            fields.append(f.field)
    windowed = [f for f in features if f.kind not in PREVIOUS_KINDS]
    lookback = max((f.window_ms + f.delay_ms for f in windowed), default=0)
    return EntityPlan(
        name=name,
        key_field=key_field,
        features=features,
        columns=tuple(c for c, _ in columns_features),
        fields=tuple(fields),
        decides_lateness=decides,
        lookback_ms=lookback,
        min_delay_ms=min((f.delay_ms for f in windowed), default=0),
        # Another partition may run ahead of the one reading this state and move the newest
        # time forward: keep that much more, or its window's oldest events are gone.
        retention_ms=lookback + lateness_ms + (0 if decides else partition_skew_ms),
        keeps_previous=any(f.kind in PREVIOUS_KINDS for f in features),
        # PEXPIRE 0 would delete the key; a day keeps a quiet key's newest time (lateness)
        ttl_ms=max(lookback + 2 * lateness_ms + (0 if decides else partition_skew_ms), MS_PER_DAY),
    )
