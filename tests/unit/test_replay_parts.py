"""`rtscore replay`'s pure parts: times on the command line, topic names, pacing, checkpoints."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.replay.command import source_topic, state_path
from streams.replay.copy import Pace, ReplayState, _Clock
from streams.replay.ranges import parse_time, show_time
from streams.settings import Settings


def test_times_are_utc_dates_times_or_epoch_ms() -> None:
    assert parse_time("2018-04-01", "--from") == 1522540800000
    assert parse_time("2018-04-01T06:30", "--from") == 1522540800000 + 6.5 * 3600 * 1000
    assert parse_time("2018-04-01T06:30+02:00", "--from") == 1522540800000 + 4.5 * 3600 * 1000
    assert parse_time("1522540800123", "--to") == 1522540800123
    assert show_time(1522540800000) == "2018-04-01 00:00:00 UTC"
    with pytest.raises(ConfigError, match="--to 'yesterday' is not a time"):
        parse_time("yesterday", "--to")


def test_topic_names_and_the_state_file(tmp_path) -> None:
    settings = Settings(topic_prefix="demo", home=tmp_path)
    assert source_topic(settings, "events") == "demo.events"
    assert source_topic(settings, "model-events") == "demo.model-events"
    assert source_topic(settings, "other.topic") == "other.topic"
    path = state_path(settings, "demo.events", "a/b")
    assert path.parent == tmp_path / "replay" and "/" not in path.name


def test_pacing_by_rate_and_by_event_time() -> None:
    clock = _Clock(Pace(rate=100.0), start_ms=0)
    clock.sent = 50
    assert 0.49 < clock.wait_s(0) <= 0.51  # the 51st record is due at 0.51 s
    fast = _Clock(Pace(), start_ms=0)
    assert fast.wait_s(10**9) == 0.0
    speed = _Clock(Pace(speed=60.0), start_ms=0)
    assert 59.9 < speed.wait_s(3_600_000) <= 60.0  # an hour of event time in a minute
    assert 59.9 < speed.wait_s(1_000) <= 60.0  # a record behind the newest is due with it


def test_state_round_trips(tmp_path) -> None:
    state = ReplayState("a", "b", 1, 2, {0: (3, 9), 1: (0, 0)}, {0: 5, 1: 0}, {0: 4}, {0: 1})
    path = tmp_path / "s.json"
    state.save(path)
    loaded = ReplayState.load(path)
    assert loaded == state and loaded.total == 6 and loaded.plan[0] == (3, 9)
