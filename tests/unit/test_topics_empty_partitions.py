"""The cached set of empty partitions without a broker: a failed read keeps the last known
set (a timer never dies of it), and a partition counts again from its first record."""

from __future__ import annotations

import asyncio

import pytest

from streams.topics import EmptyPartitions


def test_an_unreachable_broker_keeps_the_last_known_set(caplog: pytest.LogCaptureFixture) -> None:
    calls = {"n": 0}

    async def read(_: str, names: list[str]) -> dict[str, set[int]]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise ConnectionError("broker gone")
        return {names[0]: {2}}

    watch = EmptyPartitions("127.0.0.1:1", ["t"], read=read, idle_s=0)
    assert asyncio.run(watch.refresh()) is True
    assert asyncio.run(watch.refresh()) is False  # logged, not raised
    assert watch.empty("t") == {2}
    assert "keeping the last known ones" in caplog.text
    watch.saw("t", [2])
    assert watch.empty("t") == frozenset(), "a record there: it counts again at once"


def test_a_partition_is_left_out_only_after_staying_empty_for_idle_s() -> None:
    """At start the scoring worker has written some partitions of the predictions topic and
    not yet the others: they must not be left out at once (the join would then orphan the
    outcomes of predictions still to come)."""
    import time

    async def read(_: str, names: list[str]) -> dict[str, set[int]]:
        return {names[0]: {2}}

    watch = EmptyPartitions("127.0.0.1:1", ["t"], read=read, idle_s=0.3)
    assert asyncio.run(watch.refresh()) is False
    assert watch.empty("t") == frozenset(), "empty for no time yet"
    time.sleep(0.35)
    assert asyncio.run(watch.refresh()) is True
    assert watch.empty("t") == {2}
    watch.saw("t", [2])
    assert watch.empty("t") == frozenset()
    assert asyncio.run(watch.refresh()) is False, "seen since its spell began: a new one starts"
    assert watch.empty("t") == frozenset()
