"""The meaning of every stateful feature, written as plainly as possible (per event, loops).

This is the definition the engines must match (|Δ| <= 1e-9): the vectorised offline path
(training sets, backtests) and the online stores (memory, Redis). It is slow on purpose.

Given the events in arrival order (for a topic: offset order within each partition — the
partition key's entity sees nothing else) and the outcomes:

1. Deduplication: the first occurrence of an event id is the one that counts; a repeat is
   scored with the state at its arrival but adds nothing.
2. Lateness: an occurrence whose time is more than ``allowed_lateness`` behind the newest
   time already added for its partition-key entity is *late*. Policy ``score``: it is added
   and scored like any other. Policy ``dead_letter``: it is neither added nor scored.
3. ``window`` over entity E, width w, delay D, for an event at time t: the added events x of
   the same E key with t - D - w < x.time <= t - D. For the partition-key entity only events
   that arrived no later than this one count (so an event never sees later arrivals); for
   other entities, D > allowed lateness (checked at load) and every added event counts.
   count = |S|; sum; mean = sum / count; min; max; std = population standard deviation
   (two-pass); distinct = number of distinct values — each 0 for an empty window.
4. ``label_count`` / ``label_rate``: outcomes o (first per labelled event id) of the same E
   key with a true label, t - D - w < o.event_time <= t - D and o.outcome_time <= t — an
   outcome counts from the moment it is known. rate = label_count / count of the event
   window with the same E, w and D (0 when that is empty).
5. ``last_value`` / ``time_since_previous`` (partition-key entity): among added events of the
   same key that arrived before this occurrence, with another id and time <= t, the one with
   the greatest (time, str(id)); its field / (t - its time) in seconds; ``default`` if none.
6. Stateless kinds and ``ratio`` are computed from the event and earlier features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.features.spec import PREVIOUS_KINDS, FeatureSpec
from streams.features.stateless import feature_matrix
from streams.pipeline import Pipeline


@dataclass(frozen=True)
class FeatureResult:
    """Feature vectors of a sequence of events, and which of them were late.

    ``dropped`` marks occurrences the late policy dead-letters (their row is NaN).
    """

    X: np.ndarray
    late: np.ndarray
    dropped: np.ndarray


@dataclass
class _Added:
    arrival: int
    time: int
    event_id: str
    event: Mapping[str, Any]


def reference_features(
    pipeline: Pipeline,
    events: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]] = (),
) -> FeatureResult:
    spec = pipeline.events
    time_field, id_field = spec.time_field, spec.id_field
    partition_key = spec.key_field or spec.id_field
    lateness = pipeline.state.allowed_lateness_ms
    n = len(events)
    late = np.zeros(n, dtype=bool)
    dropped = np.zeros(n, dtype=bool)

    # Pass 1: which occurrences are added to the state, in arrival order.
    added: list[_Added] = []
    first_seen: set[str] = set()
    newest: dict[Any, int] = {}
    for a, e in enumerate(events):
        t, key = e[time_field], e[partition_key]
        if key in newest and t < newest[key] - lateness:
            late[a] = True
            if pipeline.state.late_policy == "dead_letter":
                dropped[a] = True
                continue
        event_id = str(e[id_field])
        if event_id in first_seen:
            continue
        first_seen.add(event_id)
        added.append(_Added(a, t, event_id, e))
        newest[key] = max(newest.get(key, t), t)

    known = first_outcomes(pipeline, outcomes)
    stateless = feature_matrix(pipeline, events)
    X = np.full((n, len(pipeline.features)), np.nan)
    for a, e in enumerate(events):
        if dropped[a]:
            continue
        values: dict[str, float] = {}
        s = 0
        for f in pipeline.features:
            if f.stateful:
                values[f.name] = _stateful(pipeline, f, a, e, added, known, partition_key)
            elif f.kind == "ratio":
                den = values[f.denominator or ""]
                values[f.name] = values[f.numerator or ""] / den if den != 0 else 0.0
            else:
                values[f.name] = float(stateless[a, s])
                s += 1
        X[a] = [values[f.name] for f in pipeline.features]
    return FeatureResult(X, late, dropped)


def first_outcomes(
    pipeline: Pipeline, outcomes: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The first outcome per labelled event id, in the order given: the one that counts."""
    if pipeline.outcomes is None:
        return []
    first: dict[str, Mapping[str, Any]] = {}
    for o in outcomes:
        first.setdefault(str(o[pipeline.outcomes.id_field]), o)
    return list(first.values())


def _stateful(
    pipeline: Pipeline,
    f: FeatureSpec,
    a: int,
    e: Mapping[str, Any],
    added: list[_Added],
    outcomes: list[Mapping[str, Any]],
    partition_key: str,
) -> float:
    entity = pipeline.entities[f.entity or ""]
    key = e[entity.key_field]
    t = e[pipeline.events.time_field]
    own = entity.key_field == partition_key
    mine = [x for x in added if x.event[entity.key_field] == key and (not own or x.arrival <= a)]
    if f.kind in PREVIOUS_KINDS:
        event_id = str(e[pipeline.events.id_field])
        before = [x for x in mine if x.arrival < a and x.event_id != event_id and x.time <= t]
        if not before:
            return f.default
        prev = max(before, key=lambda x: (x.time, x.event_id))
        if f.kind == "last_value":
            return float(prev.event[f.field or ""])
        return (t - prev.time) / 1000.0
    lo, hi = t - f.delay_ms - f.window_ms, t - f.delay_ms
    window = sorted((x for x in mine if lo < x.time <= hi), key=lambda x: (x.time, x.event_id))
    if f.kind == "window":
        return aggregate(f.agg or "", [float(x.event[f.field]) if f.field else 1.0 for x in window])
    o_spec = pipeline.outcomes
    assert o_spec is not None and o_spec.event_time_field and o_spec.label_field
    labelled_at, known_at, label = o_spec.event_time_field, o_spec.time_field, o_spec.label_field
    positives = sum(
        1
        for o in outcomes
        if o[entity.key_field] == key
        and lo < o[labelled_at] <= hi
        and o[known_at] <= t
        and bool(o[label])
    )
    if f.kind == "label_count":
        return float(positives)
    return positives / len(window) if window else 0.0


def aggregate(agg: str, values: list[float]) -> float:
    """One aggregate of a window's values (in (time, id) order); 0 for an empty window."""
    if not values:
        return 0.0
    if agg == "count":
        return float(len(values))
    if agg == "sum":
        return _sum(values)
    if agg == "mean":
        return _sum(values) / len(values)
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    if agg == "std":
        mean = _sum(values) / len(values)
        return math.sqrt(_sum([(v - mean) * (v - mean) for v in values]) / len(values))
    if agg == "distinct":
        return float(len(set(values)))
    raise AssertionError(f"aggregate {agg!r} passed parse_feature's check")


def _sum(values: list[float]) -> float:
    total = 0.0
    for v in values:  # left to right, as a Lua loop on the server sums them
        total += v
    return total
