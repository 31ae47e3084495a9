"""Closes performance windows: once the join's watermark says no prediction in a window can
change any more, its rows (merged over every bucket, so over all partitions and workers)
become PerformanceReport records, one per model version and variant."""

from __future__ import annotations

import logging
import time

from streams.codecs import RecordCodec
from streams.join.metrics import JoinMetrics
from streams.join.policy import JoinPolicy
from streams.join.state import JoinState
from streams.performance.config import PerformanceConfig
from streams.performance.windows import window_reports
from streams.publisher import Outgoing

log = logging.getLogger(__name__)


class WindowReporter:
    def __init__(
        self,
        state: JoinState,
        pipeline: str,
        policy: JoinPolicy,
        perf: PerformanceConfig,
        codec: RecordCodec,
        topic: str,
        metrics: JoinMetrics,
    ) -> None:
        self.state = state
        self.pipeline = pipeline
        self.policy = policy
        self.perf = perf
        self.codec = codec
        self.topic = topic
        self.metrics = metrics

    def closed(self, watermark: int) -> int:
        """Windows starting before this are final: every prediction in them is decided (its
        window, max_delay, and the grace have passed the watermark)."""
        return watermark - self.perf.window_ms - self.policy.max_delay_ms - self.policy.grace_ms

    def close(self, watermark: int, me: str, lease_ms: int) -> tuple[list[Outgoing], list[int]]:
        """The reports of the windows this worker claimed, and those windows' starts."""
        outgoing: list[Outgoing] = []
        starts: list[int] = []
        now = int(time.time() * 1000)
        key = self.pipeline.encode()
        for start in self.state.closable_windows(self.closed(watermark)):
            # One worker reports a window; if it dies, another claims it after the lease.
            if not self.state.claim_report(start, me, lease_ms):
                continue
            try:
                reports = window_reports(
                    self.state.window_rows(start), self.pipeline, start, self.perf, now
                )
                encoded = [(self.topic, key, self.codec.encode(r), start) for r in reports]
            except ValueError:
                # A bug must not stop the join: the window stays open, the error is logged.
                log.exception("the performance report of window %d failed", start)
                continue
            outgoing.extend(encoded)
            self.metrics.report(reports)
            starts.append(start)
        return outgoing, starts

    def reported(self, starts: list[int]) -> None:
        """The reports are acknowledged: forget their windows and rows."""
        for start in starts:
            self.state.window_reported(start)
