"""A namespace's keys include the drift windows' hash-tagged ones (a demo reset that missed
them left old windows marked reported, and the next demo published no drift report)."""

from __future__ import annotations

import pytest
import redis

from streams.drift.window_state import WindowState
from streams.join.state import JoinState
from streams.redis_keys import namespace_keys

pytestmark = pytest.mark.integration


def test_every_processors_keys_are_in_the_namespace(redis_url: str, unique_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    other = f"{unique_prefix}x"  # a namespace that merely starts the same
    try:
        drift = WindowState(client, unique_prefix, "fraud")
        drift.claim(0)
        drift.finish(0, None)
        JoinState(client, unique_prefix, "fraud", 1000, 1000).heartbeat("w", 1)
        client.set(f"{unique_prefix}:fraud:customer:{{1}}:ev", b"1")
        client.set(f"{other}:fraud:customer:{{1}}:ev", b"1")
        keys = {k.decode() for k in namespace_keys(client, unique_prefix)}
        assert f"{{{unique_prefix}:drift:fraud:0}}:report" in keys
        assert any(k.startswith(f"{unique_prefix}:join:") for k in keys)
        assert f"{unique_prefix}:fraud:customer:{{1}}:ev" in keys
        assert not any(other in k for k in keys)
    finally:
        for key in [*namespace_keys(client, unique_prefix), *namespace_keys(client, other)]:
            client.delete(key)
