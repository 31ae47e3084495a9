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

    watch = EmptyPartitions("127.0.0.1:1", ["t"], read=read)
    assert asyncio.run(watch.refresh()) is True
    assert asyncio.run(watch.refresh()) is False  # logged, not raised
    assert watch.empty("t") == {2}
    assert "keeping the last known ones" in caplog.text
    watch.saw("t", [2])
    assert watch.empty("t") == frozenset(), "a record there: it counts again at once"
