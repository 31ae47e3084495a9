"""The hold-back buffer that keeps the partitions of the events topic in event-time step."""

from __future__ import annotations

from streams.pacing import HoldBack

DAY = 86_400_000


def _hold(budget: int = 2 * DAY) -> tuple[HoldBack[str], list[float]]:
    now = [0.0]
    return HoldBack(budget, idle_s=10.0, clock=lambda: now[0]), now


def test_a_partition_ahead_waits_for_the_others_to_deliver() -> None:
    hold, _ = _hold()
    for i in range(10):  # partition 0 delivers ten days; 1 and 2 nothing yet
        hold.add(0, i, i * DAY, f"a{i}")
    hw = {0: 100, 1: 50, 2: 50}
    assert hold.release(hw, {}) == []  # 1 and 2 have records to read: wait for them
    assert hold.ahead(hw, {}) == {0}
    hold.add(1, 0, 0, "b0")
    hold.add(2, 0, DAY // 2, "c0")
    # floor 0 (partition 1's oldest): days 0..2 of partition 0 and what 1 and 2 sent
    assert hold.release(hw, {}) == ["a0", "a1", "a2", "b0", "c0"]
    assert len(hold) == 7
    # partitions 1 and 2 still have records: partition 0 stays held past day 2.5
    assert hold.release(hw, {}) == []
    hold.add(1, 1, 5 * DAY, "b1")
    hold.add(2, 1, 5 * DAY, "c1")
    # rounds: up to floor day 3 + 2, then up to day 5 (partitions 1 and 2) + 2
    assert hold.release(hw, {}) == ["a3", "a4", "a5", "b1", "c1", "a6", "a7"]
    assert hold.caught_up(hw, {}) == {1, 2}  # partition 0 still holds days 8 and 9


def test_a_partition_read_to_its_end_holds_no_one_back() -> None:
    hold, _ = _hold()
    for i in range(5):
        hold.add(0, i, i * DAY, f"a{i}")
    hold.add(1, 7, 0, "b7")
    # partition 1 has delivered up to its high watermark; 2 started at its end (committed)
    assert hold.release({0: 5, 1: 8, 2: 3}, {2: 3}) == ["a0", "a1", "a2", "b7", "a3", "a4"]
    assert len(hold) == 0


def test_undecodable_records_pass_and_offset_order_is_kept() -> None:
    hold, _ = _hold()
    hold.add(0, 0, 9 * DAY, "late")
    hold.add(0, 1, None, "bad")
    hold.add(1, 0, None, "bad1")
    hw = {0: 2, 1: 5}
    # partition 1 has records left and has reached no time: partition 0 waits, in order
    assert hold.release(hw, {}) == ["bad1"]
    hold.add(1, 1, 8 * DAY, "b1")
    assert hold.release(hw, {}) == ["late", "bad", "b1"]


def test_a_partition_that_never_delivers_is_waited_for_only_so_long() -> None:
    hold, now = _hold()
    hold.add(0, 0, 5 * DAY, "a0")
    hw = {0: 1, 1: 10}
    assert hold.release(hw, {}) == []
    now[0] = 11.0
    assert hold.release(hw, {}) == ["a0"]


def test_unassigned_partitions_are_dropped_and_clear_forgets() -> None:
    hold, _ = _hold()
    hold.add(0, 0, 0, "a0")
    hold.add(3, 0, 0, "gone")
    assert hold.release({0: 1}, {}) == ["a0"]
    hold.add(0, 1, DAY, "a1")
    hold.clear()
    assert len(hold) == 0 and hold.release({0: 5}, {}) == []


def test_other_workers_partitions_hold_this_ones_back_through_their_frontier() -> None:
    """``remote``: the lowest frontier of partitions another worker holds (streams.pace_board)."""
    hold, _ = _hold()
    for i in range(6):
        hold.add(0, i, i * DAY, f"a{i}")
    hw = {0: 6}  # this worker holds partition 0 only, and has received all of it
    assert hold.frontiers(hw, {}) == {0: 0}
    hold.remote = DAY  # another worker's partition is at day 1
    assert hold.release(hw, {}) == ["a0", "a1", "a2", "a3"]  # up to day 1 + 2
    assert hold.frontiers(hw, {}) == {0: 4 * DAY}
    assert hold.ahead(hw, {}) == set() and hold.caught_up(hw, {}) == set()
    hold.remote = None  # the other partitions have nothing left to score
    assert hold.release(hw, {}) == ["a4", "a5"]
    assert hold.frontiers(hw, {}) == {0: None}


def test_remote_floor_skips_own_stale_and_caught_up_partitions() -> None:
    from streams.pace_board import encode, remote_floor

    now = 100_000
    entries = {
        "0": encode(5 * DAY, now, "me"),  # mine: not waited for through the board
        "1": encode(3 * DAY, now - 1_000, "w2"),
        "2": encode(None, now, "w2"),  # nothing left to score
        "3": encode(DAY, now - 61_000, "w3"),  # not refreshed: its worker stopped
        "4": encode(-(2**63), now, "w2"),  # assigned, nothing received yet: wait for it
    }
    assert remote_floor(entries, {0}, now, stale_ms=60_000) == -(2**63)
    del entries["4"]
    assert remote_floor(entries, {0}, now, stale_ms=60_000) == 3 * DAY
    assert remote_floor(entries, {0}, now, stale_ms=62_000) == DAY
    assert remote_floor(entries, {0, 1, 3}, now, stale_ms=62_000) is None
