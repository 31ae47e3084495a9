"""A small smoke of `rtscore bench` on the real Kafka and Redis. The bench is a benchmark, not
a timed test: only the report's shape and relations that hold on any machine are checked."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from streams.bench import bench_command

pytestmark = pytest.mark.integration


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_bench_runs_three_contenders_on_the_same_events_and_cleans_up(
    test_settings, redis_url, tmp_path, capsys
):
    path = tmp_path / "bench.json"
    args = argparse.Namespace(
        events=1000,
        naive_events=200,
        loads="0.1,0.2",
        load_seconds=0.5,
        contenders="naive,overlap,ceiling,rtscore",
        rss_events=0,
        with_drift=True,
        quick=False,
        json=path,
        seed=1,
    )
    assert bench_command(test_settings, args) == 0
    report = json.loads(path.read_text())
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\n}\n") + 2]) == report

    by_name = {c["name"]: c for c in report["contenders"]}
    assert [c["name"] for c in report["contenders"]] == [
        "rtscore",
        "ceiling",
        "naive",
        "overlap",
        "rtscore+drift",
    ]
    assert report["reference_for_loads"] == "rtscore"
    # every contender turned every backlog event into one output
    assert by_name["rtscore"]["backlog"]["outputs"] == 1000
    assert by_name["ceiling"]["backlog"]["outputs"] == 1000
    assert by_name["naive"]["backlog"]["outputs"] == 200
    assert by_name["overlap"]["backlog"]["outputs"] == 1000
    assert by_name["rtscore+drift"]["backlog"]["outputs"] == 1000
    assert by_name["rtscore+drift"]["loads"] == []  # only its maximum, beside drift
    assert report["with_drift"]["events_per_s_with"] > 0
    rts_rate = by_name["rtscore"]["backlog"]["events_per_s"]
    for c in report["contenders"]:
        b = c["backlog"]
        assert b["events_per_s"] > 0 and b["cpu_cores"] > 0 and c["peak_rss_mb"] > 10
        if c["name"] != "rtscore+drift":
            assert [load["share"] for load in c["loads"]] == [0.1, 0.2]
        for load in c["loads"]:
            assert load["offered_per_s"] == pytest.approx(load["share"] * rts_rate)
            lat = load["latency"]
            if lat is None:  # only a contender slower than the load skips it
                assert load["note"].startswith("saturated")
                continue
            assert lat["received"] == lat["sent"] > 0
            assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert by_name["rtscore"]["loads"][0]["latency"] is not None
    assert {"share_of_ceiling", "times_naive", "peak_rss_mb"} <= set(report["targets"])
    assert "| rtscore |" in out and "| ceiling |" in out and "| naive |" in out

    # nothing of the run is left: topics, Redis keys, its folder
    prefix = f"{test_settings.topic_prefix}-bench-"
    assert not [
        t for t in asyncio.run(_topics(test_settings.kafka_bootstrap)) if t.startswith(prefix)
    ]
    assert not list(redis.Redis.from_url(redis_url).scan_iter(match=f"{prefix}*", count=1000))
    assert not list((test_settings.home / "bench").glob("*"))
