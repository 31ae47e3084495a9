"""Frontiers shared in the real Redis: each worker sees the others' partitions, not its own,
and a board that is no longer refreshed stops holding anyone back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from streams.errors import DependencyUnavailable
from streams.pace_board import PaceBoard

pytestmark = pytest.mark.integration
DAY = 86_400_000


@pytest.fixture
def client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.delete(f"{unique_prefix}:pace")


def test_workers_exchange_the_frontiers_of_their_partitions(
    client: redis.Redis, unique_prefix: str
) -> None:
    now = [1_000.0]
    key = f"{unique_prefix}:pace"
    a = PaceBoard(client, key, "a", stale_ms=60_000, clock=lambda: now[0])
    b = PaceBoard(client, key, "b", stale_ms=60_000, clock=lambda: now[0])
    assert a.exchange({0: 5 * DAY, 1: None}) is None  # nobody else yet
    assert b.exchange({2: 2 * DAY}) == 5 * DAY  # partition 1 has nothing left
    assert a.exchange({0: 6 * DAY, 1: None}) == 2 * DAY
    # a rebalance hands partition 2 to a: b's entry for it is overwritten, b holds nothing
    assert a.exchange({0: 6 * DAY, 1: None, 2: 3 * DAY}) is None
    assert b.exchange({}) == 3 * DAY
    # a stops refreshing: after the staleness its partitions hold no one back
    now[0] += 61.0
    assert b.exchange({}) is None


def test_redis_down_pauses_like_the_store() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    board = PaceBoard(dead, "x:pace", "a", stale_ms=1000)
    with pytest.raises(DependencyUnavailable, match="pacing across workers"):
        board.exchange({0: 0})
