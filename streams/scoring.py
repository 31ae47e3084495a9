"""The scoring step of a micro-batch, as plain functions: decode, features, one model call.

No I/O here: the worker moves batches between topics and calls :meth:`BatchScorer.score`;
tests and the bench call it directly. Every input record comes out as exactly one prediction
or one dead letter (invariant 1).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.errors import InvalidEvent
from streams.features.assemble import assemble
from streams.features.online import OnlineStore
from streams.pipeline import Pipeline
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


@dataclass(frozen=True)
class ServingModel:
    """The model version that scores, with the names a prediction must carry (invariant 6)."""

    name: str
    version: int
    variant: str
    estimator: Any  # has predict_proba


@dataclass
class ScoredBatch:
    predictions: list[tuple[InputRecord, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[tuple[InputRecord, InvalidEvent]] = field(default_factory=list)
    late: int = 0  # events later than the allowed lateness that were scored anyway

    def __len__(self) -> int:
        return len(self.predictions) + len(self.dead_letters)


def prediction_id(pipeline: str, event_id: object) -> str:
    """Deterministic id: a redelivered event gets the same id, so consumers can dedupe."""
    return hashlib.sha256(f"{pipeline}\x00{event_id}".encode()).hexdigest()[:32]


class BatchScorer:
    """Decode, one online-store round trip for the batch's features, one model call."""

    def __init__(
        self,
        pipeline: Pipeline,
        decoder: EventDecoder,
        model: ServingModel,
        store: OnlineStore | None = None,
    ) -> None:
        if pipeline.stateful and store is None:
            raise ValueError(f"pipeline {pipeline.name} has stateful features: pass a store")
        self.pipeline = pipeline
        self.decoder = decoder
        self.model = model
        self.store = store

    def score(self, records: Sequence[InputRecord]) -> ScoredBatch:
        started = time.perf_counter()
        out = ScoredBatch()
        valid: list[tuple[InputRecord, dict[str, Any]]] = []
        for record in records:
            try:
                valid.append((record, self.decoder.decode(record.value, record.headers)))
            except InvalidEvent as exc:
                out.dead_letters.append((record, exc))
        if valid:
            scores, vectors, valid = self._score_valid(valid, out)
            if valid:
                self._predictions(valid, vectors, scores, len(records), started, out)
        return out

    def _score_valid(
        self, valid: list[tuple[InputRecord, dict[str, Any]]], out: ScoredBatch
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[InputRecord, dict[str, Any]]]]:
        vectors, valid = self._features(valid, out)
        if not valid:
            return np.empty(0), vectors, valid
        try:
            scores = self._predict(vectors)
        except (ValueError, FloatingPointError, OverflowError) as exc:
            # One bad row must not sink the batch: find it row by row (rare path only).
            log.warning("batch of %d failed to score (%s); isolating bad rows", len(valid), exc)
            return self._score_rows(valid, vectors, out)
        return scores, vectors, valid

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

    def _predict(self, vectors: np.ndarray) -> np.ndarray:
        with np.errstate(all="raise"):
            scores = np.asarray(self.model.estimator.predict_proba(vectors)[:, 1], dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError("the model returned a non-finite score")
        return scores

    def _score_rows(
        self,
        valid: list[tuple[InputRecord, dict[str, Any]]],
        vectors: np.ndarray,
        out: ScoredBatch,
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[InputRecord, dict[str, Any]]]]:
        keep: list[int] = []
        scores: list[float] = []
        for i, (record, _) in enumerate(valid):
            try:
                scores.append(float(self._predict(vectors[i : i + 1])[0]))
                keep.append(i)
            except (ValueError, FloatingPointError, OverflowError) as exc:
                out.dead_letters.append(
                    (
                        record,
                        InvalidEvent(
                            "unscorable",
                            f"model {self.model.name} v{self.model.version} cannot score this "
                            f"event's features {vectors[i].tolist()}: {exc}. Check the event's "
                            "values against the ranges the model was trained on.",
                            stage="score",
                        ),
                    )
                )
        return np.asarray(scores), vectors[keep], [valid[i] for i in keep]

    def _predictions(
        self,
        valid: list[tuple[InputRecord, dict[str, Any]]],
        vectors: np.ndarray,
        scores: np.ndarray,
        batch_size: int,
        started: float,
        out: ScoredBatch,
    ) -> None:
        spec = self.pipeline.events
        key_field = spec.key_field or spec.id_field
        now_ms = int(time.time() * 1000)
        latency_ms = (time.perf_counter() - started) * 1000.0
        rows = vectors.tolist()
        for (record, event), score, row in zip(valid, scores.tolist(), rows, strict=True):
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
                        "model_name": self.model.name,
                        "model_version": self.model.version,
                        "variant": self.model.variant,
                        "score": score,
                        "features": row,
                        "source_partition": record.partition,
                        "source_offset": record.offset,
                        "ingest_time": record.timestamp_ms,
                        "scored_time": now_ms,
                        "batch_size": batch_size,
                        "batch_latency_ms": latency_ms,
                        "shadows": [],
                    },
                )
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
