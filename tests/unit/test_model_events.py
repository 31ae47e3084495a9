"""Serving states (the ModelEvent record): round trip through the schema, what makes one
unservable, the changes `rtscore model` makes, and the swap in a worker that refuses a state
it cannot serve and keeps the serving routing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.registry import Registry
from streams.features.memory_store import MemoryStore
from streams.hot_swap import ModelSwapper, ServingRefused, load_routing
from streams.metrics import WorkerMetrics
from streams.model_events import _decode, codec
from streams.pipeline import load_pipeline
from streams.routing import Routing
from streams.scoring import BatchScorer
from streams.serving_state import (
    ServingState,
    parse_weights,
    with_alias,
    with_shadows,
    with_split,
    without_alias,
)
from streams.settings import DEMO_PIPELINE, REPO_ROOT
from streams.validation import EventDecoder

SCHEMAS = REPO_ROOT / "schemas"


def _state(**kw) -> ServingState:
    base = {
        "model_name": "fraud",
        "aliases": {"champion": 1, "challenger": 2},
        "feature_spec_hash": "a" * 64,
        "split": {"champion": 90.0, "challenger": 10.0},
        "shadows": {"challenger": 0.5},
        "action": "split",
        "detail": "fraud: split champion=90, challenger=10",
        "actor": "me@host",
        "time_ms": 1_700_000_000_000,
    }
    return ServingState(**{**base, **kw})


def test_a_state_round_trips_through_its_avro_schema():
    model_codec = codec(SCHEMAS)
    state = _state()
    data = model_codec.encode(state.to_record(), strict=True)
    assert _decode(b"fraud", data, "fraud", model_codec) == state
    # another model's record, a tombstone and garbage are not this model's state
    assert _decode(b"other", data, "fraud", model_codec) is None
    assert _decode(b"fraud", None, "fraud", model_codec) is None
    assert _decode(b"fraud", b"\x01\x02", "fraud", model_codec) is None


def test_problems_name_what_makes_a_state_unservable():
    assert _state().problems() == []
    assert "no champion" in " ".join(
        _state(aliases={"challenger": 2}, split={}, shadows={}).problems()
    )
    assert "not a serving alias" in " ".join(_state(split={"blue": 1.0}).problems())
    assert "weights are >= 0" in " ".join(_state(split={"champion": -1.0}).problems())
    assert "add up to 0" in " ".join(_state(split={"champion": 0.0}).problems())
    assert "in [0, 1]" in " ".join(_state(shadows={"challenger": 1.5}).problems())
    assert "not a serving alias" in " ".join(_state(shadows={"blue": 0.5}).problems())


def test_changes_keep_the_state_whole():
    state = _state()
    assert with_alias(state, "champion", 3).aliases == {"champion": 3, "challenger": 2}
    cleared = without_alias(state, "challenger")
    assert (cleared.aliases, cleared.split, cleared.shadows) == ({"champion": 1}, {}, {})
    three = without_alias(with_split(state, {"champion": 8, "challenger": 1, "blue": 1}), "blue")
    assert three.split == {"champion": 8, "challenger": 1}
    assert with_split(state, {}).arms() == [("champion", 1.0)]
    assert with_shadows(state, {}).shadow_shares() == []
    assert state.arms() == [("challenger", 10.0), ("champion", 90.0)]  # sorted: stable arms
    assert state.used_aliases() == ["challenger", "champion"]
    # action, actor, time are not part of what serves
    assert _state(action="publish", time_ms=1).serving == state.serving
    assert with_alias(state, "champion", 3).serving != state.serving


def test_parse_weights():
    assert parse_weights(["champion=90", "challenger=10"], "WEIGHT") == {
        "champion": 90.0,
        "challenger": 10.0,
    }
    for bad in (["champion"], ["=3"], ["champion=ninety"]):
        with pytest.raises(ValueError, match="ALIAS=WEIGHT"):
            parse_weights(bad, "WEIGHT")


# --- loading versions and swapping them ------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(DEMO_PIPELINE, SCHEMAS)


def _register(registry: Registry, pipeline, seed: int, spec_hash: str | None = None) -> int:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(100, len(pipeline.features)))
    meta = {
        "feature_spec_hash": spec_hash or pipeline.feature_spec_hash,
        "feature_names": pipeline.feature_names,
        "metrics": {},
        "training_data": {"source": "unit test"},
    }
    estimator = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    return registry.register("fraud", estimator, meta).version


def _flip_a_byte(version_dir: Path) -> None:
    (artifact,) = [p for p in version_dir.iterdir() if p.suffix != ".json"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


def _serving(pipeline, **aliases) -> ServingState:
    return ServingState("fraud", aliases, pipeline.feature_spec_hash)


def test_load_routing_builds_arms_and_shadows_and_refuses_what_cannot_serve(tmp_path, pipeline):
    registry = Registry(tmp_path)
    v1, v2 = _register(registry, pipeline, 1), _register(registry, pipeline, 2)
    other = _register(registry, pipeline, 3, spec_hash="0" * 64)
    bad = _register(registry, pipeline, 4)
    _flip_a_byte(registry.get("fraud", bad).path)

    state = with_shadows(
        with_split(
            _serving(pipeline, champion=v1, challenger=v2), {"champion": 3, "challenger": 1}
        ),
        {"challenger": 0.25},
    )
    routing, loaded = load_routing(registry, pipeline, state)
    assert [(m.variant, m.version) for m in routing.arms] == [("challenger", v2), ("champion", v1)]
    assert routing.weights == (1.0, 3.0)
    assert [(s.model.version, s.share) for s in routing.shadows] == [(v2, 0.25)]
    assert set(loaded) == {("fraud", v1), ("fraud", v2)}
    # versions already loaded are not loaded again (and need not be loadable again)
    _flip_a_byte(registry.get("fraud", v1).path)
    again, _ = load_routing(registry, pipeline, state, loaded)
    assert again.arms[1].estimator is routing.arms[1].estimator

    # just after a promotion the challenger alias may still name the new champion: a shadow
    # of the version that decides every event is left out
    promoted = with_shadows(_serving(pipeline, champion=v2, challenger=v2), {"challenger": 1.0})
    assert load_routing(registry, pipeline, promoted, loaded)[0].shadows == ()

    cases = [
        (_serving(pipeline, champion=other), "feature_spec_mismatch"),
        (_serving(pipeline, champion=bad), "unloadable"),
        (_serving(pipeline, champion=99), "unloadable"),
        (_serving(pipeline, challenger=v2), "invalid_state"),
        (ServingState("other", {"champion": v2}, ""), "other_model"),
    ]
    for refused, reason in cases:
        with pytest.raises(ServingRefused) as err:
            load_routing(registry, pipeline, refused)
        assert err.value.reason == reason and err.value.message


def test_the_swapper_applies_a_state_or_keeps_serving_and_counts_the_refusal(tmp_path, pipeline):
    registry = Registry(tmp_path)
    v1, v2 = _register(registry, pipeline, 1), _register(registry, pipeline, 2)
    other = _register(registry, pipeline, 3, spec_hash="0" * 64)
    first = _serving(pipeline, champion=v1)
    routing, loaded = load_routing(registry, pipeline, first)
    decoder = EventDecoder(pipeline.events, max_bytes=65536)
    scorer = BatchScorer(pipeline, decoder, routing, MemoryStore(pipeline))
    metrics = WorkerMetrics()
    swapper = ModelSwapper(registry, pipeline, scorer, metrics, first, loaded)

    def info() -> set[tuple[str, str, str]]:
        return {
            (s.labels["version"], s.labels["variant"], s.labels["role"])
            for m in metrics.model_info.collect()
            for s in m.samples
        }

    assert info() == {(str(v1), "champion", "arm")}
    refused = with_alias(first, "champion", other)
    assert asyncio.run(swapper.apply(refused)) is False
    assert scorer.routing is routing and swapper.state == first
    refusals = metrics.registry.get_sample_value(
        "rtscore_model_swaps_refused_total",
        {"pipeline": "fraud", "reason": "feature_spec_mismatch"},
    )
    assert refusals == 1.0

    second = with_shadows(with_alias(first, "challenger", v2), {"challenger": 1.0})
    assert asyncio.run(swapper.apply(second)) is True
    assert isinstance(scorer.routing, Routing) and scorer.routing is not routing
    assert [s.model.version for s in scorer.routing.shadows] == [v2]
    assert info() == {(str(v1), "champion", "arm"), (str(v2), "challenger", "shadow")}
    assert asyncio.run(swapper.apply(second)) is False  # the same state again: no change
    swaps = metrics.registry.get_sample_value("rtscore_model_swaps_total", {"pipeline": "fraud"})
    assert swaps == 1.0
