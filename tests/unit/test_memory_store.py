"""The in-memory online store equals the reference's stateful columns, batch by batch.

The random cases here (``cases()``, ``check_case``) are also run against Redis by
tests/integration/test_redis_store.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.features.memory_store import MemoryStore
from streams.features.online import (
    PARTITION_ENTITY,
    EntityPlan,
    OnlineStore,
    StatefulBlock,
    StatePlan,
)
from streams.features.reference import reference_features
from streams.features.spec import AGGREGATES, FeatureSpec
from streams.pipeline import Pipeline
from tests.feature_cases import stack_blocks
from tests.feature_cases import store_event as ev
from tests.feature_cases import store_pipeline as make_pipeline

WINDOW_KINDS = ("window", "window", "window", "label_count", "label_rate")


@dataclass
class Case:
    pipeline: Pipeline
    events: list[dict[str, Any]]  # arrival order
    outcomes: list[dict[str, Any]]
    batches: list[int]  # sizes of consecutive update_and_read calls
    outcome_batches: list[int]

    def __repr__(self) -> str:  # what hypothesis prints for a failing case
        p = self.pipeline
        return (
            f"Case(lateness={p.state.allowed_lateness_ms}, policy={p.state.late_policy},\n"
            f"  features={list(p.features)},\n  events={self.events},\n"
            f"  outcomes={self.outcomes},\n  batches={self.batches})"
        )


# --- strategies -----------------------------------------------------------------------------


@st.composite
def feature_specs(draw: st.DrawFn, lateness: int, other: bool) -> list[FeatureSpec]:
    """1-5 stateful features (and maybe a stateless one and a ratio between them); ``other``
    allows features of the term entity (delay over the lateness, as load_pipeline requires)."""
    specs: list[FeatureSpec] = []
    for i in range(draw(st.integers(1, 5))):
        entity = draw(st.sampled_from(["cust", "term"])) if other else "cust"
        kinds = (
            WINDOW_KINDS
            if entity == "term"
            else (*WINDOW_KINDS, "last_value", "time_since_previous")
        )
        kind = draw(st.sampled_from(kinds))
        name = f"f{i}"
        if kind in ("last_value", "time_since_previous"):
            specs.append(
                FeatureSpec(
                    name,
                    kind,
                    field="amount",
                    entity=entity,
                    default=draw(st.sampled_from([0.0, -1.0, 7.5])),
                )
            )
            continue
        delay = draw(
            st.integers(lateness + 1, lateness + 15) if entity == "term" else st.integers(0, 8)
        )
        window = draw(st.integers(1, 40))
        if kind == "window":
            agg = draw(st.sampled_from(AGGREGATES))
            field = None if agg == "count" and draw(st.booleans()) else "amount"
            specs.append(
                FeatureSpec(
                    name,
                    kind,
                    field=field,
                    entity=entity,
                    agg=agg,
                    window_ms=window,
                    delay_ms=delay,
                )
            )
        else:
            specs.append(FeatureSpec(name, kind, entity=entity, window_ms=window, delay_ms=delay))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(specs)))
        specs.insert(at, FeatureSpec("amount", "field", field="amount"))
    if draw(st.booleans()):
        num, den = draw(st.sampled_from(specs)), draw(st.sampled_from(specs))
        specs.append(FeatureSpec("ratio", "ratio", numerator=num.name, denominator=den.name))
    return specs


AMOUNTS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.5, -1.0, 0.1, 0.2, 0.3, 1e16, 9999.99]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def cases(draw: st.DrawFn, max_events: int = 40) -> Case:
    """A small pipeline and a stream on 3 customers and 2 terminals, so windows collide.

    Disorder: "within" — every event arrives less than the lateness after its time (the
    online store's assumption for other entities: nothing late); "any" — any order (only for
    pipelines keyed by the partition key alone); "late" — the "within" stream plus events
    more than the lateness behind their customer (dropped under dead_letter; under score
    only for pipelines keyed by the partition key alone). Redeliveries keep the time and keys
    of the event they repeat (an id names one event; the first one's values count).
    """
    lateness = draw(st.integers(0, 12))
    policy = draw(st.sampled_from(["score", "dead_letter"]))
    other = draw(st.booleans())
    features = draw(feature_specs(lateness, other))
    pipeline = make_pipeline(features, lateness, policy)
    only_partition = all(f.entity == "cust" for f in features if f.stateful)
    modes = ["within"]
    if only_partition:
        modes.append("any")
    if only_partition or policy == "dead_letter":
        modes.append("late")
    mode = draw(st.sampled_from(modes))

    n = draw(st.integers(0, max_events))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    base: list[dict[str, Any]] = [
        {
            "id": i,
            "t": draw(st.integers(0, 150)),
            "cust": draw(st.integers(0, 2)),
            "term": draw(st.integers(0, 1)),
            "amount": draw(AMOUNTS),
        }
        for i in ids
    ]
    jitter = st.integers(0, max(0, lateness - 1))
    arrivals = [(e["t"] + draw(jitter), e) for e in base]
    for _ in range(draw(st.integers(0, 4)) if base else 0):  # redeliveries
        e = dict(draw(st.sampled_from(base)))
        if draw(st.booleans()):
            e["amount"] = draw(AMOUNTS)
        arrivals.append((e["t"] + draw(jitter), e))
    events = [e for _, e in sorted(arrivals, key=lambda a: a[0])]  # stable: draw order on ties
    if mode == "any":
        events = draw(st.permutations(events))
    elif mode == "late":
        for k in range(draw(st.integers(1, 5)) if events else 0):
            at = draw(st.integers(0, len(events) - 1))
            newer = events[at]
            if newer["t"] <= lateness:
                continue
            late = {
                # an id names one event: a new late event gets an id of its own
                "id": draw(st.sampled_from([*ids, 10_001 + k])),
                "cust": newer["cust"],
                "t": draw(st.integers(0, newer["t"] - lateness - 1)),
                "term": draw(st.integers(0, 1)),
                "amount": draw(AMOUNTS),
            }
            if late["id"] in ids:  # a late redelivery
                first = next(e for e in base if e["id"] == late["id"])
                if first["cust"] != newer["cust"] or first["t"] >= newer["t"] - lateness:
                    continue
                late = dict(first)
            events.insert(draw(st.integers(at + 1, len(events))), late)

    outcomes = []
    for e in draw(st.lists(st.sampled_from(base), max_size=25)) if base else []:
        outcomes.append(
            {
                "id": e["id"],
                "t": e["t"],
                "cust": e["cust"],
                "term": e["term"],
                "known": e["t"] + draw(st.integers(0, 40)),
                "label": draw(st.booleans()),
            }
        )
    return Case(pipeline, events, outcomes, draw(splits(len(events))), draw(splits(len(outcomes))))


def splits(n: int) -> st.SearchStrategy[list[int]]:
    """Batch sizes summing to n."""
    return st.lists(st.integers(1, max(1, n)), max_size=n).map(lambda sizes: _fit(sizes, n))


def _fit(sizes: list[int], n: int) -> list[int]:
    out, left = [], n
    for s in sizes:
        if left == 0:
            break
        out.append(min(s, left))
        left -= out[-1]
    return [*out, left] if left else out


# --- the check ------------------------------------------------------------------------------


def run(store: OnlineStore, case: Case) -> tuple[StatefulBlock, int]:
    new, at = 0, 0
    for size in case.outcome_batches:
        new += store.add_outcomes(case.outcomes[at : at + size])
        at += size
    blocks, at = [], 0
    for size in case.batches:
        blocks.append(store.update_and_read(case.events[at : at + size]))
        at += size
    assert at == len(case.events)
    n_stateful = sum(f.stateful for f in case.pipeline.features)
    if not blocks:
        return StatefulBlock(np.zeros((0, n_stateful)), np.zeros(0, bool), np.zeros(0, bool)), new
    return stack_blocks(blocks), new


def check_case(case: Case, make_store: Callable[[Pipeline], OnlineStore]) -> None:
    """The store's columns equal the reference's (see ``maybe_trimmed`` for the exception)."""
    pipeline = case.pipeline
    store = make_store(pipeline)
    got, new = run(store, case)
    want = reference_features(pipeline, case.events, case.outcomes)
    stateful = [j for j, f in enumerate(pipeline.features) if f.stateful]
    expected = want.X[:, stateful]
    np.testing.assert_array_equal(got.late, want.late)
    np.testing.assert_array_equal(got.dropped, want.dropped)
    has_labels = any(f.kind in ("label_count", "label_rate") for f in pipeline.features)
    assert new == (len({o["id"] for o in case.outcomes}) if has_labels else 0)
    assert got.values.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(expected))
    rows = ~maybe_trimmed(case, want.late)
    diff = np.abs(np.nan_to_num(got.values[rows] - expected[rows], nan=0.0))
    assert diff.size == 0 or diff.max() <= 1e-9, (
        np.argwhere(diff > 1e-9)[:5],
        got.values[rows][diff.max(axis=1) > 1e-9][:3],
        expected[rows][diff.max(axis=1) > 1e-9][:3],
    )


def maybe_trimmed(case: Case, late: np.ndarray) -> np.ndarray:
    """Rows where the store rightly differs from the reference: late events scored under
    policy score whose windows reach state the store has trimmed (older than its key's newest
    time - retention, which no on-time event reads)."""
    pipeline = case.pipeline
    out = np.zeros(len(case.events), dtype=bool)
    if pipeline.state.late_policy != "score" or not late.any():
        return out
    plan = StatePlan.of(pipeline)
    first: dict[str, Mapping[str, Any]] = {}
    for o in case.outcomes:
        first.setdefault(str(o["id"]), o)
    added: list[Mapping[str, Any]] = []
    for a, e in enumerate(case.events):
        if late[a]:
            out[a] = any(_reads_trimmed(x, e, added, first.values()) for x in plan.entities)
        if all(str(x["id"]) != str(e["id"]) for x in added):
            added.append(e)
    return out


def _reads_trimmed(
    entity: EntityPlan,
    e: Mapping[str, Any],
    added: Sequence[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
) -> bool:
    mine = [x for x in added if x[entity.key_field] == e[entity.key_field]]
    if not mine:
        return False
    horizon = max(x["t"] for x in mine) - entity.retention_ms
    gone = sorted((x["t"], str(x["id"])) for x in mine if x["t"] < horizon)
    if entity.keeps_previous and gone:
        gone.pop()  # the newest entry below the horizon is kept for last_value
    if any(x == e for x in mine):  # an identical redelivery of a trimmed event: added again
        gone = [g for g in gone if g[1] != str(e["id"])]
    gone_labels = [
        o["t"] for o in outcomes if o[entity.key_field] == e[entity.key_field] and o["t"] < horizon
    ]
    for f in entity.features:
        if f.kind in ("last_value", "time_since_previous"):
            before = [
                (x["t"], str(x["id"]))
                for x in mine
                if x["t"] <= e["t"] and str(x["id"]) != str(e["id"])
            ]
            if before and max(before) in gone:
                return True
            continue
        lo, hi = e["t"] - f.delay_ms - f.window_ms, e["t"] - f.delay_ms
        if any(lo < t <= hi for t, _ in gone):
            return True
        if f.kind != "window" and any(lo < t <= hi for t in gone_labels):
            return True
    return False


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_memory_store_equals_the_reference_in_any_batches(case: Case) -> None:
    check_case(case, MemoryStore)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_redelivering_every_batch_changes_no_later_feature(case: Case) -> None:
    once, twice = MemoryStore(case.pipeline), MemoryStore(case.pipeline)
    want, _ = run(once, case)
    got = []
    for outcomes in (case.outcomes, case.outcomes):
        twice.add_outcomes(outcomes)
    at = 0
    for size in case.batches:
        batch = case.events[at : at + size]
        got.append(twice.update_and_read(batch).values)
        twice.update_and_read(batch)  # a crash before the commit: the batch comes again
        at += size
    values = np.vstack(got) if got else want.values
    np.testing.assert_array_equal(np.isnan(values), np.isnan(want.values))
    assert np.allclose(values, want.values, rtol=0, atol=1e-9, equal_nan=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(max_events=60))
def test_state_is_bounded_by_the_retention(case: Case) -> None:
    store = MemoryStore(case.pipeline)
    run(store, case)
    entities = {e.name: e for e in store.plan.entities}
    for (name, _), state in store._keys.items():
        entity = entities[name]
        if not state.events:
            continue
        horizon = state.events[-1][0] - entity.retention_ms
        kept = [t for t, _ in state.events if t < horizon]
        assert len(kept) <= (1 if entity.keeps_previous else 0)
        assert set(state.values) == {x for _, x in state.events}


# --- by hand --------------------------------------------------------------------------------


def test_windows_late_events_and_redeliveries_by_hand() -> None:
    count = FeatureSpec("n", "window", entity="cust", agg="count", window_ms=100)
    total = FeatureSpec("s", "window", field="amount", entity="cust", agg="sum", window_ms=100)
    last = FeatureSpec("last", "last_value", field="amount", entity="cust", default=-1.0)
    events = [
        ev(1, 50, amount=1.0),
        ev(2, 60, amount=2.0),
        ev(3, 55, amount=4.0),  # within lateness: sees 1, not 2
        ev(4, 40, amount=8.0),  # late (60 - 10 > 40)
        ev(2, 60, amount=2.0),  # redelivery: the state now, adds nothing
    ]
    scored = MemoryStore(make_pipeline([count, total, last], lateness=10))
    block = scored.update_and_read(events[:2])
    rest = scored.update_and_read(events[2:])
    assert [*block.late, *rest.late] == [False, False, False, True, False]
    assert [*block.values.tolist(), *rest.values.tolist()] == [
        [1, 1, -1],
        [2, 3, 1],
        [2, 5, 1],
        [1, 8, -1],
        [4, 15, 4],
    ]
    dead = MemoryStore(make_pipeline([count, total, last], lateness=10, policy="dead_letter"))
    block = dead.update_and_read(events)
    assert block.dropped.tolist() == [False, False, False, True, False]
    assert np.isnan(block.values[3]).all()
    assert block.values[4].tolist() == [3, 7, 4]


def test_terminal_label_rate_counts_outcomes_from_when_they_are_known() -> None:
    n = FeatureSpec("n", "window", entity="term", agg="count", window_ms=10, delay_ms=20)
    rate = FeatureSpec("r", "label_rate", entity="term", window_ms=10, delay_ms=20)
    store = MemoryStore(make_pipeline([n, rate], lateness=5))
    outcome = {"id": 1, "t": 100, "cust": 0, "term": 7, "label": True, "known": 125}
    assert store.add_outcomes([outcome, {**outcome, "label": False}]) == 1
    assert store.add_outcomes([outcome]) == 0
    block = store.update_and_read(
        [
            ev(1, 100, cust=1, term=7),
            ev(2, 105, cust=2, term=7),
            ev(3, 124, cust=3, term=7),
            ev(4, 125, cust=4, term=7),
        ]
    )
    # event 3: window (94, 104] holds event 1, whose fraud is known only from 125 on
    assert block.values[2:].tolist() == [[1, 0.0], [2, 0.5]]


def test_plan_puts_the_lateness_deciding_entity_first() -> None:
    term_only = make_pipeline(
        [FeatureSpec("n", "window", entity="term", agg="count", window_ms=10, delay_ms=20)], 5
    )
    plan = StatePlan.of(term_only)
    assert [e.name for e in plan.entities] == [PARTITION_ENTITY, "term"]
    assert plan.entities[0].decides_lateness and plan.entities[0].key_field == "cust"
    assert plan.entities[1].retention_ms == 35 and plan.entities[1].ttl_ms == 86_400_000
    block = MemoryStore(term_only).update_and_read([ev(1, 50), ev(2, 40), ev(1, 50)])
    assert block.late.tolist() == [False, True, False]
