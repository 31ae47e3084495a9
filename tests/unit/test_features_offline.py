"""The vectorised offline path equals the reference definition, on any input (|Δ| <= 1e-9)."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.features.assemble import assemble
from streams.features.offline import offline_features
from streams.features.reference import FeatureResult, reference_features
from streams.features.spec import AGGREGATES, FeatureSpec, StateConfig
from streams.features.stateless import MS_PER_DAY
from streams.pipeline import Pipeline, RecordSpec, load_pipeline
from tests.feature_cases import FRAUD15_TOML, avro_record, checked_pipeline, entities_keyed_by

# On a failure hypothesis's pytest plugin imports libcst, whose import warns (mypy_extensions
# TypedDict); with warnings as errors that hides the falsifying example behind an INTERNALERROR.
# Importing it once here, quietly, keeps failures readable (better: a pyproject filterwarnings).
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
DAY = MS_PER_DAY

EVENT_SCHEMA = avro_record(
    "E", {"id": "long", "t": "long", "k": "long", "g": "long", "x": "double"}
)
OUTCOME_SCHEMA = avro_record(
    "O",
    {"id": "long", "ot": "long", "et": "long", "k": "long", "g": "long", "label": "boolean"},
)
ENTITIES = entities_keyed_by(own="k", other="g")


def small_pipeline(
    features: list[FeatureSpec], lateness: int = 3, policy: str = "score"
) -> Pipeline:
    """Events keyed by k (entity "own"), another entity "other" keyed by g; times in ms."""
    state = StateConfig(allowed_lateness_ms=lateness, late_policy=policy)
    events = RecordSpec(EVENT_SCHEMA, id_field="id", time_field="t", key_field="k")
    outcomes = RecordSpec(
        OUTCOME_SCHEMA, id_field="id", time_field="ot", label_field="label", event_time_field="et"
    )
    return checked_pipeline(
        features, events, outcomes, ENTITIES, state, name="small", model_name="small"
    )


def assert_same(got: FeatureResult, want: FeatureResult) -> float:
    """Same NaN rows, |Δ| <= 1e-9 elsewhere, same late and dropped; returns the max |Δ|."""
    np.testing.assert_array_equal(got.late, want.late)
    np.testing.assert_array_equal(got.dropped, want.dropped)
    assert got.X.shape == want.X.shape
    np.testing.assert_array_equal(np.isnan(got.X), np.isnan(want.X))
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf
        diff = np.where(got.X == want.X, 0.0, np.abs(got.X - want.X))
    diff = np.nan_to_num(diff, nan=0.0) if diff.size else np.zeros(1)
    assert float(diff.max()) <= 1e-9, np.argwhere(diff > 1e-9)[:5]
    return float(diff.max())


# --- property: random small pipelines and streams -------------------------------------------


@st.composite
def feature_lists(draw: st.DrawFn, lateness: int) -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    for i in range(draw(st.integers(1, 7))):
        kind = draw(
            st.sampled_from(
                [
                    "field",
                    "weekend",
                    "hour_at_most",
                    "window",
                    "window",
                    "window",
                    "label_count",
                    "label_rate",
                    "last_value",
                    "time_since_previous",
                    "ratio",
                ]
            )
        )
        name = f"f{i}"
        own = draw(st.booleans())
        entity = "own" if own or kind in ("last_value", "time_since_previous") else "other"
        window = draw(st.integers(1, 12))
        # another entity's window must end past the allowed lateness (load_pipeline's rule)
        delay = draw(st.integers(0, 6)) if entity == "own" else draw(st.integers(lateness + 1, 9))
        if kind in ("field", "weekend", "hour_at_most"):
            source = "x" if kind == "field" else "t"
            specs.append(FeatureSpec(name, kind, field=source, hour=draw(st.integers(0, 23))))
        elif kind == "window":
            agg = draw(st.sampled_from(AGGREGATES))
            field = None if agg == "count" and draw(st.booleans()) else "x"
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
        elif kind in ("label_count", "label_rate"):
            specs.append(FeatureSpec(name, kind, entity=entity, window_ms=window, delay_ms=delay))
        elif kind in ("last_value", "time_since_previous"):
            specs.append(
                FeatureSpec(
                    name, kind, field="x", entity="own", default=draw(st.sampled_from([0.0, -1.0]))
                )
            )
        elif specs:
            num, den = draw(st.sampled_from(specs)), draw(st.sampled_from(specs))
            specs.append(FeatureSpec(name, "ratio", numerator=num.name, denominator=den.name))
    return specs


VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 2.5, -1.0, 0.1, 0.2, 9999.99]),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
)


@st.composite
def streams_of(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n = draw(st.integers(0, 40))
    times = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    if draw(st.booleans()):  # mostly in order, with a few moved back or forth
        times.sort()
        for _ in range(draw(st.integers(0, 4))):
            if times:
                i = draw(st.integers(0, len(times) - 1))
                times[i] = max(0, times[i] + draw(st.integers(-8, 3)))
    events = [
        {
            "id": draw(st.integers(0, 2 * n + 1)),
            "t": t,
            "k": draw(st.integers(0, 2)),
            "g": draw(st.integers(0, 2)),
            "x": draw(VALUES),
        }
        for t in times
    ]
    for _ in range(draw(st.integers(0, 3))):  # redeliveries: the same record again, later
        if events:
            i = draw(st.integers(0, len(events) - 1))
            events.insert(draw(st.integers(i, len(events))), dict(events[i]))
    outcomes = [
        {
            "id": draw(st.integers(0, 2 * n + 1)),
            "et": (et := draw(st.integers(0, 30))),
            "ot": et + draw(st.integers(-2, 12)),
            "k": draw(st.integers(0, 2)),
            "g": draw(st.integers(0, 2)),
            "label": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(0, 15)))
    ]
    return events, outcomes


@st.composite
def cases(draw: st.DrawFn) -> tuple[Pipeline, list[dict[str, Any]], list[dict[str, Any]]]:
    lateness = draw(st.integers(0, 5))
    policy = draw(st.sampled_from(["score", "dead_letter"]))
    features = draw(feature_lists(lateness))
    events, outcomes = draw(streams_of())
    # Times spread past 2**62 / n: the engine ranks them instead of offsetting (another path)
    scale = draw(st.sampled_from([1, 1, 1, 10**16]))
    if scale > 1:
        lateness *= scale
        features = [
            dataclasses.replace(f, window_ms=f.window_ms * scale, delay_ms=f.delay_ms * scale)
            for f in features
        ]
        events = [{**e, "t": e["t"] * scale} for e in events]
        outcomes = [{**o, "et": o["et"] * scale, "ot": o["ot"] * scale} for o in outcomes]
    if draw(st.booleans()):  # the reference's identities: str(id), and keys by == (1 == 1.0)
        events = [
            {
                **e,
                "id": draw(st.sampled_from([e["id"], str(e["id"])])),
                "k": draw(st.sampled_from([e["k"], float(e["k"])])),
            }
            for e in events
        ]
    return small_pipeline(features, lateness, policy), events, outcomes


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_offline_equals_reference_on_random_pipelines_and_streams(case: Any) -> None:
    pipeline, events, outcomes = case
    assert_same(
        offline_features(pipeline, events, outcomes), reference_features(pipeline, events, outcomes)
    )


# --- the 15-feature fraud pipeline on a light simulation ------------------------------------


@pytest.fixture(scope="module")
def fraud15(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    path = tmp_path_factory.mktemp("pipeline") / "fraud15.toml"
    path.write_text(FRAUD15_TOML)
    pipeline = load_pipeline(path, REPO / "schemas")
    assert len(pipeline.features) == 15
    return pipeline


def test_fraud15_on_a_simulation_with_disorder_and_redeliveries(fraud15: Pipeline) -> None:
    cfg = SimConfig.light(
        n_customers=40,
        n_terminals=80,
        n_days=40,
        outcomes_for="all",
        outcome_jitter_days=1.0,
        compromised_terminals_per_day=0.3,
        seed=3,
    )
    sim = simulate(cfg)
    events = transaction_records(sim)
    outcomes = outcome_records(sim, cfg)
    rng = np.random.default_rng(7)
    lateness = fraud15.state.allowed_lateness_ms
    # 5 % arrive up to the allowed lateness after their time: sort by a jittered arrival
    arrival = np.array([e["tx_datetime"] for e in events], dtype=np.float64)
    moved = rng.random(len(events)) < 0.05
    arrival[moved] += rng.uniform(0, lateness, moved.sum())
    events = [events[i] for i in np.argsort(arrival, kind="stable")]
    for i in sorted(rng.choice(len(events), len(events) // 100, replace=False), reverse=True):
        events.insert(min(len(events), int(i) + int(rng.integers(1, 50))), dict(events[i]))
    rng.shuffle(outcomes)  # any order; each is counted from its own outcome time
    assert 2_500 <= len(events) <= 3_500
    got = offline_features(fraud15, events, outcomes)
    want = reference_features(fraud15, events, outcomes)
    assert_same(got, want)
    # only redeliveries come more than the allowed lateness behind their customer's newest
    first = {e["transaction_id"]: i for i, e in reversed(list(enumerate(events)))}
    assert all(first[events[i]["transaction_id"]] < i for i in np.flatnonzero(got.late))
    assert np.isfinite(got.X).all()
    assert (want.X[:, fraud15.feature_names.index("TERMINAL_ID_RISK_30DAY_WINDOW")] > 0).any()


# --- hand-computed ---------------------------------------------------------------------------


def tx(i: int, t: int, customer: int = 1, terminal: int = 1, amount: float = 10.0) -> dict:
    return {
        "transaction_id": i,
        "tx_datetime": t,
        "customer_id": customer,
        "terminal_id": terminal,
        "tx_amount": amount,
    }


def column(result: FeatureResult, pipeline: Pipeline, name: str) -> np.ndarray:
    return result.X[:, pipeline.feature_names.index(name)]


def test_customer_day_window_includes_the_event_and_excludes_one_exactly_a_day_before(
    fraud15: Pipeline,
) -> None:
    t0 = 100 * DAY
    events = [tx(1, t0, amount=50.0), tx(2, t0 + 1, amount=20.0), tx(3, t0 + DAY, amount=30.0)]
    result = offline_features(fraud15, events)
    assert column(result, fraud15, "CUSTOMER_ID_NB_TX_1DAY_WINDOW").tolist() == [1, 2, 2]
    assert column(result, fraud15, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW").tolist() == [50, 35, 25]
    assert column(result, fraud15, "CUSTOMER_ID_NB_TX_7DAY_WINDOW").tolist() == [1, 2, 3]


def test_terminal_risk_with_a_seven_day_delay(fraud15: Pipeline) -> None:
    t0 = 100 * DAY
    history = [tx(1, t0, customer=1), tx(2, t0 + 3_600_000, customer=2), tx(3, t0 + 2 * DAY)]
    outcomes = [  # tx 2 was fraud, known 7 days later; tx 1 labelled legitimate
        {
            "transaction_id": 2,
            "outcome_datetime": t0 + 3_600_000 + 7 * DAY,
            "tx_datetime": t0 + 3_600_000,
            "customer_id": 2,
            "terminal_id": 1,
            "is_fraud": True,
            "scenario": 2,
        },
        {
            "transaction_id": 1,
            "outcome_datetime": t0 + 7 * DAY,
            "tx_datetime": t0,
            "customer_id": 1,
            "terminal_id": 1,
            "is_fraud": False,
            "scenario": 0,
        },
    ]
    probes = [
        tx(10, t0 + 7 * DAY + 3_600_000, customer=3),  # (t0 + 1h - 1d, t0 + 1h]: tx 1 and 2
        tx(11, t0 + 8 * DAY, customer=4),  # (t0, t0 + 1d]: tx 2 only; tx 1 exactly 1d earlier
        tx(12, t0 + 7 * DAY, customer=5),  # (t0 - 1d, t0]: tx 1; tx 2 not yet in the window
    ]
    result = offline_features(fraud15, history + probes, outcomes)
    nb = column(result, fraud15, "TERMINAL_ID_NB_TX_1DAY_WINDOW")[3:]
    risk = column(result, fraud15, "TERMINAL_ID_RISK_1DAY_WINDOW")[3:]
    assert nb.tolist() == [2, 1, 1]
    assert risk.tolist() == [0.5, 1.0, 0.0]
    # the current transaction never falls in a window that ends 7 days before it
    assert column(result, fraud15, "TERMINAL_ID_NB_TX_30DAY_WINDOW")[:3].tolist() == [0, 0, 0]
    assert_same(result, reference_features(fraud15, history + probes, outcomes))


def test_late_arrival_is_not_seen_by_events_that_arrived_before_it() -> None:
    def over_100ms(name: str, agg: str, field: str | None = "x") -> FeatureSpec:
        return FeatureSpec(name, "window", field=field, entity="own", agg=agg, window_ms=100)

    features = [
        over_100ms("n", "count", None),
        over_100ms("s", "sum"),
        FeatureSpec("last", "last_value", field="x", entity="own", default=-1.0),
        over_100ms("d", "distinct"),
        over_100ms("lo", "min"),
        over_100ms("hi", "max"),
        over_100ms("sd", "std"),
    ]
    pipeline = small_pipeline(features, lateness=10)
    events = [
        {"id": 1, "t": 50, "k": 0, "g": 0, "x": 1.0},
        {"id": 2, "t": 60, "k": 0, "g": 0, "x": 2.0},  # does not see 3, which comes next
        {"id": 3, "t": 55, "k": 0, "g": 0, "x": 4.0},  # within lateness: sees 1, not 2
        {"id": 4, "t": 40, "k": 0, "g": 0, "x": 8.0},  # late (60 - 10 > 40), still scored
        {"id": 2, "t": 60, "k": 0, "g": 0, "x": 2.0},  # redelivery: state now, adds nothing
    ]
    result = offline_features(pipeline, events)
    assert result.late.tolist() == [False, False, False, True, False]
    assert result.X[:, :6].tolist() == [
        [1, 1, -1, 1, 1, 1],
        [2, 3, 1, 2, 1, 2],
        [2, 5, 1, 2, 1, 4],
        [1, 8, -1, 1, 8, 8],
        [4, 15, 4, 4, 1, 8],
    ]
    assert result.X[:, 6] == pytest.approx([0, 0.5, 1.5, 0, np.std([1.0, 2.0, 4.0, 8.0])])
    dead = small_pipeline(features, lateness=10, policy="dead_letter")
    dropped = offline_features(dead, events)
    assert dropped.dropped.tolist() == [False, False, False, True, False]
    assert np.isnan(dropped.X[3]).all()
    assert dropped.X[4, :6].tolist() == [3, 7, 4, 3, 1, 4]
    assert_same(result, reference_features(pipeline, events))
    assert_same(dropped, reference_features(dead, events))


def test_assemble_orders_columns_and_divides_ratios(fraud15: Pipeline) -> None:
    n_stateful = sum(f.stateful for f in fraud15.features)
    events = [tx(1, 0, amount=5.0), tx(2, 1, amount=7.0)]
    stateful = np.arange(2 * n_stateful, dtype=np.float64).reshape(2, n_stateful)
    dropped = np.array([False, True])
    result = assemble(fraud15, events, stateful, np.zeros(2, bool), dropped)
    assert result.X[0, :3].tolist() == [5.0, 0.0, 1.0]  # 1970-01-01 00:00 was a Thursday
    assert result.X[0, 3:].tolist() == stateful[0].tolist()
    assert np.isnan(result.X[1]).all()
    ratio = small_pipeline(
        [
            FeatureSpec("a", "field", field="x"),
            FeatureSpec("n", "window", entity="own", agg="count", window_ms=5),
            FeatureSpec("r", "ratio", numerator="a", denominator="n"),
            FeatureSpec("z", "ratio", numerator="n", denominator="r"),
        ]
    )
    rows = [
        {"id": 1, "t": 0, "k": 0, "g": 0, "x": 3.0},
        {"id": 2, "t": 0, "k": 0, "g": 0, "x": 0.0},
    ]
    got = assemble(ratio, rows, np.array([[2.0], [2.0]]), np.zeros(2, bool), np.zeros(2, bool))
    assert got.X.tolist() == [[3.0, 2.0, 1.5, 2.0 / 1.5], [0.0, 2.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="stateful"):
        assemble(ratio, rows, np.zeros((2, 2)), np.zeros(2, bool), np.zeros(2, bool))
