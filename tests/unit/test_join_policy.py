"""The [join] table and the labelling rule shared by the join, training and backtests."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.join.policy import DEFAULT_MAX_DELAY_MS, JoinPolicy, join_policy, parse_join
from streams.pipeline import load_pipeline
from streams.settings import DEMO_PIPELINE, REPO_ROOT

DAY = 86_400_000


def test_defaults_and_demo() -> None:
    assert parse_join({}, "p.toml") == JoinPolicy(DEFAULT_MAX_DELAY_MS, "negative")
    demo = join_policy(load_pipeline(DEMO_PIPELINE, REPO_ROOT / "schemas"))
    assert demo == JoinPolicy(30 * DAY, "negative")


def test_window_edges() -> None:
    policy = parse_join({"max_delay": "7d", "on_missing": "unlabeled"}, "p.toml")
    assert policy.in_window(0, 7 * DAY)
    assert not policy.in_window(0, 7 * DAY + 1)
    assert policy.window_end_ms(5) == 7 * DAY + 5
    assert policy.missing_label() is None
    assert JoinPolicy().missing_label() == 0


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"max_delay": "soon"}, "not a duration"),
        ({"max_delay": "0d"}, "must be positive"),
        ({"on_missing": "drop"}, "on_missing"),
        ({"window": "7d"}, "unknown keys"),
    ],
)
def test_bad_tables_say_what_to_write(raw: dict[str, object], needle: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_join(raw, "p.toml")
