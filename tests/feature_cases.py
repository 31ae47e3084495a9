"""Builders the feature tests share: small synthetic pipelines and their records, and the
demo's fraud pipeline file. A plain module (not a conftest): tests import what they use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.features.online import StatefulBlock
from streams.features.spec import Entity, FeatureSpec, StateConfig, check_features
from streams.pipeline import Pipeline, RecordSpec

# --- small synthetic pipelines ---------------------------------------------------------------


def avro_record(name: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """An Avro record schema with the given field name -> type, in that order."""
    return {
        "type": "record",
        "name": name,
        "fields": [{"name": field, "type": type_} for field, type_ in fields.items()],
    }


def entities_keyed_by(**key_fields: str) -> dict[str, Entity]:
    """Entities by name, each keyed by the field given: ``entities_keyed_by(own="k")``."""
    return {name: Entity(name, key) for name, key in key_fields.items()}


def checked_pipeline(
    features: Iterable[FeatureSpec],
    events: RecordSpec,
    outcomes: RecordSpec,
    entities: dict[str, Entity],
    state: StateConfig,
    *,
    name: str,
    model_name: str,
) -> Pipeline:
    """A pipeline built in code (source ``<name>.toml``) after load_pipeline's cross-checks;
    the events' key field is the partition key."""
    assert events.key_field is not None
    feats = tuple(features)
    check_features(feats, entities, state, events.fields, outcomes.fields, events.key_field, "test")
    return Pipeline(
        name, events, outcomes, feats, model_name, Path(f"{name}.toml"), entities, state
    )


# The online-store cases: cust is the topic's key (the partition-key entity), term another.
STORE_EVENT_SCHEMA = avro_record(
    "Ev", {"id": "long", "t": "long", "cust": "long", "term": "long", "amount": "double"}
)
STORE_OUTCOME_SCHEMA = avro_record(
    "Out",
    {
        "id": "long",
        "known": "long",
        "t": "long",
        "cust": "long",
        "term": "long",
        "label": "boolean",
    },
)
STORE_ENTITIES = entities_keyed_by(cust="cust", term="term")


def store_pipeline(
    features: Sequence[FeatureSpec], lateness: int = 5, policy: str = "score"
) -> Pipeline:
    """Events keyed by cust, another entity term; outcomes known at ``known``; times in ms."""
    # no cross-partition margin: these streams have no partitions (see streams.pacing)
    state = StateConfig(allowed_lateness_ms=lateness, late_policy=policy, partition_skew_ms=0)
    events = RecordSpec(STORE_EVENT_SCHEMA, id_field="id", time_field="t", key_field="cust")
    outcomes = RecordSpec(
        STORE_OUTCOME_SCHEMA,
        id_field="id",
        time_field="known",
        label_field="label",
        event_time_field="t",
    )
    return checked_pipeline(
        features, events, outcomes, STORE_ENTITIES, state, name="p", model_name="m"
    )


def store_event(
    i: int, t: int, cust: int = 0, term: int = 0, amount: float = 1.0
) -> dict[str, Any]:
    """An event of ``store_pipeline``."""
    return {"id": i, "t": t, "cust": cust, "term": term, "amount": amount}


def stack_blocks(blocks: Sequence[StatefulBlock]) -> StatefulBlock:
    """Consecutive batches' stateful blocks as one (at least one block)."""
    return StatefulBlock(
        np.vstack([b.values for b in blocks]),
        np.concatenate([b.late for b in blocks]),
        np.concatenate([b.dropped for b in blocks]),
    )


# --- the demo's fraud pipeline file (schemas/transaction.avsc, outcome.avsc) ----------------


def fraud_pipeline_toml(features: str, late_policy: str | None = "score") -> str:
    """The fraud pipeline file: transactions keyed by customer, outcomes, the customer and
    terminal entities, 10 minutes' allowed lateness (and ``late_policy`` unless None), and
    the ``[[features]]`` tables given."""
    policy = f'late_policy = "{late_policy}"\n' if late_policy is not None else ""
    return (
        """
name = "fraud"
[events]
schema = "transaction.avsc"
id_field = "transaction_id"
key_field = "customer_id"
time_field = "tx_datetime"
[outcomes]
schema = "outcome.avsc"
id_field = "transaction_id"
time_field = "outcome_datetime"
label_field = "is_fraud"
event_time_field = "tx_datetime"
[entities.customer]
key_field = "customer_id"
[entities.terminal]
key_field = "terminal_id"
[state]
allowed_lateness = "10m"
"""
        + policy
        + features.lstrip("\n")
    )


# The handbook's 15 baseline features (notes/fraud-demo.md), as the demo pipeline declares them.
FRAUD15_FEATURES = (
    """
[[features]]
name = "TX_AMOUNT"
kind = "field"
field = "tx_amount"
[[features]]
name = "TX_DURING_WEEKEND"
kind = "weekend"
field = "tx_datetime"
[[features]]
name = "TX_DURING_NIGHT"
kind = "hour_at_most"
field = "tx_datetime"
hour = 6
"""
    + "".join(
        f"""
[[features]]
name = "CUSTOMER_ID_NB_TX_{d}DAY_WINDOW"
kind = "window"
entity = "customer"
agg = "count"
window = "{d}d"
[[features]]
name = "CUSTOMER_ID_AVG_AMOUNT_{d}DAY_WINDOW"
kind = "window"
entity = "customer"
agg = "mean"
field = "tx_amount"
window = "{d}d"
"""
        for d in (1, 7, 30)
    )
    + "".join(
        f"""
[[features]]
name = "TERMINAL_ID_NB_TX_{d}DAY_WINDOW"
kind = "window"
entity = "terminal"
agg = "count"
window = "{d}d"
delay = "7d"
[[features]]
name = "TERMINAL_ID_RISK_{d}DAY_WINDOW"
kind = "label_rate"
entity = "terminal"
window = "{d}d"
delay = "7d"
"""
        for d in (1, 7, 30)
    )
)
FRAUD15_TOML = fraud_pipeline_toml(FRAUD15_FEATURES)
