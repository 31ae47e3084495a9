"""The online store in Redis: per entity key a sorted set of its events by event time (and
one of its labels), updated and read by one Lua script call per (event, entity), all calls
of a micro-batch pipelined in one round trip.

Keys: ``{namespace}:{pipeline}:{entity}:{<key>}:ev|ids|lab|out`` (layout and encoding in
:mod:`streams.features.lua`). The hash tag is the entity key, so one key's keys share a Redis
Cluster slot and a cluster pipeline splits by slot safely; the namespace keeps a backtest's
state apart from production's. Scripts are generated from the pipeline at start-up, loaded
with SCRIPT LOAD and called with EVALSHA; they are idempotent per event id, so a batch retried
after an outage (:class:`~streams.errors.DependencyUnavailable`) adds nothing twice.

Round trips per :meth:`RedisStore.update_and_read`: one under late_policy ``score``. Under
``dead_letter`` another entity's script must not add a late event and only the partition-key
entity's script knows it is late, so a first round trip runs those scripts and a second the
other entities' for the events not dropped (one when there is no other entity).
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import numpy as np
import redis
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from streams.errors import DependencyUnavailable
from streams.features.lua import OUTCOME_SCRIPT, entity_script
from streams.features.online import (
    FLAG_DROPPED,
    FLAG_ON_TIME,
    EntityPlan,
    StatefulBlock,
    StatePlan,
)
from streams.pipeline import Pipeline

log = logging.getLogger(__name__)

_LABEL = struct.Struct(">ddd")  # labelled event time, outcome time, label (1/0)

# Errors after which the same batch may well succeed: the worker pauses and retries it.
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)
_RETRIABLE = (
    *_UNAVAILABLE,  # LOADING (a restarting Redis) is a ConnectionError
    OutOfMemoryError,
    ReadOnlyError,  # a replica promoted by a failover
    MasterDownError,
    TryAgainError,
    ClusterDownError,
)


@dataclass(frozen=True)
class _Script:
    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> _Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


@dataclass
class _Calls:
    """The EVALSHA commands of one round trip, and which row and entity each one is for."""

    commands: list[tuple[str | int | bytes, ...]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    entities: list[int] = field(default_factory=list)

    def add(self, command: tuple[str | int | bytes, ...], row: int, entity: int) -> None:
        self.commands.append(command)
        self.rows.append(row)
        self.entities.append(entity)


class RedisStore:
    """:class:`~streams.features.online.OnlineStore` in Redis (see the module docstring).

    ``namespace`` keeps apart the state of different runs over the same pipeline (production
    uses the topic prefix, a backtest another): no key of one is ever read by another.
    ``client`` may be a ``redis.Redis`` (or a cluster client); its timeouts bound how long a
    batch waits before :class:`~streams.errors.DependencyUnavailable` is raised.
    """

    def __init__(self, pipeline: Pipeline, client: redis.Redis, namespace: str) -> None:
        self.plan = StatePlan.of(pipeline)
        self.client = client
        self.prefix = f"{namespace}:{pipeline.name}"
        self._scripts = [_Script.of(entity_script(e, self.plan)) for e in self.plan.entities]
        self._outcome_script = _Script.of(OUTCOME_SCRIPT)
        self._rows = [struct.Struct(">" + "d" * (1 + len(e.fields))) for e in self.plan.entities]
        self._loaded = False

    def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> StatefulBlock:
        plan = self.plan
        n = len(events)
        block = StatefulBlock(
            np.full((n, plan.n_stateful), np.nan), np.zeros(n, bool), np.zeros(n, bool)
        )
        two_trips = plan.drop_late and len(plan.entities) > 1
        entities = range(1) if two_trips else range(len(plan.entities))
        calls = self._event_calls(events, range(n), entities)
        self._collect(calls, self._run(calls), block)
        if two_trips:
            rows = np.flatnonzero(~block.dropped).tolist()
            calls = self._event_calls(events, rows, range(1, len(plan.entities)))
            self._collect(calls, self._run(calls), block)
        return block

    def add_outcomes(self, outcomes: Sequence[Mapping[str, Any]]) -> int:
        plan = self.plan
        if plan.outcome_fields is None or not plan.label_entities:
            return 0
        id_field, time_field, known_field, label_field = plan.outcome_fields
        sha = self._outcome_script.sha
        calls = _Calls()
        for i, o in enumerate(outcomes):
            event_id, at, known = str(o[id_field]), int(o[time_field]), int(o[known_field])
            label = 1 if o[label_field] else 0
            member = event_id.encode() + b"\0" + _LABEL.pack(at, known, label)
            for j, entity in enumerate(plan.label_entities):
                key = self._key_prefix(entity, o)
                calls.add(
                    (
                        sha,
                        2,
                        key + "lab",
                        key + "out",
                        event_id,
                        member,
                        at,
                        f"{known}|{label}",
                        entity.ttl_ms,
                    ),
                    i,
                    j,
                )
        replies = self._run(calls)
        return sum(int(r) for r, j in zip(replies, calls.entities, strict=True) if j == 0)

    def keys_of(self, entity: str, key: object) -> list[str]:
        """The Redis keys an entity key may have (for operators and tests)."""
        prefix = f"{self.prefix}:{entity}:{{{key}}}:"
        return [prefix + suffix for suffix in ("ev", "ids", "lab", "out")]

    # -- internals ---------------------------------------------------------------------------

    def _key_prefix(self, entity: EntityPlan, record: Mapping[str, Any]) -> str:
        return f"{self.prefix}:{entity.name}:{{{record[entity.key_field]}}}:"

    def _event_calls(
        self, events: Sequence[Mapping[str, Any]], rows: Iterable[int], entities: range
    ) -> _Calls:
        calls = _Calls()
        id_field, time_field = self.plan.id_field, self.plan.time_field
        for i in rows:
            event = events[i]
            event_id, t = str(event[id_field]), int(event[time_field])
            for j in entities:
                entity = self.plan.entities[j]
                key = self._key_prefix(entity, event)
                packed = self._rows[j].pack(t, *[float(event[name]) for name in entity.fields])
                member = event_id.encode() + b"\0" + packed
                if entity.has_labels:
                    keys: tuple[str, ...] = (key + "ev", key + "ids", key + "lab", key + "out")
                else:
                    keys = (key + "ev", key + "ids")
                calls.add((self._scripts[j].sha, len(keys), *keys, event_id, t, member), i, j)
        return calls

    def _collect(self, calls: _Calls, replies: Sequence[Any], block: StatefulBlock) -> None:
        triples = list(zip(calls.rows, replies, calls.entities, strict=True))
        for j, entity in enumerate(self.plan.entities):
            mine = [(row, r) for row, r, e in triples if e == j]
            if not mine:
                continue
            if entity.decides_lateness:
                rows = np.array([row for row, _ in mine])
                flags = np.array([int(r[0]) for _, r in mine])
                block.late[rows] = flags != FLAG_ON_TIME
                block.dropped[rows] = flags == FLAG_DROPPED
            scored = [(row, r[1:]) for row, r in mine if len(r) > 1]
            if scored and entity.columns:
                rows = np.array([row for row, _ in scored])
                block.values[np.ix_(rows, np.array(entity.columns))] = np.array(
                    [v for _, v in scored], dtype=np.float64
                )

    def _run(self, calls: _Calls) -> list[Any]:
        """All calls in one pipelined round trip. Scripts are loaded on first use, and again
        when Redis lost them (restarted): the calls that found no script run once more."""
        if not calls.commands:
            return []
        try:
            if not self._loaded:
                self._load_scripts()
            replies = self._execute(calls.commands)
            lost = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if lost:
                log.info("Redis lost the feature scripts (restarted?); loading them again")
                self._load_scripts()
                again = self._execute([calls.commands[i] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        for reply in replies:
            if isinstance(reply, _RETRIABLE) or (
                isinstance(reply, ResponseError) and str(reply).startswith("BUSY")
            ):
                raise self._unavailable(reply) from reply
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _execute(self, commands: Sequence[tuple[str | int | bytes, ...]]) -> list[Any]:
        """One pipelined round trip (the seam a benchmark overrides).

        On a plain ``redis.Redis`` the commands are packed by hiredis (a dependency, via
        redis[hiredis]) and sent on one pooled connection: redis-py's pipeline spends about
        as much CPU per command in Python as Redis spends running the script. Other clients
        (a cluster client) use their pipeline. Error replies come back in place, as
        ``raise_on_error=False`` does.
        """
        if type(self.client) is not redis.Redis:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command("EVALSHA", *command)
            return pipe.execute(raise_on_error=False)
        pack: Any = hiredis.pack_command  # its stub types the argument as a 1-tuple
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(pack(("EVALSHA", *c)) for c in commands)])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # this command's error; the rest still come
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse the connection
            raise
        finally:
            pool.release(conn)

    def _load_scripts(self) -> None:
        for script in (*self._scripts, self._outcome_script):
            sha = self.client.script_load(script.text)
            assert sha == script.sha, "Redis hashes a script as SHA-1 of its text"
        self._loaded = True

    def _unavailable(self, exc: Exception) -> DependencyUnavailable:
        return DependencyUnavailable(
            f"Redis (online features of {self.prefix}) is unavailable: {exc}",
            hint="check that Redis is up and RTSCORE_REDIS_URL points at it; the batch is "
            "retried as it was (the store dedupes by event id)",
        )
