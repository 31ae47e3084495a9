"""The vectorised offline feature path (training sets, backtests): the reference's meaning.

:func:`offline_features` equals :func:`streams.features.reference.reference_features` on any
input — late and duplicated events, outcomes in any order — with numpy instead of loops.
Points (added events, known positive outcomes) are sorted by (entity key, time, str(id)), so
a window is a slice found by ``searchsorted``. Aggregates walk the slices position by
position, vectorised across events: step k adds the k-th value of every window that long, so
each sum is added in the reference's order and comes out bit-identical (no cumulative-sum
drift). A window of the partition key's entity leaves out points that arrived after the event;
only events whose window may hold such a point (out-of-order data, the minority) are masked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from streams.features.assemble import assemble
from streams.features.reference import FeatureResult, first_outcomes
from streams.features.spec import PREVIOUS_KINDS, FeatureSpec
from streams.pipeline import Pipeline

Records = Sequence[Mapping[str, Any]]
LABEL_KINDS = ("label_count", "label_rate")


def offline_features(pipeline: Pipeline, events: Records, outcomes: Records = ()) -> FeatureResult:
    """Feature vectors of ``events`` (in arrival order) given ``outcomes``; see the reference."""
    source = _Source(pipeline, events, outcomes)
    ev = pipeline.events
    late, dropped, added = _arrivals(
        source,
        source.codes(ev.key_field or ev.id_field)[0],
        pipeline.state.allowed_lateness_ms,
        pipeline.state.late_policy == "dead_letter",
    )
    specs = [f for f in pipeline.features if f.stateful]
    stateful = np.full((len(events), len(specs)), np.nan)
    if specs:
        scored = np.flatnonzero(~dropped)
        engine = _Engine(source, np.flatnonzero(added), scored)
        for j, f in enumerate(specs):
            stateful[scored, j] = engine.feature(f)
    return assemble(pipeline, events, stateful, late, dropped)


# --- the input columns -----------------------------------------------------------------------


class _Source:
    """Columns of the events and of the known outcomes, each read once, and their timeline."""

    def __init__(self, pipeline: Pipeline, events: Records, outcomes: Records) -> None:
        ev, out = pipeline.events, pipeline.outcomes
        self.pipeline, self.events = pipeline, events
        self.outcomes = first_outcomes(pipeline, outcomes)
        self.times = _ints(self.column(ev.time_field))
        raw_ids = self.column(ev.id_field)
        if not _all_ints(raw_ids):  # for ints, str equality is int equality
            raw_ids = [str(v) for v in raw_ids]
        self.ids = _codes(raw_ids)  # equal exactly when str(id) is: the reference's identity
        labelled_times = np.zeros(0, dtype=np.int64)
        if out is not None and out.event_time_field and self.outcomes:
            labelled_times = _ints(self.column(out.event_time_field, outcomes=True))
        self.timeline = _Timeline(
            np.concatenate([self.times, labelled_times]), len(events) + len(self.outcomes)
        )
        self._codes: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
        self._values: dict[str, np.ndarray] = {}

    def column(self, field: str, outcomes: bool = False) -> list[Any]:
        return list(map(itemgetter(field), self.outcomes if outcomes else self.events))

    def codes(self, field: str, outcomes: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Codes of ``field`` in the events and (if asked) the known outcomes, one code space."""
        if (field, outcomes) not in self._codes:
            values = self.column(field)
            codes = _codes(values + self.column(field, outcomes=True) if outcomes else values)
            self._codes[field, outcomes] = codes[: len(values)], codes[len(values) :]
        return self._codes[field, outcomes]

    def values(self, field: str) -> np.ndarray:
        if field not in self._values:
            self._values[field] = np.fromiter(map(float, self.column(field)), dtype=np.float64)
        return self._values[field]


def _all_ints(values: list[Any]) -> bool:
    return set(map(type, values)) <= {int}


def _ints(values: list[Any]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _codes(values: list[Any]) -> np.ndarray:
    """One int per value; equal codes exactly for values Python calls equal (dict semantics)."""
    if _all_ints(values):
        try:
            ints = _ints(values)
        except OverflowError:
            pass
        else:
            return np.searchsorted(_distinct(ints), ints)
    index: dict[Any, int] = {}
    return np.fromiter(
        (index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values)
    )


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique hashes, and is ~10x slower on 10^6 ints)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered


class _Timeline:
    """Times as small ints so that (key, time) fits one sortable int64: ``key * span + code``.

    ``code(t) <= bound(x)`` exactly when ``t <= x``, for the times given and any x. Codes are
    offsets from the earliest time when that fits, else ranks among the distinct times.
    """

    def __init__(self, times: np.ndarray, n_keys: int) -> None:
        self.first = int(times.min()) if times.size else 0
        width = int(times.max()) - self.first + 2 if times.size else 2
        self.distinct: np.ndarray | None = None
        if (n_keys + 1) * width >= 2**62:  # every key code * span must fit
            self.distinct = _distinct(times)
            width = self.distinct.shape[0] + 1
        self.span = width

    def code(self, t: np.ndarray) -> np.ndarray:
        if self.distinct is None:
            return t - (self.first - 1)
        return np.searchsorted(self.distinct, t) + 1

    def bound(self, x: np.ndarray) -> np.ndarray:
        if self.distinct is None:
            return np.clip(x - (self.first - 1), 0, self.span - 1)
        return np.searchsorted(self.distinct, x, side="right")


# --- arrival: late, dropped, and which occurrence of an id is added -------------------------


def _arrivals(
    source: _Source, keys: np.ndarray, lateness: int, dead_letter: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(late, dropped, added) per occurrence, as the reference's first pass decides them.

    Under dead_letter a dropped first occurrence lets a later one of its id be added, which
    can move its key's newest time and so make later events late. Each decision depends only
    on earlier arrivals, so iterating "drop what is late" fixes at least one more position
    per round and stops at the reference's answer; with no dropped duplicates, round one.
    """
    n = keys.shape[0]
    order = np.argsort(keys, kind="stable")  # by key, then arrival
    g, t = keys[order], source.times[order]
    code = source.timeline.code(t)
    base = g * source.timeline.span
    first_of_key = np.r_[True, g[1:] != g[:-1]] if n else np.zeros(0, dtype=bool)
    dropped = np.zeros(n, dtype=bool)
    while True:
        added = _first_occurrences(source.ids, ~dropped)
        # newest added time of the key before each arrival: a running max of key * span +
        # code (0 when not added), which only grows across keys, shifted by one
        running = np.maximum.accumulate(base + np.where(added[order], code, 0))
        before = np.where(first_of_key, base, np.r_[base[:1], running[:-1]]) - base
        newest = before + (source.timeline.first - 1)  # a time when codes are offsets
        if source.timeline.distinct is not None:
            newest = source.timeline.distinct[np.maximum(before - 1, 0)]
        late = np.zeros(n, dtype=bool)
        late[order] = (before > 0) & (t < newest - lateness)
        if not dead_letter or np.array_equal(late, dropped):
            return late, dropped, added
        dropped = late


def _first_occurrences(ids: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(eligible)
    by_id = rows[np.argsort(ids[rows], kind="stable")]  # by id, then arrival
    sorted_ids = ids[by_id]
    added = np.zeros(ids.shape[0], dtype=bool)
    added[by_id[np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]] if by_id.size else by_id] = True
    return added


# --- sorted points, queries and window slices ------------------------------------------------


@dataclass(frozen=True)
class _Points:
    """Points sorted by (key, time); ``rows[i]`` is the i-th point's index in its source."""

    rows: np.ndarray
    sorted_keys: np.ndarray  # key * timeline.span + timeline.code(time), ascending
    span: int

    @classmethod
    def build(
        cls, rows: np.ndarray, keys: np.ndarray, times: np.ndarray, timeline: _Timeline
    ) -> _Points:
        composite = keys * timeline.span + timeline.code(times)
        order = np.argsort(composite, kind="stable")  # ties keep the order of ``rows``
        return cls(rows[order], composite[order], timeline.span)

    def ties(self) -> np.ndarray:
        """Positions of points that share their key and time with a neighbour."""
        same = self.sorted_keys[1:] == self.sorted_keys[:-1]
        return np.flatnonzero(np.r_[same, False] | np.r_[False, same])

    def latest_arrival(self) -> np.ndarray:
        """Per position, the largest row (arrival) among the points of its key up to it."""
        group = self.sorted_keys // self.span
        stride = int(self.rows.max()) + 1 if self.rows.size else 1
        return np.maximum.accumulate(group * stride + self.rows) - group * stride


class _Queries:
    """The scored occurrences in (entity key, time) order, the order every column of one entity
    is computed in: the targets of each ``searchsorted`` then ascend (cache-friendly)."""

    def __init__(self, keys: np.ndarray, scored: np.ndarray, t: np.ndarray, tl: _Timeline) -> None:
        self.order = np.argsort(keys * tl.span + tl.code(t), kind="stable")
        self.keys, self.arrival, self.t = keys[self.order], scored[self.order], t[self.order]
        self.timeline = tl

    def upto(self, points: _Points, offset: int) -> np.ndarray:
        """Per query, the position after the last point of its key with time <= t - offset."""
        target = self.keys * self.timeline.span + self.timeline.bound(self.t - offset)
        return np.searchsorted(points.sorted_keys, target, side="right")

    def start(self, points: _Points) -> np.ndarray:
        """Per query, the position of the first point of its key."""
        return np.searchsorted(points.sorted_keys, self.keys * self.timeline.span)

    def unsort(self, column: np.ndarray) -> np.ndarray:
        out = np.empty_like(column)
        out[self.order] = column
        return out


@dataclass(frozen=True)
class _Walk:
    """The slices [s, e) of some queries, longest first, walked position by position.

    Step k yields (m, positions): the first m queries (in this order) have a k-th point.
    """

    order: np.ndarray  # walk order -> query
    s: np.ndarray
    e: np.ndarray
    active: np.ndarray  # active[k] = number of slices longer than k

    @classmethod
    def build(cls, s: np.ndarray, e: np.ndarray) -> _Walk:
        lengths = e - s
        longest = int(lengths.max()) if lengths.size else 0
        shortfall = longest - lengths  # ascending = longest first; 16 bits sort by radix
        small = shortfall.astype(np.uint16) if longest < 2**16 else shortfall
        order = np.argsort(small, kind="stable")
        active = np.searchsorted(shortfall[order], longest - np.arange(longest), side="left")
        return cls(order, s[order], e[order], active)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for k, m in enumerate(self.active.tolist()):
            yield m, self.s[:m] + k

    def unsort(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[self.order] = values
        return out


# --- the stateful features -------------------------------------------------------------------


class _Engine:
    """Stateful columns of the scored occurrences; sorts are made once per entity."""

    def __init__(self, source: _Source, added: np.ndarray, scored: np.ndarray) -> None:
        self.source, self.pipeline = source, source.pipeline
        self.added = added  # event indices of added occurrences, by arrival
        self.scored = scored  # event indices of scored occurrences (the queries), by arrival
        self._entities: dict[str, tuple[_Points, _Queries]] = {}
        self._labels: dict[str, _Points] = {}
        self._frames: dict[tuple[str, int, int, str | None], dict[str, np.ndarray]] = {}

    def feature(self, f: FeatureSpec) -> np.ndarray:
        """The column of one stateful feature, in the order of ``scored``."""
        entity = f.entity or ""
        queries = self._entity(entity)[1]
        if f.kind in PREVIOUS_KINDS:
            return queries.unsort(self._previous(f))
        if f.kind == "window":
            frame = self._frame(entity, f.window_ms, f.delay_ms, f.field)
            return queries.unsort(frame[f.agg or ""])
        positives = self._label_count(f)
        if f.kind == "label_rate":
            count = self._frame(entity, f.window_ms, f.delay_ms, None)["count"]
            positives = np.divide(positives, count, out=np.zeros_like(positives), where=count > 0)
        return queries.unsort(positives)

    def _entity(self, entity: str) -> tuple[_Points, _Queries]:
        """Added events by (key, time, str(id)), the reference's order in a window; queries."""
        if entity not in self._entities:
            src = self.source
            labelled = any(
                f.entity == entity and f.kind in LABEL_KINDS for f in src.pipeline.features
            )
            keys = src.codes(self.pipeline.entities[entity].key_field, outcomes=labelled)[0]
            points = _Points.build(
                self.added, keys[self.added], src.times[self.added], src.timeline
            )
            tied = points.ties()
            if tied.size:  # equal key and time: by str(id), as the reference orders them
                id_field = self.pipeline.events.id_field
                rows = points.rows.tolist()
                by_id = sorted(
                    tied.tolist(),
                    key=lambda p: (points.sorted_keys[p], str(src.events[rows[p]][id_field])),
                )
                points.rows[tied] = points.rows[np.array(by_id)]
            queries = _Queries(keys[self.scored], self.scored, src.times[self.scored], src.timeline)
            self._entities[entity] = points, queries
        return self._entities[entity]

    def _own(self, entity: str) -> bool:
        ev = self.pipeline.events
        return self.pipeline.entities[entity].key_field == (ev.key_field or ev.id_field)

    # --- windows over added events

    def _frame(
        self, entity: str, window: int, delay: int, field: str | None
    ) -> dict[str, np.ndarray]:
        """The aggregates of the window (t - delay - window, t - delay] per query (in order)."""
        key = (entity, window, delay, field)
        if key in self._frames:
            return self._frames[key]
        points, queries = self._entity(entity)
        s, e = queries.upto(points, delay + window), queries.upto(points, delay)
        needed = {"count"} | {
            f.agg or ""
            for f in self.pipeline.features
            if f.kind == "window" and (f.entity, f.window_ms, f.delay_ms, f.field) == key
        }
        # Of the partition key's entity, a point that arrived after the query is left out;
        # queries are masked only when a point up to their window's end came later.
        dirty = np.zeros(s.shape[0], dtype=bool)
        if self._own(entity) and points.rows.size:
            dirty = (e > s) & (points.latest_arrival()[np.maximum(e - 1, 0)] > queries.arrival)
        out = {name: np.zeros(s.shape[0]) for name in needed}
        out["count"] = (e - s).astype(np.float64)
        values = self.source.values(field)[points.rows] if field else np.ones(points.rows.size)
        for subset, masked in ((~dirty, False), (dirty, True)):
            rows = np.flatnonzero(subset)
            if rows.size and (masked or needed != {"count"}):
                arrival = queries.arrival[rows] if masked else None
                walk = _Walk.build(s[rows], e[rows])
                for name, col in _aggregates(walk, needed, values, points.rows, arrival).items():
                    out[name][rows] = col
        self._frames[key] = out
        return out

    # --- labels

    def _label_count(self, f: FeatureSpec) -> np.ndarray:
        """Known positive outcomes of the entity with t - D - w < event time <= t - D."""
        entity = f.entity or ""
        queries = self._entity(entity)[1]
        spec, src = self.pipeline.outcomes, self.source
        if spec is None or not src.outcomes:
            return np.zeros(queries.t.shape[0])
        if entity not in self._labels:
            positive = np.fromiter(
                map(bool, src.column(spec.label_field or "", outcomes=True)), bool
            )
            rows = np.flatnonzero(positive)
            et = _ints(src.column(spec.event_time_field or "", outcomes=True))[rows]
            keys = self._keys_of_outcomes(entity)[rows]
            self._labels[entity] = _Points.build(rows, keys, et, src.timeline)
        labels = self._labels[entity]
        walk = _Walk.build(
            queries.upto(labels, f.delay_ms + f.window_ms), queries.upto(labels, f.delay_ms)
        )
        known_at = _ints(src.column(spec.time_field, outcomes=True))[labels.rows]
        t = queries.t[walk.order]
        count = np.zeros(t.shape[0])
        for m, pos in walk:
            count[:m] += known_at[pos] <= t[:m]
        return walk.unsort(count)

    def _keys_of_outcomes(self, entity: str) -> np.ndarray:
        return self.source.codes(self.pipeline.entities[entity].key_field, outcomes=True)[1]

    # --- the previous event

    def _previous(self, f: FeatureSpec) -> np.ndarray:
        """Of the added events of the query's key that arrived before it, with another id and
        time <= t, the one with the greatest (time, str(id)): walk back from t to it."""
        points, queries = self._entity(f.entity or "")
        start, pos = queries.start(points), queries.upto(points, 0) - 1
        ids = self.source.ids
        found = np.full(pos.shape[0], -1)
        todo = np.arange(pos.shape[0])
        while todo.size:
            todo = todo[pos[todo] >= start[todo]]
            row = points.rows[pos[todo]]
            ok = (row < queries.arrival[todo]) & (ids[row] != ids[queries.arrival[todo]])
            found[todo[ok]] = row[ok]
            todo = todo[~ok]
            pos[todo] -= 1
        has = found >= 0
        out = np.full(pos.shape[0], f.default)
        if f.kind == "last_value":
            out[has] = self.source.values(f.field or "")[found[has]]
        else:
            out[has] = (queries.t[has] - self.source.times[found[has]]) / 1000.0
        return out


# --- aggregates of slices --------------------------------------------------------------------


def _aggregates(
    walk: _Walk, needed: set[str], values: np.ndarray, rows: np.ndarray, arrival: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The ``needed`` aggregates of each slice, in query order; 0 for an empty one. With
    ``arrival``, a point whose row (its arrival) is above the query's arrival is left out."""
    n = walk.order.shape[0]
    q_arrival = arrival[walk.order] if arrival is not None else None
    extremes = bool(needed & {"min", "max"})
    count, total = np.zeros(n), np.zeros(n)
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    for m, pos in walk:
        v = values[pos]
        if q_arrival is not None:
            keep = rows[pos] <= q_arrival[:m]
            count[:m] += keep
            v = np.where(keep, v, 0.0)  # adding 0.0 leaves a sum unchanged, bit for bit
        else:
            count[:m] += 1.0
        total[:m] += v
        if extremes:
            lo = v if q_arrival is None else np.where(keep, v, np.inf)
            hi = v if q_arrival is None else np.where(keep, v, -np.inf)
            np.minimum(low[:m], lo, out=low[:m])
            np.maximum(high[:m], hi, out=high[:m])
    some = count > 0
    low[~some], high[~some] = 0.0, 0.0
    mean = np.divide(total, count, out=np.zeros(n), where=some)
    out = {"count": count, "sum": total, "mean": mean, "min": low, "max": high}
    if "std" in needed:  # two-pass, as the reference
        squares = np.zeros(n)
        for m, pos in walk:
            dev = values[pos] - mean[:m]
            dev *= dev  # correctly rounded; Python's ** 2 (libm pow) may differ by an ulp
            squares[:m] += (
                dev if q_arrival is None else np.where(rows[pos] <= q_arrival[:m], dev, 0)
            )
        out["std"] = np.sqrt(np.divide(squares, count, out=np.zeros(n), where=some))
    if "distinct" in needed:
        out["distinct"] = _distinct_counts(walk, values, rows, q_arrival)
    return {name: walk.unsort(col) for name, col in out.items() if name in needed}


def _distinct_counts(
    walk: _Walk, values: np.ndarray, rows: np.ndarray, q_arrival: np.ndarray | None
) -> np.ndarray:
    """Distinct values per slice (walk order): its points with no equal value before them."""
    n = walk.order.shape[0]
    distinct = np.zeros(n)
    if q_arrival is not None:  # the masked few: the distinct values of the points kept
        for i in range(n):
            pos = np.arange(walk.s[i], walk.e[i])
            distinct[i] = len(set(values[pos[rows[pos] <= q_arrival[i]]].tolist()))
        return distinct
    previous = _previous_equal(values)
    for m, pos in walk:
        distinct[:m] += previous[pos] < walk.s[:m]
    return distinct


def _previous_equal(values: np.ndarray) -> np.ndarray:
    """Per position, the last earlier position holding an equal value, or -1.

    Keys need no care: a slice never crosses a key, so an equal value of another key lies
    before the slice's start, which counts like no equal value at all.
    """
    order = np.lexsort((np.arange(values.shape[0]), values))
    previous = np.full(values.shape[0], -1)
    same = values[order[1:]] == values[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    return previous
