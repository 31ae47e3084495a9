"""An in-process online store: for unit tests, and the executable spec of what the Redis
store's script does per (event, entity) — late check, dedupe, add, compute, trim. Unlike
Redis it never expires an idle key (no wall clock here)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.features.online import (
    FLAG_DROPPED,
    FLAG_LATE,
    FLAG_ON_TIME,
    EntityPlan,
    StatefulBlock,
    StatePlan,
)
from streams.features.reference import aggregate
from streams.features.spec import FeatureSpec
from streams.pipeline import Pipeline


def _time(entry: tuple[int, str]) -> int:
    return entry[0]


@dataclass
class _KeyState:
    """One entity key: what the Redis store keeps in its four keys."""

    events: list[tuple[int, str]] = field(default_factory=list)  # sorted (time, id): ev
    values: dict[str, tuple[float, ...]] = field(default_factory=dict)  # id -> fields: ids, ev
    labels: list[tuple[int, str]] = field(default_factory=list)  # (labelled time, id): lab
    outcomes: dict[str, tuple[int, bool]] = field(default_factory=dict)  # id -> label: out

    def newest(self) -> int | None:
        return self.events[-1][0] if self.events else None


class MemoryStore:
    """:class:`~streams.features.online.OnlineStore` in a dict; state dies with the object."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.plan = StatePlan.of(pipeline)
        self._keys: dict[tuple[str, str], _KeyState] = {}

    def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> StatefulBlock:
        plan = self.plan
        n = len(events)
        values = np.full((n, plan.n_stateful), np.nan)
        late = np.zeros(n, dtype=bool)
        dropped = np.zeros(n, dtype=bool)
        for i, event in enumerate(events):
            for entity in plan.entities:
                flag, row = self._apply(entity, event)
                if entity.decides_lateness:
                    late[i] = flag != FLAG_ON_TIME
                    dropped[i] = flag == FLAG_DROPPED
                    if dropped[i]:
                        break
                values[i, list(entity.columns)] = row
        return StatefulBlock(values, late, dropped)

    def add_outcomes(self, outcomes: Sequence[Mapping[str, Any]]) -> int:
        plan = self.plan
        if plan.outcome_fields is None or not plan.label_entities:
            return 0
        id_field, time_field, known_field, label_field = plan.outcome_fields
        new = 0
        for o in outcomes:
            event_id = str(o[id_field])
            for j, entity in enumerate(plan.label_entities):
                state = self._state(entity, o)
                if event_id in state.outcomes:
                    continue
                state.outcomes[event_id] = (int(o[known_field]), bool(o[label_field]))
                insort(state.labels, (int(o[time_field]), event_id))
                new += j == 0
        return new

    def _state(self, entity: EntityPlan, record: Mapping[str, Any]) -> _KeyState:
        return self._keys.setdefault((entity.name, str(record[entity.key_field])), _KeyState())

    def _apply(self, entity: EntityPlan, event: Mapping[str, Any]) -> tuple[int, list[float]]:
        plan = self.plan
        state = self._state(entity, event)
        t, event_id = int(event[plan.time_field]), str(event[plan.id_field])
        newest = state.newest()
        flag = FLAG_ON_TIME
        if entity.decides_lateness and newest is not None and t < newest - plan.lateness_ms:
            flag = FLAG_LATE
            if plan.drop_late:
                return FLAG_DROPPED, []
        added = event_id not in state.values
        if added:
            insort(state.events, (t, event_id))
            state.values[event_id] = tuple(float(event[name]) for name in entity.fields)
        row = [self._feature(entity, state, f, t, event_id) for f in entity.features]
        if added:
            _trim(entity, state, t if newest is None else max(newest, t))
        return flag, row

    def _feature(
        self, entity: EntityPlan, state: _KeyState, f: FeatureSpec, t: int, event_id: str
    ) -> float:
        if f.kind in ("last_value", "time_since_previous"):
            end = bisect_right(state.events, t, key=_time)
            for time, other in reversed(state.events[max(0, end - 2) : end]):
                if other != event_id:
                    if f.kind == "time_since_previous":
                        return (t - time) / 1000.0
                    return state.values[other][entity.field_index(f)]
            return float(f.default)
        lo, hi = t - f.delay_ms - f.window_ms, t - f.delay_ms
        window = state.events[
            bisect_right(state.events, lo, key=_time) : bisect_right(state.events, hi, key=_time)
        ]
        if f.kind == "window":
            if f.agg == "count":
                return float(len(window))
            k = entity.field_index(f)
            return aggregate(f.agg or "", [state.values[x][k] for _, x in window])
        labels = state.labels[
            bisect_right(state.labels, lo, key=_time) : bisect_right(state.labels, hi, key=_time)
        ]
        positives = 0
        for _, x in labels:
            known, label = state.outcomes[x]
            positives += known <= t and label
        if f.kind == "label_count":
            return float(positives)
        return positives / len(window) if window else 0.0


def _trim(entity: EntityPlan, state: _KeyState, newest: int) -> None:
    """Drop what no on-time event can read any more (keeping the newest entry below the
    horizon for last_value / time_since_previous)."""
    cutoff = newest - entity.retention_ms
    old = bisect_left(state.events, cutoff, key=_time)
    if entity.keeps_previous:
        old = max(0, old - 1)
    for _, x in state.events[:old]:
        del state.values[x]
    del state.events[:old]
    old = bisect_left(state.labels, cutoff, key=_time)
    for _, x in state.labels[:old]:
        del state.outcomes[x]
    del state.labels[:old]
