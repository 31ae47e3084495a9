"""The feature section of a pipeline file: durations, every refusal, and the spec hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from streams.errors import ConfigError
from streams.features.spec import (
    Entity,
    FeatureSpec,
    StateConfig,
    check_features,
    parse_duration,
    parse_entities,
    parse_feature,
    parse_state,
)
from streams.pipeline import Pipeline, load_pipeline
from streams.settings import DEMO_PIPELINE, Settings
from tests.feature_cases import entities_keyed_by, fraud_pipeline_toml

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
WHERE = "fraud.toml"
EVENT_FIELDS = {
    "id": "long",
    "t": "long",
    "customer": "long",
    "terminal": "long",
    "amount": "double",
}
OUTCOME_FIELDS = {"id": "long", "customer": "long", "terminal": "long", "fraud": "boolean"}
ENTITIES = entities_keyed_by(customer="customer", terminal="terminal")
TEN_MINUTES = StateConfig(allowed_lateness_ms=600_000)


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", 7 * 86_400_000),
        ("12h", 12 * 3_600_000),
        ("30m", 1_800_000),
        ("10s", 10_000),
        ("250ms", 250),
        (" 1 d ", 86_400_000),
        ("0s", 0),
        (1500, 1500),
    ],
)
def test_parse_duration(text: str | int, ms: int) -> None:
    assert parse_duration(text, WHERE) == ms


@pytest.mark.parametrize("text", ["7", "7 days", "1.5h", "-1d", "7D", "", "d", True, 1.5])
def test_parse_duration_refuses_what_is_not_a_duration(text: Any) -> None:
    with pytest.raises(ConfigError, match=r"fraud\.toml: .* is not a duration") as err:
        parse_duration(text, WHERE)
    assert err.value.hint is not None and "'7d'" in err.value.hint


# --- parse_entities, parse_state, parse_feature ---------------------------------------------


@pytest.mark.parametrize("body", [{}, {"key": "customer"}, "customer"])
def test_an_entity_needs_a_key_field(body: Any) -> None:
    with pytest.raises(ConfigError, match=r"\[entities\.card\] needs key_field"):
        parse_entities({"card": body}, WHERE)


def test_state_defaults_and_refusals() -> None:
    assert parse_state({}, WHERE) == StateConfig(3_600_000, "score")
    assert parse_state({"allowed_lateness": "10m", "late_policy": "dead_letter"}, WHERE) == (
        StateConfig(600_000, "dead_letter")
    )
    with pytest.raises(ConfigError, match="late_policy 'drop'") as err:
        parse_state({"late_policy": "drop"}, WHERE)
    assert err.value.hint is not None and "dead_letter" in err.value.hint
    with pytest.raises(ConfigError, match="'soon' is not a duration"):
        parse_state({"allowed_lateness": "soon"}, WHERE)


def test_parse_feature_reads_every_key() -> None:
    raw = {
        "name": "n",
        "kind": "window",
        "entity": "terminal",
        "agg": "mean",
        "field": "amount",
        "window": "30d",
        "delay": "7d",
    }
    assert parse_feature(raw, WHERE) == FeatureSpec(
        "n",
        "window",
        field="amount",
        entity="terminal",
        agg="mean",
        window_ms=30 * 86_400_000,
        delay_ms=7 * 86_400_000,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "a", "kind": "average"}, r"feature 'a' has kind 'average'"),
        ({"name": "a"}, r"feature 'a' has kind ''"),
        ({"name": "a", "kind": "window", "window": "1d"}, r"feature 'a' needs agg = one of"),
        ({"name": "a", "kind": "window", "agg": "median", "window": "1d"}, "needs agg = one of"),
        (
            {"name": "a", "kind": "window", "agg": "sum", "window": "1d"},
            r"feature 'a' \(sum\) needs field",
        ),
        ({"name": "a", "kind": "window", "agg": "count"}, r"feature 'a' needs window = e\.g\."),
        ({"name": "a", "kind": "window", "agg": "count", "window": "0d"}, "needs window"),
        ({"name": "a", "kind": "label_count", "entity": "t"}, r"feature 'a' needs window"),
        ({"name": "a", "kind": "label_rate", "entity": "t"}, r"feature 'a' needs window"),
        ({"name": "a", "kind": "window", "agg": "count", "window": "1 week"}, "not a duration"),
        (
            {"name": "a", "kind": "window", "agg": "count", "window": "1d", "delay": "a week"},
            "'a week' is not a duration",
        ),
    ],
)
def test_parse_feature_refusals(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_feature(raw, WHERE)
    assert str(err.value).startswith(WHERE)


def test_an_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ConfigError) as err:
        parse_feature({"name": "a", "kind": "avg"}, WHERE)
    assert err.value.hint is not None and "label_rate" in err.value.hint


# --- check_features --------------------------------------------------------------------------


def check(
    *features: FeatureSpec,
    state: StateConfig = TEN_MINUTES,
    outcomes: dict[str, Any] | None = OUTCOME_FIELDS,
    entities: dict[str, Entity] = ENTITIES,
) -> None:
    check_features(features, entities, state, EVENT_FIELDS, outcomes, "customer", WHERE)


def window(name: str, entity: str = "customer", **kw: Any) -> FeatureSpec:
    return FeatureSpec(name, "window", entity=entity, agg="count", window_ms=86_400_000, **kw)


def test_a_valid_section_passes() -> None:
    check(
        FeatureSpec("amount", "field", field="amount"),
        FeatureSpec("night", "hour_at_most", field="t", hour=6),
        window("n1"),
        FeatureSpec(
            "avg", "window", field="amount", entity="customer", agg="mean", window_ms=86_400_000
        ),
        window("t1", "terminal", delay_ms=7 * 86_400_000),
        FeatureSpec(
            "risk", "label_rate", entity="terminal", window_ms=86_400_000, delay_ms=600_001
        ),
        FeatureSpec("last", "last_value", field="amount", entity="customer"),
        FeatureSpec("gap", "time_since_previous", entity="customer"),
        FeatureSpec("r", "ratio", numerator="amount", denominator="avg"),
    )


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ((window("n"), window("n")), r"two features are named 'n'"),
        ((FeatureSpec("a", "field", field="amt"),), r"feature 'a' reads unknown field 'amt'"),
        (
            (FeatureSpec("a", "window", field="amt", entity="customer", agg="sum", window_ms=1),),
            r"feature 'a' reads unknown field 'amt'",
        ),
        (
            (FeatureSpec("a", "last_value", field="amt", entity="customer"),),
            "reads unknown field 'amt'",
        ),
        ((FeatureSpec("a", "weekend"),), r"feature 'a' needs field"),
        ((FeatureSpec("a", "last_value", entity="customer"),), r"feature 'a' needs field"),
        ((window("a", "card"),), r"feature 'a' names entity 'card'"),
        ((window("a", None),), r"feature 'a' names entity None"),  # type: ignore[arg-type]
        (
            (FeatureSpec("r", "ratio", numerator="a", denominator="b"),),
            r"ratio 'r' must name two features declared before it",
        ),
        (
            (FeatureSpec("r", "ratio", numerator="n", denominator="m"), window("n"), window("m")),
            r"ratio 'r' must name two features declared before it",
        ),
        (
            (window("n"), FeatureSpec("r", "ratio", numerator="n", denominator="r")),
            r"ratio 'r' must name two features",
        ),
        ((window("n"), FeatureSpec("r", "ratio", numerator="n")), r"ratio 'r' must name two"),
    ],
)
def test_check_features_refusals(features: tuple[FeatureSpec, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        check(*features)
    assert str(err.value).startswith(WHERE)


def test_an_unknown_entity_hint_lists_the_declared_ones() -> None:
    with pytest.raises(ConfigError) as err:
        check(window("a", "card"))
    assert err.value.hint is not None
    assert "[entities.card]" in err.value.hint and "'customer', 'terminal'" in err.value.hint


def test_an_entity_key_must_be_an_event_field() -> None:
    entities = {**ENTITIES, "merchant": Entity("merchant", "merchant_id")}
    with pytest.raises(ConfigError, match=r"entity merchant key 'merchant_id' is not a field"):
        check(window("a", "merchant"), entities=entities)


@pytest.mark.parametrize("delay_ms", [0, 1, 600_000])
def test_a_non_partition_entity_window_without_enough_delay_is_refused(delay_ms: int) -> None:
    for feature in (
        window("a", "terminal", delay_ms=delay_ms),
        FeatureSpec("a", "label_count", entity="terminal", window_ms=1, delay_ms=delay_ms),
        FeatureSpec("a", "label_rate", entity="terminal", window_ms=1, delay_ms=delay_ms),
    ):
        with pytest.raises(ConfigError, match=r"feature 'a' keeps state per terminal") as err:
            check(feature)
        assert "not the partition key (customer)" in str(err.value)
        assert err.value.hint is not None and "delay" in err.value.hint
    check(window("a", "terminal", delay_ms=600_001))  # one millisecond over the lateness


@pytest.mark.parametrize("kind", ["last_value", "time_since_previous"])
def test_previous_event_features_only_per_the_partition_key(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"feature 'p' keeps state per terminal"):
        check(FeatureSpec("p", kind, field="amount", entity="terminal", delay_ms=86_400_000))


def test_label_features_need_outcomes_with_the_entity_key() -> None:
    risk = FeatureSpec("risk", "label_count", entity="terminal", window_ms=1, delay_ms=600_001)
    with pytest.raises(ConfigError, match=r"feature 'risk' needs an \[outcomes\] section"):
        check(risk, outcomes=None)
    lacking = {k: v for k, v in OUTCOME_FIELDS.items() if k != "terminal"}
    with pytest.raises(ConfigError, match=r"outcomes lack 'terminal', needed by 'risk'"):
        check(risk, outcomes=lacking)


# --- through load_pipeline -------------------------------------------------------------------

PIPELINE = fraud_pipeline_toml(
    """
[[features]]
name = "TX_AMOUNT"
kind = "field"
field = "tx_amount"
[[features]]
name = "CUSTOMER_NB_TX_1D"
kind = "window"
entity = "customer"
agg = "count"
window = "1d"
[[features]]
name = "TERMINAL_NB_TX_1D"
kind = "window"
entity = "terminal"
agg = "count"
window = "1d"
delay = "7d"
[[features]]
name = "TERMINAL_RISK_1D"
kind = "label_rate"
entity = "terminal"
window = "1d"
delay = "7d"
""",
    late_policy=None,
)


def load(tmp_path: Path, text: str) -> Pipeline:
    path = tmp_path / "fraud.toml"
    path.write_text(text)
    return load_pipeline(path, SCHEMAS)


def test_load_pipeline_parses_the_feature_section(tmp_path: Path) -> None:
    pipeline = load(tmp_path, PIPELINE)
    assert pipeline.entities["terminal"] == Entity("terminal", "terminal_id")
    assert pipeline.state == StateConfig(600_000, "score")
    risk = pipeline.features[3]
    assert (risk.kind, risk.window_ms, risk.delay_ms) == ("label_rate", 86_400_000, 604_800_000)


def test_load_pipeline_refuses_a_terminal_window_without_delay_naming_the_file(
    tmp_path: Path,
) -> None:
    text = PIPELINE.replace('delay = "7d"', 'delay = "5m"', 1)
    with pytest.raises(ConfigError, match="TERMINAL_NB_TX_1D' keeps state per terminal") as err:
        load(tmp_path, text)
    assert str(tmp_path / "fraud.toml") in str(err.value)


# --- the spec hash ---------------------------------------------------------------------------


def with_feature(pipeline: Pipeline, index: int, **changes: Any) -> Pipeline:
    features = list(pipeline.features)
    features[index] = dataclasses.replace(features[index], **changes)
    return dataclasses.replace(pipeline, features=tuple(features))


def test_spec_hash_is_stable_for_the_same_spec(tmp_path: Path) -> None:
    assert load(tmp_path, PIPELINE).feature_spec_hash == load(tmp_path, PIPELINE).feature_spec_hash


@pytest.mark.parametrize(
    ("index", "changes"),
    [
        (1, {"window_ms": 2 * 86_400_000}),
        (1, {"delay_ms": 1}),
        (1, {"agg": "sum", "field": "tx_amount"}),
        (1, {"entity": "terminal"}),
        (2, {"window_ms": 86_400_001}),
        (2, {"delay_ms": 8 * 86_400_000}),
        (3, {"window_ms": 7 * 86_400_000}),
        (3, {"delay_ms": 6 * 86_400_000}),
        (3, {"kind": "label_count"}),
        (0, {"field": "terminal_id"}),
        (0, {"name": "AMOUNT"}),
    ],
)
def test_spec_hash_changes_with_any_window_parameter(
    tmp_path: Path, index: int, changes: dict[str, Any]
) -> None:
    pipeline = load(tmp_path, PIPELINE)
    assert with_feature(pipeline, index, **changes).feature_spec_hash != pipeline.feature_spec_hash


def test_spec_hash_changes_with_entities_state_and_order(tmp_path: Path) -> None:
    pipeline = load(tmp_path, PIPELINE)
    others = [
        dataclasses.replace(pipeline, state=StateConfig(600_001, "score")),
        dataclasses.replace(pipeline, state=StateConfig(600_000, "dead_letter")),
        dataclasses.replace(
            pipeline, entities={**pipeline.entities, "terminal": Entity("terminal", "customer_id")}
        ),
        dataclasses.replace(pipeline, features=pipeline.features[::-1]),
    ]
    hashes = {pipeline.feature_spec_hash, *(p.feature_spec_hash for p in others)}
    assert len(hashes) == len(others) + 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"hour": 24}, r"hour = 24"),
        ({"hour": "night"}, r"hour must be an integer"),
        ({"default": "none"}, r"default a number"),
    ],
)
def test_bad_hour_or_default_is_a_config_error(raw: dict[str, Any], message: str) -> None:
    base = {"name": "NIGHT", "kind": "hour_at_most", "field": "tx_datetime"}
    with pytest.raises(ConfigError, match=message):
        parse_feature({**base, **raw}, WHERE)


def test_stateful_feature_without_entity_says_which_entities_exist(tmp_path: Path) -> None:
    settings = Settings()
    path = tmp_path / "fraud.toml"
    path.write_text(DEMO_PIPELINE.read_text().replace('entity = "customer"\n', "", 1))
    with pytest.raises(ConfigError, match="names entity None: a window feature") as err:
        load_pipeline(path, settings.schemas_dir)
    assert err.value.hint is not None and "customer" in err.value.hint
