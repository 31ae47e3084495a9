"""The scoring step of a micro-batch, as plain functions: decode, features, one model call
per arm (A/B) and per shadow.

No I/O here: the worker moves batches between topics and calls :meth:`BatchScorer.score`;
tests and the bench call it directly. Every input record comes out as exactly one prediction
or one dead letter (invariant 1).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.errors import InvalidEvent
from streams.features.assemble import assemble
from streams.features.online import OnlineStore
from streams.pipeline import Pipeline
from streams.routing import Routing, ServingModel
from streams.validation import EventDecoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRecord:
    """One record as consumed: what a dead letter must keep whole."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class ScoredBatch:
    predictions: list[tuple[InputRecord, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[tuple[InputRecord, InvalidEvent]] = field(default_factory=list)
    late: int = 0  # events later than the allowed lateness that were scored anyway
    shadow_failures: int = 0  # rows a shadow could not score (recorded without that shadow)
    # (model, version, variant) -> rows scored in shadow
    shadow_scores: Counter[tuple[str, int, str]] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.predictions) + len(self.dead_letters)


def prediction_id(pipeline: str, event_id: object) -> str:
    """Deterministic id: a redelivered event gets the same id, so consumers can dedupe."""
    return hashlib.sha256(f"{pipeline}\x00{event_id}".encode()).hexdigest()[:32]


class BatchScorer:
    """Decode, one online-store round trip for the batch's features, one model call per arm
    (and per shadow).

    ``routing`` may be replaced at any time (hot swap): each batch reads it once, so a batch
    is scored by one routing whole and a swap lands between two batches.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        decoder: EventDecoder,
        routing: Routing | ServingModel,
        store: OnlineStore | None = None,
    ) -> None:
        if pipeline.stateful and store is None:
            raise ValueError(f"pipeline {pipeline.name} has stateful features: pass a store")
        self.pipeline = pipeline
        self.decoder = decoder
        self.routing = routing if isinstance(routing, Routing) else Routing.single(routing)
        self.store = store

    def score(self, records: Sequence[InputRecord]) -> ScoredBatch:
        routing = self.routing
        started = time.perf_counter()
        out = ScoredBatch()
        valid: list[tuple[InputRecord, dict[str, Any]]] = []
        for record in records:
            try:
                valid.append((record, self.decoder.decode(record.value, record.headers)))
            except InvalidEvent as exc:
                out.dead_letters.append((record, exc))
        if valid:
            vectors, valid = self._features(valid, out)
            if valid:
                self._score_routed(routing, valid, vectors, len(records), started, out)
        return out

    def _features(
        self, valid: list[tuple[InputRecord, dict[str, Any]]], out: ScoredBatch
    ) -> tuple[np.ndarray, list[tuple[InputRecord, dict[str, Any]]]]:
        events = [event for _, event in valid]
        n = len(events)
        if self.store is not None:
            block = self.store.update_and_read(events)
            stateful, late, dropped = block.values, block.late, block.dropped
        else:
            stateful = np.empty((n, 0))
            late = dropped = np.zeros(n, dtype=bool)
        result = assemble(self.pipeline, events, stateful, late, dropped)
        out.late += int(np.count_nonzero(late & ~dropped))
        if not dropped.any():
            return result.X, valid
        lateness_s = self.pipeline.state.allowed_lateness_ms / 1000
        for i in np.flatnonzero(dropped):
            record, event = valid[i]
            out.dead_letters.append(
                (
                    record,
                    InvalidEvent(
                        "too_late",
                        f"event {event[self.pipeline.events.id_field]} is more than "
                        f"{lateness_s:g}s older than the newest event of its key; the "
                        "pipeline's late_policy is dead_letter. Replay it into a backtest, or "
                        "raise [state] allowed_lateness if such delays are normal.",
                        stage="features",
                    ),
                )
            )
        keep = np.flatnonzero(~dropped)
        return result.X[keep], [valid[i] for i in keep]

    def _score_routed(
        self,
        routing: Routing,
        valid: list[tuple[InputRecord, dict[str, Any]]],
        vectors: np.ndarray,
        batch_size: int,
        started: float,
        out: ScoredBatch,
    ) -> None:
        """One model call per arm on its rows, one per shadow on its sample (invariant: batched)."""
        spec = self.pipeline.events
        key_field = spec.key_field or spec.id_field
        n = len(valid)
        arm_of = routing.assign([str(event[key_field]) for _, event in valid])
        scores = np.empty(n)
        ok = np.ones(n, dtype=bool)
        single = len(routing.arms) == 1
        for i, model in enumerate(routing.arms):
            rows = np.arange(n) if single else np.flatnonzero(arm_of == i)
            if rows.size == 0:
                continue
            # One arm (the usual case) scores the matrix as it is, without a copy.
            scores[rows], failed = _predict_isolating(model, vectors if single else vectors[rows])
            for j, exc in failed.items():
                ok[rows[j]] = False
                out.dead_letters.append(
                    (valid[rows[j]][0], _unscorable(model, vectors[rows[j]], exc))
                )
        shadows: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        if routing.shadows:
            event_ids = [str(event[spec.id_field]) for _, event in valid]
            arm_variant = np.array([m.variant for m in routing.arms], dtype=object)[arm_of]
            for shadow in routing.shadows:
                model = shadow.model
                # A row whose decision is already this alias's score needs no shadow of it.
                take = ok & routing.sampled(shadow, event_ids) & (arm_variant != model.variant)
                rows = np.flatnonzero(take)
                if rows.size == 0:
                    continue
                shadow_scores, failed = _predict_isolating(model, vectors[rows])
                out.shadow_failures += len(failed)
                entry = {
                    "model_name": model.name,
                    "model_version": model.version,
                    "variant": model.variant,
                }
                for j, (row, score) in enumerate(
                    zip(rows.tolist(), shadow_scores.tolist(), strict=True)
                ):
                    if j not in failed:
                        shadows[row].append({**entry, "score": score})
                out.shadow_scores[(model.name, model.version, model.variant)] += rows.size - len(
                    failed
                )
        now_ms = int(time.time() * 1000)
        latency_ms = (time.perf_counter() - started) * 1000.0
        rows_out = vectors.tolist()
        score_list = scores.tolist()
        arm_list = arm_of.tolist()
        for i, (record, event) in enumerate(valid):
            if not ok[i]:
                continue
            model = routing.arms[arm_list[i]]
            event_id = event[spec.id_field]
            out.predictions.append(
                (
                    record,
                    {
                        "prediction_id": prediction_id(self.pipeline.name, event_id),
                        "pipeline": self.pipeline.name,
                        "event_id": str(event_id),
                        "entity_key": str(event[key_field]),
                        "event_time": event[spec.time_field],
                        "model_name": model.name,
                        "model_version": model.version,
                        "variant": model.variant,
                        "score": score_list[i],
                        "features": rows_out[i],
                        "source_partition": record.partition,
                        "source_offset": record.offset,
                        "ingest_time": record.timestamp_ms,
                        "scored_time": now_ms,
                        "batch_size": batch_size,
                        "batch_latency_ms": latency_ms,
                        "shadows": shadows[i],
                    },
                )
            )


def _predict(model: ServingModel, vectors: np.ndarray) -> np.ndarray:
    with np.errstate(all="raise"):
        scores = np.asarray(model.estimator.predict_proba(vectors)[:, 1], dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("the model returned a non-finite score")
    return scores


def _predict_isolating(
    model: ServingModel, vectors: np.ndarray
) -> tuple[np.ndarray, dict[int, Exception]]:
    """Scores of ``vectors`` in one call; when that fails, row by row to find the bad rows
    (rare path only). Returns the scores (NaN where failed) and the failures by row."""
    try:
        return _predict(model, vectors), {}
    except (ValueError, FloatingPointError, OverflowError) as exc:
        # One bad row must not sink the batch.
        log.warning(
            "%s v%d failed on a batch of %d (%s); isolating bad rows",
            model.name, model.version, len(vectors), exc,
        )  # fmt: skip
    scores = np.full(len(vectors), np.nan)
    failed: dict[int, Exception] = {}
    for i in range(len(vectors)):
        try:
            scores[i] = _predict(model, vectors[i : i + 1])[0]
        except (ValueError, FloatingPointError, OverflowError) as exc:
            failed[i] = exc
    return scores, failed


def _unscorable(model: ServingModel, vector: np.ndarray, exc: Exception) -> InvalidEvent:
    return InvalidEvent(
        "unscorable",
        f"model {model.name} v{model.version} cannot score this event's features "
        f"{vector.tolist()}: {exc}. Check the event's values against the ranges the model "
        "was trained on.",
        stage="score",
    )


def dead_letter(record: InputRecord, error: InvalidEvent, pipeline: str) -> dict[str, Any]:
    """The DeadLetter record (schemas/dead_letter.avsc) for one input record."""
    return {
        "original_value": record.value,
        "original_key": record.key,
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "source_timestamp": record.timestamp_ms,
        "stage": error.stage,
        "reason": error.reason,
        "error": error.message,
        "pipeline": pipeline,
        "dead_lettered_time": int(time.time() * 1000),
    }
