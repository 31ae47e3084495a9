"""The Redis online store on a real Redis: equal to the reference, one round trip a batch,
idempotent across redeliveries and restarts, keys hash-tagged, expiring and namespaced."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from redis.crc import key_slot

from streams.demo.simulator import SimConfig, outcome_records, simulate, transaction_records
from streams.errors import DependencyUnavailable
from streams.features import redis_store
from streams.features.online import StatefulBlock
from streams.features.redis_store import RedisStore
from streams.features.reference import FeatureResult, reference_features
from streams.features.spec import FeatureSpec
from streams.pipeline import Pipeline, load_pipeline
from tests.feature_cases import FRAUD15_TOML
from tests.feature_cases import stack_blocks as _stack
from tests.feature_cases import store_event as ev
from tests.feature_cases import store_pipeline as make_pipeline
from tests.unit.test_memory_store import Case, cases, check_case

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class CountingConnection(redis.Connection):
    """Counts writes to the socket: one per round trip (a pipeline is written at once)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespaces(client: redis.Redis, unique_prefix: str) -> Iterator[list[str]]:
    """Namespaces a test uses (the first is unique_prefix); their keys are deleted after."""
    used = [unique_prefix]
    yield used
    for ns in used:
        _delete(client, ns)


def _delete(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def _assert_same(got: StatefulBlock, want: FeatureResult, pipeline: Pipeline) -> None:
    expected = want.X[:, [j for j, f in enumerate(pipeline.features) if f.stateful]]
    np.testing.assert_array_equal(got.late, want.late)
    np.testing.assert_array_equal(got.dropped, want.dropped)
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(expected))
    diff = np.abs(np.nan_to_num(got.values - expected, nan=0.0))
    assert diff.max() <= 1e-9, np.argwhere(diff > 1e-9)[:5]


# --- the 15-feature fraud pipeline on a light simulation ------------------------------------


@pytest.fixture(scope="module")
def fraud15(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    path = tmp_path_factory.mktemp("pipeline") / "fraud15.toml"
    path.write_text(FRAUD15_TOML)
    pipeline = load_pipeline(path, REPO / "schemas")
    assert len(pipeline.features) == 15 and pipeline.state.late_policy == "score"
    return pipeline


@pytest.fixture(scope="module")
def fraud_stream(
    fraud15: Pipeline,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], FeatureResult]:
    """~5,000 transactions: 5 % arriving up to the allowed lateness after their time, 1 %
    redelivered (within the lateness too); labels for all of them, with jittered delays."""
    cfg = SimConfig.light(
        n_customers=40,
        n_terminals=100,
        n_days=60,
        outcomes_for="all",
        outcome_jitter_days=2.0,
        compromised_terminals_per_day=0.3,
        seed=11,
    )
    sim = simulate(cfg)
    events = transaction_records(sim)
    rng = np.random.default_rng(5)
    lateness = fraud15.state.allowed_lateness_ms
    arrival = np.array([e["tx_datetime"] for e in events], dtype=np.float64)
    moved = rng.random(len(events)) < 0.05
    arrival[moved] += rng.uniform(0, lateness, moved.sum())
    again = rng.choice(len(events), len(events) // 100, replace=False)
    arrival = np.concatenate([arrival, arrival[again] + rng.uniform(0, lateness, len(again))])
    events = events + [dict(events[i]) for i in again]
    events = [events[i] for i in np.argsort(arrival, kind="stable")]
    outcomes = outcome_records(sim, cfg)
    assert 4_000 <= len(events) <= 6_000
    return events, outcomes, reference_features(fraud15, events, outcomes)


def test_fraud15_equals_the_reference_across_a_restart_and_a_redelivered_batch(
    fraud15: Pipeline, fraud_stream: Any, client: redis.Redis, namespaces: list[str]
) -> None:
    events, outcomes, want = fraud_stream
    store = RedisStore(fraud15, client, namespaces[0])
    assert store.add_outcomes(outcomes) == len(outcomes)
    assert store.add_outcomes(outcomes[:100]) == 0
    rng = np.random.default_rng(1)
    blocks, at, batch = [], 0, 0
    while at < len(events):
        size = int(rng.integers(1, 501))
        part = events[at : at + size]
        blocks.append(store.update_and_read(part))
        if batch == 3:  # crash before the commit: the batch comes again, nothing changes
            store.update_and_read(part)
        if at < len(events) // 2 <= at + size:  # a restart: a new process, same Redis
            store = RedisStore(fraud15, redis.Redis.from_url(_url(client)), namespaces[0])
        at += size
        batch += 1
    got = _stack(blocks)
    _assert_same(got, want, fraud15)
    assert not want.late.any() and np.isfinite(got.values).all()
    risk = fraud15.feature_names.index("TERMINAL_ID_RISK_30DAY_WINDOW")
    assert (want.X[:, risk] > 0).any()
    # state: each event once in its customer's set, trimmed to the retention
    stored = sum(
        client.zcard(k)
        for k in client.scan_iter(match=f"{namespaces[0]}:fraud:customer:*:ev", count=1000)
    )
    assert 0 < stored < len({e["transaction_id"] for e in events})


def _url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def test_keys_carry_hash_tags_and_ttls_and_stay_in_their_namespace(
    fraud15: Pipeline, fraud_stream: Any, client: redis.Redis, namespaces: list[str]
) -> None:
    events, outcomes, _ = fraud_stream
    namespaces.append(f"t{uuid.uuid4().hex[:10]}")
    first, second = (RedisStore(fraud15, client, ns) for ns in namespaces)
    first.add_outcomes(outcomes)
    first.update_and_read(events[:1500])
    # another namespace sees none of it: its features are those of a fresh start
    got = second.update_and_read(events[1000:1500])
    fresh = reference_features(fraud15, events[1000:1500])  # and no outcomes
    _assert_same(got, fresh, fraud15)
    pattern = re.compile(
        rf"^{namespaces[0]}:fraud:(customer|terminal):\{{(\d+)\}}:(ev|ids|lab|out)$"
    )
    keys = [k.decode() for k in client.scan_iter(match=f"{namespaces[0]}:*", count=1000)]
    assert keys and all(pattern.match(k) for k in keys), keys[:5]
    suffixes = {pattern.match(k).group(3) for k in keys}  # type: ignore[union-attr]
    assert suffixes == {"ev", "ids", "lab", "out"}
    ttls = {e.name: e.ttl_ms for e in first.plan.entities}
    for key in keys[:200]:
        entity = pattern.match(key).group(1)  # type: ignore[union-attr]
        assert 0 < client.pttl(key) <= ttls[entity]
    assert ttls["customer"] == 30 * 86_400_000 + 2 * 600_000
    # one entity key's keys share a Redis Cluster slot
    customer = first.keys_of("customer", events[0]["customer_id"])
    assert len({key_slot(k.encode()) for k in customer}) == 1
    terminal = first.keys_of("terminal", 7)
    assert terminal[0] == f"{namespaces[0]}:fraud:terminal:{{7}}:ev"
    assert len({key_slot(k.encode()) for k in terminal}) == 1


def test_each_batch_is_one_round_trip_under_score_and_two_under_dead_letter(
    fraud15: Pipeline, fraud_stream: Any, redis_url: str, namespaces: list[str]
) -> None:
    events, outcomes, _ = fraud_stream
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    store = RedisStore(fraud15, client, namespaces[0])
    store.add_outcomes(outcomes[:10])  # loads the scripts
    for part in (events[:1], events[1:1000], events[1000:1500]):
        before = CountingConnection.sends
        store.update_and_read(part)
        assert CountingConnection.sends - before == 1
    before = CountingConnection.sends
    assert store.add_outcomes(outcomes[10:500]) == 490
    assert CountingConnection.sends - before == 1

    namespaces.append(f"t{uuid.uuid4().hex[:10]}")
    dead = RedisStore(_with_policy(fraud15, "dead_letter"), client, namespaces[1])
    dead.update_and_read(events[:10])
    before = CountingConnection.sends
    dead.update_and_read(events[10:1000])
    assert CountingConnection.sends - before == 2


def _with_policy(pipeline: Pipeline, policy: str) -> Pipeline:
    return replace(pipeline, state=replace(pipeline.state, late_policy=policy))


# --- random cases, as the unit tests run them on the memory store ---------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(max_events=30))
def test_random_cases_equal_the_reference(redis_url: str, case: Case) -> None:
    client = redis.Redis.from_url(redis_url)
    namespace = f"h{uuid.uuid4().hex[:12]}"
    try:
        check_case(case, lambda pipeline: RedisStore(pipeline, client, namespace))
    finally:
        _delete(client, namespace)
        client.close()


# --- by hand ---------------------------------------------------------------------------------


def test_last_value_keeps_its_entry_without_ttl(client: redis.Redis, namespaces: list[str]) -> None:
    last = FeatureSpec("last", "last_value", field="amount", entity="cust", default=-1.0)
    gap = FeatureSpec("gap", "time_since_previous", entity="cust", default=-1.0)
    count = FeatureSpec("n", "window", entity="cust", agg="count", window_ms=10)
    store = RedisStore(make_pipeline([last, gap, count], lateness=5), client, namespaces[0])
    block = store.update_and_read([ev(1, 0, amount=3.0), ev(2, 10_000, amount=4.0)])
    block2 = store.update_and_read([ev(3, 1_000_000, amount=5.0)])
    assert block.values.tolist() == [[-1, -1, 1], [3.0, 10.0, 1]]
    assert block2.values.tolist() == [[4.0, 990.0, 1]]
    ev_key, ids_key = store.keys_of("cust", 0)[:2]
    assert sorted(client.hkeys(ids_key)) == [b"2", b"3"]  # 1 was trimmed, 2 kept as previous
    members: list[bytes] = client.zrange(ev_key, 0, -1)  # type: ignore[assignment]
    assert [m.split(b"\0")[0] for m in members] == [b"2", b"3"]
    assert client.pttl(ev_key) == -1 and client.pttl(ids_key) == -1


def test_a_lost_script_cache_is_reloaded(client: redis.Redis, namespaces: list[str]) -> None:
    count = FeatureSpec("n", "window", entity="cust", agg="count", window_ms=10)
    pipeline = make_pipeline([count])
    store = RedisStore(pipeline, client, namespaces[0])
    # a script Redis has never seen, as after a restart without the script cache
    unique = redis_store._Script.of(store._scripts[0].text + f"\n-- {uuid.uuid4().hex}\n")
    store._scripts[0] = unique
    store._loaded = True
    assert store.update_and_read([ev(1, 0), ev(2, 1)]).values.tolist() == [[1], [2]]
    assert client.script_exists(unique.sha) == [True]


def test_redis_down_is_a_retriable_dependency_error() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    count = FeatureSpec("n", "window", entity="cust", agg="count", window_ms=10)
    store = RedisStore(make_pipeline([count]), client, "down")
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="Redis") as info:
        store.update_and_read([ev(1, 0)])
    assert info.value.retriable and "RTSCORE_REDIS_URL" in (info.value.hint or "")
    assert time.monotonic() - started < 10
