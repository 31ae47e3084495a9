"""The rows of a backtest: events of a range with their offline features and their labels.

Events are read from a warm-up before the range (the pipeline's lookback) so that every
window of an event in the range is full; the features are the offline path's, which equals
the online one (invariant 2). Labels follow the shared join policy. Nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.from_topics import decode_slice
from models.topic_reader import TopicSlice, read_range
from streams.errors import ConfigError
from streams.features.offline import offline_features
from streams.join.policy import JoinPolicy, join_policy
from streams.pipeline import Pipeline
from streams.replay.ranges import check_retention, show_time
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """One row per event id with event time in [start_ms, end_ms), by (time, id).

    ``labels`` is 1.0 / 0.0, or NaN for an event the policy leaves unlabelled.
    """

    start_ms: int
    end_ms: int
    warm_start_ms: int
    event_ids: np.ndarray  # str
    event_time_ms: np.ndarray  # int64
    entity_keys: np.ndarray
    X: np.ndarray
    labels: np.ndarray
    events_read: int  # warm-up included
    outcomes_read: int
    open_windows: int  # rows whose join window had not closed by the newest outcome read
    read_offsets: dict[str, dict[int, tuple[int, int]]]

    @property
    def n_rows(self) -> int:
        return len(self.event_ids)


async def read_dataset(
    settings: Settings,
    pipeline: Pipeline,
    start_ms: int,
    end_ms: int,
    *,
    progress: Callable[[str], None] = lambda _: None,
    on_fetch: Callable[[int], None] | None = None,
) -> Dataset:
    """Read the events (and outcomes) the range needs and build its rows."""
    if end_ms <= start_ms:
        raise ConfigError(f"the range ends ({end_ms}) before it starts ({start_ms})")
    if pipeline.outcomes is None:
        raise ConfigError(
            f"{pipeline.source} declares no [outcomes]: a backtest has nothing to label with",
            hint="add an [outcomes] table to the pipeline file",
        )
    topics, bootstrap = settings.topics, settings.kafka_bootstrap
    policy = join_policy(pipeline)
    warm_start = start_ms - pipeline.lookback_ms
    await check_retention(bootstrap, topics.events, warm_start, why="the range and its warm-up")
    await check_retention(bootstrap, topics.outcomes, warm_start, why="labels of the warm-up")
    progress(
        f"reading {topics.events} from {show_time(warm_start)} (a warm-up of "
        f"{pipeline.lookback_ms / 86_400_000:g} days before the range) …"
    )
    # Both at once; an outcome may arrive up to max_delay after the event it labels.
    events_slice, outcomes_slice = await asyncio.gather(
        read_range(bootstrap, topics.events, warm_start, end_ms, progress=on_fetch),
        read_range(bootstrap, topics.outcomes, warm_start, end_ms + policy.max_delay_ms),
    )
    events = decode_slice(pipeline.events, events_slice, settings.max_event_bytes)
    outcomes = decode_slice(pipeline.outcomes, outcomes_slice, settings.max_event_bytes)
    progress(f"computing {len(pipeline.features)} features of {len(events):,} events …")
    return build_dataset(
        pipeline, policy, events, outcomes, start_ms, end_ms, warm_start, events_slice,
        outcomes_slice,
    )  # fmt: skip


def build_dataset(
    pipeline: Pipeline,
    policy: JoinPolicy,
    events: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
    start_ms: int,
    end_ms: int,
    warm_start_ms: int,
    events_slice: TopicSlice | None = None,
    outcomes_slice: TopicSlice | None = None,
) -> Dataset:
    """Rows of ``events`` (in arrival order, warm-up included) in [start_ms, end_ms)."""
    ev = pipeline.events
    features = offline_features(pipeline, events, outcomes)
    # The occurrence the worker scored first, for each id in the range (a redelivered copy is
    # scored again online, with the same prediction id; a backtest counts the event once).
    first: dict[Any, int] = {}
    time_field, id_field = ev.time_field, ev.id_field
    for i, (e, dropped) in enumerate(zip(events, features.dropped.tolist(), strict=True)):
        if not dropped and start_ms <= e[time_field] < end_ms:
            first.setdefault(e[id_field], i)
    order = sorted(first.values(), key=lambda i: (events[i][time_field], str(events[i][id_field])))
    index = np.asarray(order, dtype=np.int64)
    times = np.fromiter((events[i][time_field] for i in order), dtype=np.int64, count=len(order))
    ids = [str(events[i][id_field]) for i in order]
    labels, open_windows = label_rows(pipeline, policy, ids, times, outcomes)
    key_field = ev.key_field or ev.id_field
    return Dataset(
        start_ms=start_ms,
        end_ms=end_ms,
        warm_start_ms=warm_start_ms,
        event_ids=np.asarray(ids, dtype=str),
        event_time_ms=times,
        entity_keys=np.asarray([events[i][key_field] for i in order]),
        X=features.X[index] if order else features.X[:0],
        labels=labels,
        events_read=len(events),
        outcomes_read=len(outcomes),
        open_windows=open_windows,
        read_offsets={
            s.topic: dict(s.offsets) for s in (events_slice, outcomes_slice) if s is not None
        },
    )


def label_rows(
    pipeline: Pipeline,
    policy: JoinPolicy,
    event_ids: Sequence[str],
    event_time_ms: np.ndarray,
    outcomes: Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, int]:
    """Labels by the join policy: the first outcome of an id (in arrival order) within
    max_delay of the event labels it; none -> ``on_missing``. Also returns how many rows have
    no outcome and a window still open at the newest outcome time read (their label may yet
    change)."""
    spec = pipeline.outcomes
    assert spec is not None and spec.label_field is not None
    row_of = {event_id: i for i, event_id in enumerate(event_ids)}
    missing = policy.missing_label()
    labels = np.full(len(event_ids), np.nan if missing is None else float(missing))
    labelled = np.zeros(len(event_ids), dtype=bool)
    newest = -(2**63)
    for o in outcomes:
        at = o[spec.time_field]
        newest = max(newest, at)
        i = row_of.get(str(o[spec.id_field]))
        if i is None or labelled[i] or not policy.in_window(int(event_time_ms[i]), at):
            continue
        labelled[i] = True
        labels[i] = float(bool(o[spec.label_field]))
    still_open = ~labelled & (event_time_ms + policy.max_delay_ms > newest)
    return labels, int(np.count_nonzero(still_open))
