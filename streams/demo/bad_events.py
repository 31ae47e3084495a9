"""Invalid input records of every kind the worker must dead-letter, for the demo and tests.

Each maker takes a valid Transaction record and returns (bytes, the reason code the worker
must give it).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

BadMaker = Callable[[dict[str, Any], random.Random], bytes]


def _undecodable(record: dict[str, Any], rng: random.Random) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        return b'{"transaction_id": ' + str(record["transaction_id"]).encode() + b", truncated"
    if choice == 1:
        return b"\x02\x04\x06"  # Avro that ends after three fields: cut short in transit
    return b"{not json at all}"


def _missing_field(record: dict[str, Any], rng: random.Random) -> bytes:
    broken = dict(record)
    del broken[rng.choice(["tx_amount", "customer_id", "tx_datetime", "terminal_id"])]
    return json.dumps(broken).encode()


def _wrong_type(record: dict[str, Any], rng: random.Random) -> bytes:
    broken = dict(record)
    field, value = rng.choice(
        [("tx_amount", "12.50 EUR"), ("customer_id", "cust-7"), ("terminal_id", [1, 2])]
    )
    broken[field] = value
    return json.dumps(broken).encode()


def _not_finite(record: dict[str, Any], rng: random.Random) -> bytes:
    broken = dict(record)
    broken["tx_amount"] = rng.choice([float("nan"), float("inf"), float("-inf")])
    return json.dumps(broken).encode()  # json writes NaN / Infinity, which json.loads reads


def _too_large(record: dict[str, Any], rng: random.Random, size: int = 70_000) -> bytes:
    padded = dict(record)
    padded["note"] = "x" * size
    return json.dumps(padded).encode()


BAD_KINDS: dict[str, BadMaker] = {
    "undecodable": _undecodable,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "not_finite": _not_finite,
    "too_large": _too_large,
}


def bad_records(
    valid: list[dict[str, Any]], per_kind: int, seed: int = 0
) -> list[tuple[dict[str, Any], bytes, str]]:
    """``per_kind`` invalid records of each kind: (the record it was made from, bytes, reason)."""
    rng = random.Random(seed)
    out = []
    for reason, make in BAD_KINDS.items():
        for _ in range(per_kind):
            base = rng.choice(valid)
            out.append((base, make(base, rng), reason))
    rng.shuffle(out)
    return out
