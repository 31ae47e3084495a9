"""Every Redis key of a namespace: the online features and the join's keys start with
``<namespace>:``; the drift windows' keys are hash-tagged whole, ``{<namespace>:drift:…}``."""

from __future__ import annotations

from collections.abc import Iterator

import redis


def namespace_keys(client: redis.Redis, namespace: str) -> Iterator[bytes]:
    for pattern in (f"{namespace}:*", f"{{{namespace}:*"):
        yield from client.scan_iter(match=pattern, count=1000)
