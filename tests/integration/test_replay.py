"""`rtscore replay` on the real broker: keys, values, timestamps, headers, partitions and order
are kept; an interrupted replay resumes without copying a record twice; a range the topic no
longer holds (retention) is refused with an error that says what to do — for backtests too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from streams.backtest.command import run_backtest
from streams.cli import _parser
from streams.errors import ConfigError, RegistryError
from streams.pipeline import load_pipeline
from streams.replay.command import state_path
from streams.replay.copy import ReplayState
from streams.topics import TopicPlan, ensure_topics
from tests.e2e.test_kcat import register_small_model

pytestmark = pytest.mark.integration
T0 = 1_600_000_000_000
START, END = T0 + 100_000, T0 + 900_000


def _records(n: int) -> list[tuple[int, bytes, bytes, int, list[tuple[str, bytes]]]]:
    """(partition, key, value, timestamp, headers); timestamps wander back and forth."""
    out = []
    for i in range(n):
        ts = T0 + i * 1000 // (n // 1000) + (-5000 if i % 7 == 3 else 0)
        headers = [("content-type", b"application/json"), ("n", str(i).encode())]
        out.append((i % 3, f"k{i % 17}".encode(), f'{{"i":{i}}}'.encode(), ts, headers))
    return out


async def _produce(bootstrap: str, topic: str, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, key=k, partition=p, timestamp_ms=ts, headers=h)
            for p, k, v, ts, h in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[tuple]] = {p: [] for p in range(partitions)}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.partition] += [
                    (m.key, m.value, m.timestamp, list(m.headers)) for m in messages
                ]
        return out
    finally:
        await consumer.stop()


def _expected(records) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {p: [] for p in range(3)}
    for p, k, v, ts, h in records:
        if START <= ts < END:
            out[p].append((k, v, ts, h))
    return out


def _replay(settings, *extra: str) -> int:
    args = _parser().parse_args(["replay", "--from", str(START), "--to", str(END), *extra])
    return int(args.handler(settings, args))


@pytest.fixture
def source(test_settings):
    src = f"{test_settings.topic_prefix}.src"
    asyncio.run(ensure_topics(test_settings, [TopicPlan(src, 3, {})]))
    records = _records(3000)
    asyncio.run(_produce(test_settings.kafka_bootstrap, src, records))
    return src, records


def test_replay_keeps_keys_timestamps_headers_partitions_and_order(test_settings, source, capsys):
    src, records = source
    dst = f"{test_settings.topic_prefix}.copy"
    assert _replay(test_settings, "--topic", src, "--to-topic", dst) == 0
    got = asyncio.run(_read_all(test_settings.kafka_bootstrap, dst, 3))
    expected = _expected(records)
    assert 1000 < sum(map(len, expected.values())) < len(records)  # the range cuts both ends
    assert got == expected
    assert "replayed" in capsys.readouterr().out
    # running it again, or resuming it, copies nothing more
    assert _replay(test_settings, "--topic", src, "--to-topic", dst) == 0
    assert _replay(test_settings, "--topic", src, "--to-topic", dst, "--resume") == 0
    assert asyncio.run(_read_all(test_settings.kafka_bootstrap, dst, 3)) == expected
    # the same source into a topic with fewer partitions is refused
    small = f"{test_settings.topic_prefix}.small"
    asyncio.run(ensure_topics(test_settings, [TopicPlan(small, 2, {})]))
    with pytest.raises(ConfigError, match="needs at least as many"):
        _replay(test_settings, "--topic", src, "--to-topic", small)


def test_interrupted_replay_resumes_and_copies_each_record_once(test_settings, source, tmp_path):
    src, records = source
    dst = f"{test_settings.topic_prefix}.copy"
    path = state_path(test_settings, src, dst)
    env = {**os.environ, **test_settings.as_env()}
    log = tmp_path / "replay.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "replay", "--topic", src, "--from", str(START),
             "--to", str(END), "--to-topic", dst, "--rate", "1000"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (path.exists() and sum(ReplayState.load(path).copied.values()) >= 400):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = ReplayState.load(path)
    assert not state.done and sum(state.copied.values()) < 1600
    with pytest.raises(ConfigError, match="--resume"):
        _replay(test_settings, "--topic", src, "--to-topic", dst)
    # As if the process had died after more acknowledgements than its last checkpoint: the
    # resumed copy must count what partition 0 of the target already holds.
    first = state.plan[0][0]
    state.copied[0], state.next_offset[0] = 0, first
    state.save(path)
    assert _replay(test_settings, "--topic", src, "--to-topic", dst, "--resume") == 0
    assert ReplayState.load(path).done
    got = asyncio.run(_read_all(test_settings.kafka_bootstrap, dst, 3))
    assert got == _expected(records)


async def _delete_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})
    finally:
        await admin.close()


def test_a_range_beyond_retention_and_an_unknown_version_are_clear_errors(test_settings, source):
    src, _ = source
    bootstrap = test_settings.kafka_bootstrap
    asyncio.run(_delete_before(bootstrap, src, 1, 500))  # partition 1 now starts ~T0 + 500 s
    with pytest.raises(ConfigError, match="no longer holds the range") as err:
        _replay(test_settings, "--topic", src, "--to-topic", f"{src}-copy")
    assert "partition(s) [1]" in err.value.message and "retention" in err.value.hint
    # the backtest checks its events topic (with the warm-up) the same way
    settings = test_settings.model_copy(update={"topic_prefix": src.rsplit(".", 1)[0]})
    asyncio.run(ensure_topics(settings))
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    register_small_model(settings)
    events = settings.topics.events
    asyncio.run(_produce(bootstrap, events, [(0, b"1", b"{}", T0 + i, []) for i in range(20)]))
    asyncio.run(_delete_before(bootstrap, events, 0, 10))
    later = T0 + pipeline.lookback_ms
    with pytest.raises(ConfigError, match=f"{events} no longer holds the range and its warm-up"):
        asyncio.run(run_backtest(settings, pipeline, later, later + 1000, ["champion"]))
    with pytest.raises(RegistryError, match="no version 7"):
        asyncio.run(run_backtest(settings, pipeline, later, later + 1000, ["champion", "7"]))
