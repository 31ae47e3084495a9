"""Join decisions as pure functions: what a prediction, an outcome or the watermark does to
the join state of one event, and which records that emits.

The state of an event is a small JSON-able dict (stored in Redis by :mod:`streams.join.state`):

``s``   status: ``wait_o`` (prediction waits for its outcome), ``wait_p`` (outcome waits for
        its prediction), ``matched``, ``expired`` (window closed, ``on_missing`` applied),
        ``orphan`` (the outcome's prediction never came; dead-lettered)
``p``   the prediction (the fields a LabeledPrediction carries)
``o``   the outcome that labels (or waits to label) the event, with its source record
``seen`` sources (topic/partition/offset) of every record already counted, so a
        redelivered record changes nothing

Every decision is final: a labeled record is emitted once, when the state leaves ``wait_o``.
Deadlines are event times compared with the join's watermark, never the wall clock.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.errors import InvalidEvent
from streams.join.policy import JoinPolicy
from streams.scoring import InputRecord

State = dict[str, Any]
MAX_SEEN = 32  # outcome sources remembered per event: bounds a pathological producer

PREDICTION_FIELDS = (
    "prediction_id",
    "pipeline",
    "event_id",
    "entity_key",
    "event_time",
    "model_name",
    "model_version",
    "variant",
    "score",
    "shadows",
)


@dataclass(frozen=True)
class OutcomeIn:
    """One decoded outcome record and where it came from."""

    event_id: str
    time_ms: int
    event_time_ms: int | None  # the labelled event's time, when the outcome carries it
    label: int
    fields: dict[str, Any]
    record: InputRecord

    @property
    def source(self) -> str:
        return f"{self.record.topic}/{self.record.partition}/{self.record.offset}"


@dataclass
class Step:
    """What one decision did: the new state, the records to emit, what to count."""

    state: State
    labeled: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[InputRecord, InvalidEvent]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def label_of(value: Any, field_name: str) -> int:
    """The 1/0 label of an outcome's label field: a boolean, or the integer 1 or 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise InvalidEvent(
        "bad_label",
        f"the outcome's label field {field_name!r} is {value!r}; the join needs true/false or "
        "1/0. Fix the producer, or point [outcomes] label_field at a boolean field.",
        stage="join",
    )


def prediction_state(prediction: dict[str, Any]) -> dict[str, Any]:
    """The part of a Prediction record the join keeps (not the feature vector)."""
    return {name: prediction[name] for name in PREDICTION_FIELDS}


def add_prediction(
    state: State | None, prediction: dict[str, Any], source: str, policy: JoinPolicy
) -> Step:
    """A prediction arrives: it waits for its outcome, or meets the one already waiting.

    ``source`` (topic/partition/offset) tells a redelivered record from a second record of
    the same event (e.g. the scoring worker's own redelivery), which is counted.
    """
    if state is not None and source in state["seen"]:
        return Step(state, counts=Counter(redelivered_prediction=1))
    seen = [*(state["seen"] if state is not None else []), source][-MAX_SEEN:]
    if state is not None and "p" in state:
        return Step({**state, "seen": seen}, counts=Counter(duplicate_prediction=1))
    pred = prediction_state(prediction)
    if state is None:
        return Step({"s": "wait_o", "p": pred, "seen": seen}, counts=Counter(predictions=1))
    new = {**state, "p": pred, "seen": seen}
    step = Step(new, counts=Counter(predictions=1))
    outcome = state.get("o")
    if outcome is None:
        new["s"] = "wait_o"
        return step
    if not policy.in_window(pred["event_time"], outcome["t"]):
        # The waiting outcome came too late to label this event: the event still waits.
        new["s"] = "wait_o"
        del new["o"]
        step.dead.append(_dead_outcome(outcome, "outcome_after_window", _after_window(policy)))
        step.counts["outcome_after_window"] += 1
        return step
    if state["s"] == "orphan":
        # The outcome was dead-lettered as an orphan already; the label is still the truth.
        step.counts["late_prediction"] += 1
    else:
        step.counts["outcome_used"] += 1
    new["s"] = "matched"
    step.labeled.append(labeled_record(pred, policy, outcome))
    step.counts["matched"] += 1
    return step


def add_outcome(state: State | None, outcome: OutcomeIn, policy: JoinPolicy) -> Step:
    """An outcome arrives: it labels the waiting prediction, waits for it, or is dead-lettered."""
    state = state if state is not None else {"s": "new", "seen": []}
    if outcome.source in state["seen"]:
        return Step(state, counts=Counter(redelivered_outcome=1))
    new = {**state, "seen": [*state["seen"], outcome.source][-MAX_SEEN:]}
    step = Step(new, counts=Counter(outcomes=1))
    status = state["s"]
    pred = state.get("p")
    event_time = pred["event_time"] if pred is not None else outcome.event_time_ms
    if status in ("matched", "orphan", "wait_p"):
        step.counts["duplicate_outcome"] += 1  # the first outcome of an event wins
        return step
    if event_time is not None and not policy.in_window(event_time, outcome.time_ms):
        step.dead.append(
            (
                outcome.record,
                InvalidEvent("outcome_after_window", _after_window(policy), stage="join"),
            )
        )
        step.counts["outcome_after_window"] += 1
        return step
    if status == "expired":
        step.dead.append(
            (
                outcome.record,
                InvalidEvent(
                    "late_outcome",
                    f"the outcome of event {outcome.event_id} is within max_delay of the event "
                    "but arrived after the join had closed the event's window (its watermark "
                    "was past the window's end + grace); the event was labeled by on_missing. "
                    "Raise [join] grace if outcomes are normally this late.",
                    stage="join",
                ),
            )
        )
        step.counts["late_outcome"] += 1
        return step
    kept = _outcome_state(outcome)
    new["o"] = kept
    if status == "wait_o" and pred is not None:
        new["s"] = "matched"
        step.labeled.append(labeled_record(pred, policy, kept))
        step.counts["matched"] += 1
        step.counts["outcome_used"] += 1
    else:
        new["s"] = "wait_p"
    return step


def deadline(state: State, policy: JoinPolicy) -> int | None:
    """The watermark past which the event's pending side is closed (None: nothing pending)."""
    if state["s"] == "wait_o":
        return int(policy.window_end_ms(state["p"]["event_time"]) + policy.grace_ms)
    if state["s"] == "wait_p":
        outcome = state["o"]
        # Without the event's own time, the outcome's time bounds it (an event precedes its
        # outcome), so its prediction is due by then at the latest.
        since = outcome["et"] if outcome["et"] is not None else outcome["t"]
        return int(since + policy.grace_ms)
    return None


def close(state: State, watermark: int, policy: JoinPolicy) -> Step:
    """Apply the watermark: expire a prediction whose window closed, orphan a lone outcome."""
    due = deadline(state, policy)
    if due is None or due >= watermark:
        return Step(state)
    if state["s"] == "wait_o":
        pred = state["p"]
        step = Step({**state, "s": "expired"}, counts=Counter(expired=1))
        step.labeled.append(labeled_record(pred, policy, None))
        return step
    outcome = state["o"]
    message = (
        f"no prediction of event {outcome['id']} arrived by the time the join's watermark "
        f"passed the event's time + grace ({policy.grace_ms} ms): the event was not scored "
        "(look for it in the dead-letter topic), or the outcome names the wrong event id "
        "(check the pipeline's [outcomes] id_field)."
    )
    step = Step({**state, "s": "orphan"}, counts=Counter(orphan_outcome=1))
    step.dead.append(_dead_outcome(outcome, "orphan_outcome", message))
    return step


def labeled_record(
    pred: dict[str, Any], policy: JoinPolicy, outcome: dict[str, Any] | None
) -> dict[str, Any]:
    """The LabeledPrediction (schemas/labeled_prediction.avsc) of a decided prediction."""
    record = {name: pred[name] for name in PREDICTION_FIELDS}
    if outcome is None:
        return {
            **record,
            "status": "expired",
            "label": policy.missing_label(),
            "outcome_time": None,
            "label_delay_ms": None,
            "outcome": None,
            "outcome_source": None,
            "labeled_time": policy.window_end_ms(pred["event_time"]),
        }
    return {
        **record,
        "status": "matched",
        "label": outcome["l"],
        "outcome_time": outcome["t"],
        "label_delay_ms": outcome["t"] - pred["event_time"],
        "outcome": outcome["f"],
        "outcome_source": outcome["src"],
        "labeled_time": outcome["t"],
    }


def _after_window(policy: JoinPolicy) -> str:
    return (
        f"the outcome's time is more than max_delay ({policy.max_delay_ms} ms) after the event's "
        "time, so by the pipeline's [join] policy it cannot label the event. Raise [join] "
        "max_delay if such delays are real, or check the outcome's time field."
    )


def _outcome_state(outcome: OutcomeIn) -> dict[str, Any]:
    rec = outcome.record
    return {
        "id": outcome.event_id,
        "t": outcome.time_ms,
        "et": outcome.event_time_ms,
        "l": outcome.label,
        "f": json.dumps(outcome.fields, separators=(",", ":"), default=str),
        "src": outcome.source,
        # the record itself, to dead-letter it whole if its prediction never comes
        "rec": [
            rec.topic,
            rec.partition,
            rec.offset,
            rec.timestamp_ms,
            None if rec.key is None else base64.b64encode(rec.key).decode(),
            None if rec.value is None else base64.b64encode(rec.value).decode(),
        ],
    }


def _dead_outcome(
    outcome: dict[str, Any], reason: str, message: str
) -> tuple[InputRecord, InvalidEvent]:
    topic, partition, offset, ts, key, value = outcome["rec"]
    record = InputRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=ts,
        key=None if key is None else base64.b64decode(key),
        value=None if value is None else base64.b64decode(value),
    )
    return record, InvalidEvent(reason, message, stage="join")
