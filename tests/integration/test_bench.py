"""A small smoke of `rtscore bench` on the real Redis (the bench is a benchmark, not a test:
only its shape and that batching beats per-event round trips are checked)."""

from __future__ import annotations

import argparse
import json

import pytest
import redis

from streams.bench import bench_command

pytestmark = pytest.mark.integration


def test_bench_reports_both_contenders_and_cleans_up(test_settings, redis_url, capsys):
    args = argparse.Namespace(events=2000, batch=500, seed=1)
    assert bench_command(test_settings, args) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.index("\n}\n") + 2])
    assert report["events"] == 2000 and report["features"] == 15
    assert report["batched"]["events_per_s"] > report["per_event"]["events_per_s"] > 0
    assert "| speed-up |" in out
    assert not list(redis.Redis.from_url(redis_url).scan_iter(match="bench-*", count=1000))
