"""The faust app every processor runs in: one consumer group per processor and pipeline
(``<prefix>-<pipeline>-<role>``), with the settings they all need."""

from __future__ import annotations

from typing import Any

import faust

from streams.pipeline import Pipeline
from streams.settings import Settings


def processor_app(
    settings: Settings,
    pipeline: Pipeline,
    role: str,
    *,
    small_fetches: bool = False,
    wait_empty: bool = True,
) -> faust.App:
    """A faust app for processor ``role`` (scoring, join, drift) of ``pipeline``.

    No tables and no web server: state lives in Redis, metrics on prometheus-client's port.
    ``small_fetches`` caps each partition's fetch at ``RTSCORE_FETCH_BYTES_PER_PARTITION`` so
    that the partitions' event times stay close (see :mod:`streams.pacing`). Without
    ``wait_empty`` a rebalance does not wait for the events the agent still holds unacked:
    they are read again from the committed offsets by whoever gets their partition.
    """
    datadir = settings.home / role / pipeline.name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = (
        {"consumer_max_fetch_size": settings.fetch_bytes_per_partition} if small_fetches else {}
    )
    return faust.App(
        f"{settings.topic_prefix}-{pipeline.name}-{role}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        # A short buffer: little is in flight beyond the batch being processed.
        stream_buffer_maxsize=settings.batch_max,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        stream_wait_empty=wait_empty,
        **extra,
    )
