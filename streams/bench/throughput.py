"""Maximum sustained throughput over a backlog: how fast a contender's outputs appear, from the
output topics' end offsets (read without consuming them), with its CPU over the same span."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.bench import rss
from streams.errors import InfraError

SAMPLE_S = 0.05
SPAN = (0.05, 0.95)  # the rate is measured between these shares of the backlog (ramps cut)


class OutputCounter:
    """Records written to some topics since :meth:`start` (sum of end offsets)."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.topics = topics
        self.tps: list[TopicPartition] = []
        self.base = 0

    async def start(self) -> None:
        await self.consumer.start()
        for topic in self.topics:
            parts = self.consumer.partitions_for_topic(topic)
            while not parts:  # metadata of a topic made a moment ago
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(topic)
            self.tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self.base = await self._total()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def count(self) -> int:
        return await self._total() - self.base

    async def _total(self) -> int:
        return sum((await self.consumer.end_offsets(self.tps)).values())


@dataclass(frozen=True)
class Backlog:
    events: int
    outputs: int
    seconds: float  # from the start of the contender to its last output
    events_per_s: float  # between SPAN's shares of the backlog
    cpu_cores: float  # CPU seconds per wall second over the same span
    cpu_us_per_event: float


def _crossing(samples: list[tuple[float, int, float]], target: float) -> tuple[float, float]:
    """(time, cpu) where the output count reached ``target``, interpolated between samples."""
    for (t0, n0, c0), (t1, n1, c1) in itertools.pairwise(samples):
        if n1 >= target:
            share = 0.0 if n1 == n0 else (target - n0) / (n1 - n0)
            return t0 + share * (t1 - t0), c0 + share * (c1 - c0)
    t, _, c = samples[-1]
    return t, c


async def measure_backlog(
    counter: OutputCounter,
    expected: int,
    pid: int,
    alive: Callable[[], bool],
    timeout_s: float,
    progress: Callable[[int], None],
) -> Backlog:
    """Wait until ``expected`` outputs exist; the rate between SPAN's shares of them."""
    started = time.monotonic()
    samples = [(started, 0, rss.cpu_seconds(pid))]
    while True:
        await asyncio.sleep(SAMPLE_S)
        n = await counter.count()
        now = time.monotonic()
        samples.append((now, n, rss.cpu_seconds(pid)))
        progress(n)
        if n >= expected:
            break
        if not alive():
            raise InfraError(f"the contender exited after {n:,} of {expected:,} outputs")
        if now - started > timeout_s:
            raise InfraError(f"{n:,} of {expected:,} outputs after {timeout_s:.0f}s")
    t_lo, c_lo = _crossing(samples, SPAN[0] * expected)
    t_hi, c_hi = _crossing(samples, SPAN[1] * expected)
    span = max(t_hi - t_lo, SAMPLE_S)  # a tiny backlog can pass within one sample
    counted = (SPAN[1] - SPAN[0]) * expected
    return Backlog(
        events=expected,
        outputs=samples[-1][1],
        seconds=samples[-1][0] - started,
        events_per_s=counted / span,
        cpu_cores=(c_hi - c_lo) / span,
        cpu_us_per_event=(c_hi - c_lo) / counted * 1e6,
    )
