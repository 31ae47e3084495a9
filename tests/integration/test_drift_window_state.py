"""Window counts in the real Redis: merged across partitions and workers, redelivery adds
nothing, a window closes only when every partition has passed it, and is claimed once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import redis

from streams.drift.window_state import Item, WindowState

pytestmark = pytest.mark.integration
DAY = 86_400_000


@pytest.fixture
def client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    for key in c.scan_iter(match=f"{{{unique_prefix}:*", count=5000):
        c.delete(key)


def ones(idx: Sequence[int]) -> dict[str, float]:
    return {"rows": float(len(idx)), "x": 2.0 * len(idx)}


def items(partition: int, offsets: range, window: int = 0) -> list[Item]:
    return [Item(partition, o, window, i) for i, o in enumerate(offsets)]


def test_two_workers_merge_and_redelivery_adds_nothing(
    client: redis.Redis, unique_prefix: str
) -> None:
    a = WindowState(client, unique_prefix, "p")
    b = WindowState(client, unique_prefix, "p")  # a second worker on the same pipeline
    assert a.apply("t", items(0, range(0, 100)), ones) == 0
    assert b.apply("t", items(1, range(0, 50)), ones) == 0
    # the whole first batch again, then one that overlaps what was applied: only new rows
    a.apply("t", items(0, range(0, 100)), ones)
    b.apply("t", items(0, range(80, 130)), ones)
    assert a.counts(0) == {"rows": 180.0, "x": 360.0}
    # another topic's partition 0 is another offset sequence
    a.apply("u", items(0, range(0, 10)), ones)
    assert a.counts(0)["rows"] == 190.0


def test_a_window_closes_when_every_partition_passed_it_and_is_claimed_once(
    client: redis.Redis, unique_prefix: str
) -> None:
    a = WindowState(client, unique_prefix, "p")
    b = WindowState(client, unique_prefix, "p")
    a.apply("t", items(0, range(0, 5), window=0), ones)
    a.apply("t", items(0, range(5, 10), window=DAY), ones)
    a.raise_watermarks({0: 2 * DAY + 5})
    assert a.closable(2, DAY, 0) == [], "partition 1 has not been seen"
    b.raise_watermarks({1: DAY + 10})
    b.raise_watermarks({1: DAY - 10})  # a lower time never lowers a watermark
    assert a.closable(2, DAY, 5) == [0]
    assert a.closable(2, DAY, 20) == [], "grace not passed yet"
    assert [a.claim(0), b.claim(0)] == [True, False]
    a.finish(0, None)
    assert b.claim(0) is False
    assert a.closable(2, DAY, 5) == []
    # rows for a reported window are late: counted, not applied
    assert b.apply("t", items(1, range(0, 3), window=0), ones) == 3
    assert a.counts(0)["rows"] == 5.0


def test_a_released_claim_can_be_taken_again(client: redis.Redis, unique_prefix: str) -> None:
    a = WindowState(client, unique_prefix, "p")
    b = WindowState(client, unique_prefix, "p")
    assert a.claim(0)
    a.release(0)
    assert b.claim(0)


def test_labels_are_kept_apart_and_forgotten_once_reported(
    client: redis.Redis, unique_prefix: str
) -> None:
    s = WindowState(client, unique_prefix, "p")
    s.apply("t", items(0, range(0, 10)), ones)
    s.apply("o", items(0, range(0, 4)), lambda idx: {"pos": float(len(idx))}, labels=True)
    s.apply("o", items(0, range(0, 4)), lambda idx: {"pos": float(len(idx))}, labels=True)
    assert s.counts(0, labels=True) == {"pos": 4.0}
    s.finish(DAY, label_window=0)
    assert s.counts(0) == {} and s.counts(0, labels=True) == {}
    late = s.apply("o", items(0, range(4, 6)), lambda idx: {"pos": 1.0}, labels=True)
    assert late == 2


def test_with_label_drift_a_window_waits_for_the_outcomes_too(
    client: redis.Redis, unique_prefix: str
) -> None:
    s = WindowState(client, unique_prefix, "p")
    s.apply("t", items(0, range(0, 5)), ones)
    s.raise_watermarks({0: 3 * DAY})
    assert s.closable(1, DAY, 0, outcome_partitions=1) == [], "no outcome seen yet"
    s.raise_watermarks({0: DAY // 2}, outcomes=True)
    assert s.closable(1, DAY, 0, outcome_partitions=1) == [], "outcomes are behind"
    s.raise_watermarks({0: DAY}, outcomes=True)
    assert s.closable(1, DAY, 0, outcome_partitions=1) == [0]
    assert s.closable(1, DAY, 0) == [0]


def test_an_empty_partition_is_left_out_of_the_watermark(
    client: redis.Redis, unique_prefix: str
) -> None:
    """Records only on partitions 0 and 1 of 3: with partition 2 known empty, windows close;
    without it, they never do. An empty outcomes partition likewise."""
    s = WindowState(client, unique_prefix, "p")
    s.apply("t", items(0, range(0, 5), window=0), ones)
    s.raise_watermarks({0: 2 * DAY, 1: DAY + 10})
    assert s.closable(3, DAY, 0) == [], "partition 2 has no watermark"
    assert s.closable(3, DAY, 0, empty={2}) == [0]
    assert s.closable(3, DAY, 20, empty={2}) == [], "partition 1 has not passed the grace"
    s.raise_watermarks({1: 2 * DAY}, outcomes=True)
    assert s.closable(3, DAY, 0, 2, empty={2}) == [], "outcomes partition 0 is not seen"
    assert s.closable(3, DAY, 0, 2, empty={2}, outcome_empty={0}) == [0]
    assert s.closable(3, DAY, 0, empty={0, 1, 2}) == [], "no partition holds a record"
