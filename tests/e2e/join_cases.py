"""A join workload with every case the join must handle, produced to real topics, the join
worker run as a child process (`rtscore join`), and its outputs read back and checked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.topic_reader import read_range
from streams.codecs import RecordCodec
from streams.demo.publish import json_bytes, publish
from streams.settings import Settings
from streams.topics import record_counts

DAY = 86_400_000
HOUR = 3_600_000
SENTINEL_DAY = 40  # past every window's end + max_delay (30d) + grace (1h): closes them all


@dataclass
class Workload:
    """What was produced, and what the join must make of it."""

    predictions: list[dict[str, Any]] = field(default_factory=list)  # in production order
    early_outcomes: list[dict[str, Any]] = field(default_factory=list)  # before predictions
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # after predictions
    expect_status: dict[str, tuple[str, int]] = field(
        default_factory=dict
    )  # pid -> (status, label)
    expect_dead: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    @property
    def n_outcome_records(self) -> int:
        return len(self.early_outcomes) + len(self.outcomes)


def prediction(i: int, t: int, customer: int, rng: np.random.Generator, label: int) -> dict:
    arm_b = customer % 3 == 0  # an A/B arm served by another version
    score = float(np.clip(0.35 * label + rng.random() * 0.65, 0.0, 1.0))
    return {
        "prediction_id": f"pid-{i}",
        "pipeline": "fraud",
        "event_id": str(i),
        "entity_key": str(customer),
        "event_time": t,
        "model_name": "fraud",
        "model_version": 2 if arm_b else 1,
        "variant": "arm-b" if arm_b else "champion",
        "score": score,
        "features": [float(i), 1.0],
        "source_partition": 0,
        "source_offset": i,
        "ingest_time": t,
        "scored_time": t,
        "batch_size": 1,
        "batch_latency_ms": 1.0,
        "shadows": [
            {
                "model_name": "fraud",
                "model_version": 3,
                "variant": "challenger",
                "score": float(rng.random()),
            }
        ],
    }


def outcome(i: int, t_event: int, t_out: int, customer: int, fraud: bool) -> dict[str, Any]:
    return {
        "transaction_id": i,
        "outcome_datetime": t_out,
        "tx_datetime": t_event,
        "customer_id": customer,
        "terminal_id": 7,
        "is_fraud": fraud,
        "scenario": 1 if fraud else 0,
    }


def build_workload(n: int, seed: int, partitions: int) -> Workload:
    """``n`` events over days 0-4: matched with the outcome before or after the prediction,
    never labeled, labeled too late; duplicates of both; orphan outcomes; sentinels."""
    from aiokafka.partitioner import DefaultPartitioner

    rng = np.random.default_rng(seed)
    w = Workload()
    times = np.sort(rng.integers(0, 5 * DAY, n))
    # Out of order within the grace (1h): shuffle neighbours a little.
    jitter = times + rng.integers(0, 20 * 60_000, n)
    order = np.argsort(jitter, kind="stable")
    kinds = rng.choice(["after", "before", "none", "too_late"], n, p=[0.45, 0.2, 0.25, 0.1])
    for j in order:
        i = int(j)
        t = int(times[i])
        customer = int(rng.integers(0, 40))
        fraud = bool(rng.random() < 0.3)
        kind = kinds[i]
        label = int(fraud) if kind in ("after", "before") else 0
        pred = prediction(i, t, customer, rng, label)
        w.predictions.append(pred)
        if rng.random() < 0.05:  # the scoring worker published it twice (a redelivery)
            w.predictions.append(pred)
        pid = pred["prediction_id"]
        if kind in ("after", "before"):
            delay = int(rng.integers(HOUR, 20 * DAY))
            rec = outcome(i, t, t + delay, customer, fraud)
            (w.outcomes if kind == "after" else w.early_outcomes).append(rec)
            if rng.random() < 0.1:  # a second outcome record of the same event: ignored
                w.outcomes.append({**rec, "outcome_datetime": t + delay + HOUR})
                w.duplicates += 1
            w.expect_status[pid] = ("matched", label)
        else:
            w.expect_status[pid] = ("expired", 0)
            if kind == "too_late":
                w.outcomes.append(outcome(i, t, t + 31 * DAY, customer, True))
                w.expect_dead["outcome_after_window"] += 1
    # Outcomes of events that were never scored: orphans.
    for k in range(max(3, n // 25)):
        i = 10_000_000 + k
        t = int(rng.integers(0, 5 * DAY))
        w.outcomes.append(outcome(i, t, t + DAY, int(rng.integers(0, 40)), True))
        w.expect_dead["orphan_outcome"] += 1
    # Outcomes out of order, within the grace (1h): the join's watermark assumes no more.
    late_by = rng.integers(0, 40 * 60_000, len(w.outcomes))
    arrival = [o["outcome_datetime"] + int(d) for o, d in zip(w.outcomes, late_by, strict=True)]
    w.outcomes = [w.outcomes[int(k)] for k in np.argsort(arrival)]
    # One matched sentinel per partition at day 40 moves every partition's watermark past
    # the windows (a live stream does this by itself).
    partitioner = DefaultPartitioner()
    covered: set[int] = set()
    customer = 1000
    while len(covered) < partitions:
        part = partitioner(str(customer).encode(), list(range(partitions)), list(range(partitions)))
        if part not in covered:
            covered.add(part)
            i = 20_000_000 + customer
            t = SENTINEL_DAY * DAY
            pred = prediction(i, t, customer, rng, 0)
            w.predictions.append(pred)
            w.outcomes.append(outcome(i, t, t + HOUR, customer, False))
            w.expect_status[pred["prediction_id"]] = ("matched", 0)
        customer += 1
    return w


async def produce(settings: Settings, records: list[dict[str, Any]], kind: str) -> None:
    topics = settings.topics
    if kind == "predictions":
        codec = RecordCodec.from_file(settings.schemas_dir, "prediction.avsc")
        await publish(
            settings.kafka_bootstrap,
            topics.predictions,
            records,
            key_field="entity_key",
            time_field="event_time",
            codec=lambda r: codec.encode(dict(r), strict=True),
        )
    else:
        await publish(
            settings.kafka_bootstrap,
            topics.outcomes,
            records,
            key_field="customer_id",
            time_field="outcome_datetime",
            codec=json_bytes,
        )


def produce_workload(settings: Settings, w: Workload) -> None:
    async def run() -> None:
        await produce(settings, w.early_outcomes, "outcomes")
        await produce(settings, w.predictions, "predictions")
        await produce(settings, w.outcomes, "outcomes")

    asyncio.run(run())


class JoinProcess:
    """`rtscore join` as a real child process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, **settings.as_env()}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "join"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"join exited {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def counts(settings: Settings) -> dict[str, int]:
    t = settings.topics
    names = [t.labeled, t.dlq, t.performance]
    return asyncio.run(record_counts(settings.kafka_bootstrap, names))


def wait_for(settings: Settings, join: JoinProcess, w: Workload, timeout: float) -> None:
    """Until the labeled and dead-letter topics hold at least what is expected and the
    performance topic has the windows of days 0-4 (5 windows x 3 scorers)."""
    t = settings.topics
    deadline = time.monotonic() + timeout
    while True:
        got = counts(settings)
        if (
            got[t.labeled] >= len(w.expect_status)
            and got[t.dlq] >= sum(w.expect_dead.values())
            and got[t.performance] >= 5 * 3
        ):
            return
        join.alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout with {got}:\n{join.log_tail()}")
        time.sleep(0.2)


def read_topic(settings: Settings, topic: str, schema: str) -> list[dict[str, Any]]:
    codec = RecordCodec.from_file(settings.schemas_dir, schema)
    sliced = asyncio.run(read_range(settings.kafka_bootstrap, topic, idle_timeout_s=10))
    return [codec.decode(v) for _, v, _, _, _ in sliced.records if v is not None]


def check_exactly_once(settings: Settings, w: Workload) -> tuple[list[dict[str, Any]], int]:
    """Every prediction has one labeled decision, as expected; every dead letter is one of
    the expected reasons. Returns the distinct labeled records and how many copies were extra."""
    labeled = read_topic(settings, settings.topics.labeled, "labeled_prediction.avsc")
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in labeled:
        by_id[rec["prediction_id"]].append(rec)
    assert set(by_id) == set(w.expect_status), "a prediction without (or an unknown) label"
    for pid, recs in by_id.items():
        assert all(r == recs[0] for r in recs), f"{pid} got different labeled records: {recs}"
        assert (recs[0]["status"], recs[0]["label"]) == w.expect_status[pid], pid
    dead = read_topic(settings, settings.topics.dlq, "dead_letter.avsc")
    reasons = Counter(d["reason"] for d in dead)
    distinct_dead = {(d["source_partition"], d["source_offset"]): d["reason"] for d in dead}
    assert Counter(distinct_dead.values()) == w.expect_dead, reasons
    assert all(d["stage"] == "join" for d in dead)
    extra = len(labeled) - len(by_id)
    return [recs[0] for recs in by_id.values()], extra
