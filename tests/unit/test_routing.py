"""A/B arms and shadow samples: sticky by stable hashes, shares within sampling error, and the
scorer keeps one model call per arm (and per shadow) per micro-batch."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from streams.features.memory_store import MemoryStore
from streams.pipeline import load_pipeline
from streams.routing import Routing, ServingModel, Shadow, arm_index, stable_unit
from streams.scoring import BatchScorer, InputRecord
from streams.settings import DEMO_PIPELINE, REPO_ROOT
from streams.validation import EventDecoder


def _model(variant: str, version: int, estimator=None) -> ServingModel:
    return ServingModel("fraud", version, variant, estimator)


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    """Within 4.5 standard deviations (a false alarm about once in 300,000 runs)."""
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_stable_unit_is_fixed_by_salt_and_key_and_in_range():
    units = [stable_unit("s", str(k)) for k in range(5000)]
    assert units == [stable_unit("s", str(k)) for k in range(5000)]
    assert all(0.0 <= u < 1.0 for u in units)
    assert units != [stable_unit("other", str(k)) for k in range(5000)]
    # roughly uniform: each tenth of [0, 1) holds its share
    counts = np.histogram(units, bins=10, range=(0, 1))[0]
    assert all(_binomial_ok(int(c), 5000, 0.1) for c in counts)


def test_arms_are_sticky_per_entity_whatever_the_batch_and_order():
    routing = Routing((_model("champion", 1), _model("challenger", 2)), (90.0, 10.0))
    keys = [str(k) for k in range(3000)]
    whole = routing.assign(keys)
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    by_key = dict(zip(shuffled, routing.assign(shuffled).tolist(), strict=True))
    assert by_key == dict(zip(keys, whole.tolist(), strict=True))
    # a key alone in a batch (another worker, another partition) gets the same arm
    assert [int(routing.assign([k])[0]) for k in keys[:200]] == whole[:200].tolist()
    # another routing object with the same names and weights (a restarted worker) agrees
    again = Routing((_model("champion", 1), _model("challenger", 2)), (90.0, 10.0))
    assert again.assign(keys).tolist() == whole.tolist()


@pytest.mark.parametrize("weights", [(90.0, 10.0), (50.0, 50.0), (1.0, 3.0)])
def test_arm_shares_match_their_weights_within_sampling_error(weights):
    routing = Routing((_model("a", 1), _model("b", 2)), weights)
    n = 20_000
    arms = routing.assign([f"customer-{k}" for k in range(n)])
    p_b = weights[1] / sum(weights)
    assert _binomial_ok(int(np.count_nonzero(arms == 1)), n, p_b)


def test_an_arm_of_weight_zero_gets_nothing():
    units = np.linspace(0, 1, 1001, endpoint=False)
    index = arm_index(units, [0.5, 0.0, 0.5])
    assert 1 not in set(index.tolist())
    assert set(index.tolist()) == {0, 2}


def test_shadow_samples_by_event_id_within_sampling_error():
    champion = _model("champion", 1)
    routing = Routing((champion,), (1.0,))
    ids = [str(i) for i in range(20_000)]
    part = Shadow(_model("challenger", 2), 0.3)
    picked = routing.sampled(part, ids)
    assert _binomial_ok(int(picked.sum()), len(ids), 0.3)
    assert routing.sampled(part, ids).tolist() == picked.tolist()  # a redelivery: same rows
    assert routing.sampled(Shadow(_model("challenger", 2), 1.0), ids).all()
    assert not routing.sampled(Shadow(_model("challenger", 2), 0.0), ids).any()


def test_routing_needs_weights():
    with pytest.raises(ValueError):
        Routing((_model("champion", 1),), (0.0,))


# --- the scorer with arms and shadows ---------------------------------------------------------


class Counting:
    """An estimator that counts its predict_proba calls and can refuse chosen rows."""

    def __init__(self, estimator, bad_amount: float | None = None) -> None:
        self.estimator = estimator
        self.calls: list[int] = []
        self.bad_amount = bad_amount

    def predict_proba(self, X):
        self.calls.append(len(X))
        if self.bad_amount is not None and (X[:, 0] == self.bad_amount).any():
            raise ValueError("refused")
        return self.estimator.predict_proba(X)


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas")


def _fitted(pipeline, seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, len(pipeline.features))) * 50
    return LogisticRegression().fit(X, (X[:, 0] > seed).astype(int))


def _records(n: int, bad_amount: float | None = None) -> list[InputRecord]:
    out = []
    for i in range(n):
        amount = bad_amount if bad_amount is not None and i == 7 else 10.0 + i
        event = {
            "transaction_id": i,
            "tx_datetime": f"2018-04-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "customer_id": i % 97,
            "terminal_id": i % 13,
            "tx_amount": amount,
        }
        out.append(InputRecord("ev", 0, i, 1_522_540_800_000 + i, b"k", json.dumps(event).encode()))
    return out


def _scorer(pipeline, routing: Routing) -> BatchScorer:
    decoder = EventDecoder(pipeline.events, max_bytes=65536)
    return BatchScorer(pipeline, decoder, routing, MemoryStore(pipeline))


def test_one_model_call_per_arm_and_per_shadow_and_decisions_from_the_arm(pipeline):
    champion = Counting(_fitted(pipeline, 0))
    challenger = Counting(_fitted(pipeline, 1))
    routing = Routing(
        (_model("challenger", 2, challenger), _model("champion", 1, champion)),
        (30.0, 70.0),
        (Shadow(_model("challenger", 2, challenger), 1.0),),
    )
    scored = _scorer(pipeline, routing).score(_records(400))
    assert len(scored.predictions) == 400 and not scored.dead_letters
    by_variant = {"champion": 0, "challenger": 0}
    for _, p in scored.predictions:
        by_variant[p["variant"]] += 1
        estimator = champion if p["variant"] == "champion" else challenger
        assert p["model_version"] == (1 if p["variant"] == "champion" else 2)
        x = np.asarray([p["features"]])
        assert p["score"] == pytest.approx(estimator.estimator.predict_proba(x)[0, 1], abs=1e-12)
        if p["variant"] == "champion":  # the challenger's shadow: never the decision
            (shadow,) = p["shadows"]
            assert (shadow["variant"], shadow["model_version"]) == ("challenger", 2)
            expected = challenger.estimator.predict_proba(x)[0, 1]
            assert shadow["score"] == pytest.approx(expected, abs=1e-12)
        else:  # its own arm: the decision already is the challenger's score
            assert p["shadows"] == []
    # entities stick to an arm: all of a customer's events have one variant
    arms_of = {}
    for _, p in scored.predictions:
        arms_of.setdefault(p["entity_key"], set()).add(p["variant"])
    assert all(len(v) == 1 for v in arms_of.values())
    assert by_variant["champion"] > 0 and by_variant["challenger"] > 0
    # batched: champion once, challenger once as an arm and once as a shadow
    assert champion.calls == [by_variant["champion"]]
    assert sorted(challenger.calls) == sorted([by_variant["challenger"], by_variant["champion"]])
    assert scored.shadow_scores == {("fraud", 2, "challenger"): by_variant["champion"]}


def test_a_row_an_arm_cannot_score_is_dead_lettered_and_a_shadow_failure_is_not(pipeline):
    champion = Counting(_fitted(pipeline, 0), bad_amount=-1.0)
    shadow = Counting(_fitted(pipeline, 1), bad_amount=-1.0)
    routing = Routing(
        (_model("champion", 1, champion),), (1.0,), (Shadow(_model("challenger", 2, shadow), 1.0),)
    )
    scored = _scorer(pipeline, routing).score(_records(50, bad_amount=-1.0))
    assert [r.offset for r, _ in scored.dead_letters] == [7]
    assert scored.dead_letters[0][1].reason == "unscorable"
    assert len(scored.predictions) == 49
    assert all(len(p["shadows"]) == 1 for _, p in scored.predictions)

    # now only the shadow refuses the row: the event keeps its prediction, without the shadow
    champion_ok = Counting(_fitted(pipeline, 0))
    routing = Routing(
        (_model("champion", 1, champion_ok),),
        (1.0,),
        (Shadow(_model("challenger", 2, shadow), 1.0),),
    )
    scored = _scorer(pipeline, routing).score(_records(50, bad_amount=-1.0))
    assert not scored.dead_letters and len(scored.predictions) == 50
    assert scored.shadow_failures == 1
    lacking = [p["source_offset"] for _, p in scored.predictions if not p["shadows"]]
    assert lacking == [7]


def test_a_swapped_routing_applies_from_the_next_batch(pipeline):
    first = _model("champion", 1, _fitted(pipeline, 0))
    second = _model("champion", 2, _fitted(pipeline, 1))
    scorer = _scorer(pipeline, Routing.single(first))
    records = _records(40)
    before = scorer.score(records[:20])
    scorer.routing = Routing.single(second)
    after = scorer.score(records[20:])
    assert {p["model_version"] for _, p in before.predictions} == {1}
    assert {p["model_version"] for _, p in after.predictions} == {2}
