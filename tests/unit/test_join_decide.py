"""The join's pure decisions: matched whichever side comes first, expired by the watermark,
orphans and late outcomes dead-lettered, redeliveries and duplicates change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import InvalidEvent
from streams.join.decide import (
    OutcomeIn,
    add_outcome,
    add_prediction,
    close,
    deadline,
    label_of,
)
from streams.join.policy import JoinPolicy
from streams.scoring import InputRecord

DAY = 86_400_000
POLICY = JoinPolicy(max_delay_ms=7 * DAY, on_missing="negative", grace_ms=1000)


def prediction(event_id: str = "e1", t: int = 10 * DAY) -> dict[str, Any]:
    return {
        "prediction_id": f"p-{event_id}",
        "pipeline": "fraud",
        "event_id": event_id,
        "entity_key": "c1",
        "event_time": t,
        "model_name": "fraud",
        "model_version": 3,
        "variant": "champion",
        "score": 0.25,
        "shadows": [
            {"model_name": "fraud", "model_version": 4, "variant": "challenger", "score": 0.5}
        ],
        "features": [1.0, 2.0],
    }


def outcome(event_id: str = "e1", t: int = 12 * DAY, offset: int = 5, label: int = 1,
            event_time: int | None = 10 * DAY) -> OutcomeIn:  # fmt: skip
    record = InputRecord("x.outcomes", 0, offset, t, b"c1", b'{"id":1}')
    return OutcomeIn(event_id, t, event_time, label, {"id": event_id}, record)


def test_prediction_then_outcome_matches_once() -> None:
    step = add_prediction(None, prediction(), "x.predictions/0/1", POLICY)
    assert step.state["s"] == "wait_o" and not step.labeled
    assert deadline(step.state, POLICY) == 17 * DAY + 1000
    step = add_outcome(step.state, outcome(), POLICY)
    [labeled] = step.labeled
    assert labeled["status"] == "matched" and labeled["label"] == 1
    assert labeled["label_delay_ms"] == 2 * DAY and labeled["labeled_time"] == 12 * DAY
    assert labeled["outcome_source"] == "x.outcomes/0/5"
    assert labeled["shadows"][0]["model_version"] == 4 and "features" not in labeled
    assert deadline(step.state, POLICY) is None
    again = add_outcome(step.state, outcome(), POLICY)  # the same record redelivered
    assert again.state is step.state and not again.labeled and not again.dead
    dup = add_outcome(step.state, outcome(offset=9, label=0), POLICY)  # a second outcome
    assert not dup.labeled and not dup.dead and dup.counts["duplicate_outcome"] == 1


def test_outcome_first_then_prediction_matches() -> None:
    step = add_outcome(None, outcome(), POLICY)
    assert step.state["s"] == "wait_p" and deadline(step.state, POLICY) == 10 * DAY + 1000
    step = add_prediction(step.state, prediction(), "x.predictions/0/1", POLICY)
    assert [r["status"] for r in step.labeled] == ["matched"]
    again = add_prediction(step.state, prediction(), "x.predictions/0/1", POLICY)
    assert again.state is step.state and again.counts == {"redelivered_prediction": 1}
    twice = add_prediction(step.state, prediction(), "x.predictions/1/7", POLICY)
    assert twice.counts == {"duplicate_prediction": 1} and not twice.labeled
    assert add_prediction(twice.state, prediction(), "x.predictions/1/7", POLICY).counts == {
        "redelivered_prediction": 1
    }


def test_expiry_follows_the_watermark_and_policy() -> None:
    state = add_prediction(None, prediction(), "x.predictions/0/1", POLICY).state
    due = deadline(state, POLICY)
    assert due is not None
    assert close(state, due, POLICY).state is state  # not past the deadline yet
    step = close(state, due + 1, POLICY)
    [labeled] = step.labeled
    assert (labeled["status"], labeled["label"], labeled["label_delay_ms"]) == ("expired", 0, None)
    assert labeled["labeled_time"] == 17 * DAY
    unlabeled = JoinPolicy(7 * DAY, "unlabeled", 1000)
    assert close(state, due + 1, unlabeled).labeled[0]["label"] is None
    late = add_outcome(step.state, outcome(t=16 * DAY), POLICY)  # in window, but too late
    assert [e.reason for _, e in late.dead] == ["late_outcome"] and not late.labeled


def test_outcome_outside_max_delay_is_dead_lettered_and_the_event_still_waits() -> None:
    state = add_prediction(None, prediction(), "x.predictions/0/1", POLICY).state
    step = add_outcome(state, outcome(t=17 * DAY + 1), POLICY)
    assert [e.reason for _, e in step.dead] == ["outcome_after_window"]
    assert step.state["s"] == "wait_o" and not step.labeled
    # Without the event's time the outcome waits; its prediction then judges it.
    waiting = add_outcome(None, outcome(t=17 * DAY + 1, event_time=None), POLICY).state
    step = add_prediction(waiting, prediction(), "x.predictions/0/1", POLICY)
    assert [e.reason for _, e in step.dead] == ["outcome_after_window"]
    assert step.state["s"] == "wait_o"


def test_orphan_outcome_is_dead_lettered_whole_and_a_late_prediction_still_matches() -> None:
    state = add_outcome(None, outcome(), POLICY).state
    step = close(state, 10 * DAY + 1001, POLICY)
    [(record, error)] = step.dead
    assert error.reason == "orphan_outcome" and error.stage == "join"
    assert (record.value, record.key, record.offset) == (b'{"id":1}', b"c1", 5)
    assert close(step.state, 20 * DAY, POLICY).dead == []  # dead-lettered once
    late = add_prediction(step.state, prediction(), "x.predictions/0/1", POLICY)
    assert late.labeled[0]["status"] == "matched" and late.counts["late_prediction"] == 1


def test_labels_are_booleans_or_one_and_zero() -> None:
    assert [label_of(v, "y") for v in (True, False, 1, 0)] == [1, 0, 1, 0]
    for bad in ("false", 2, 0.5, None):
        with pytest.raises(InvalidEvent, match="label field 'y'") as info:
            label_of(bad, "y")
        assert info.value.reason == "bad_label" and info.value.stage == "join"
