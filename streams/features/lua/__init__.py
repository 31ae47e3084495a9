"""The Lua scripts of the Redis online store, generated from the pipeline's spec at start-up.

One script per entity, called once per (event, entity key) with KEYS ``ev ids [lab out]``
and ARGV ``id, time, member``:

- ``ev``  sorted set, score = event time, member = ``id NUL packed`` where ``packed`` is the
  event time and the entity's fields as big-endian doubles. NUL sorts below every other byte,
  so (score, member) order is (time, id string): the reference's tie-break and summation
  order. The values ride in the member so one ZRANGEBYSCORE reads a whole window.
- ``ids`` hash, id -> time: the dedupe (HSETNX) — the first occurrence of an id counts.
- ``lab`` sorted set of labels, score = labelled event time, member = ``id NUL`` + (its time,
  outcome time, label) as doubles; ``out`` hash, id -> ``outcome time|label`` (dedupe).

The script checks lateness (partition-key entity only), adds the event, computes every
feature of the entity for it, trims what no on-time event can read any more and sets the
keys' TTL. It returns ``{flag, feature...}`` as strings formatted ``%.17g`` (a Lua number
returned to Redis would be truncated to an integer): flag 0 on time, 1 late, 2 late and
dropped (policy dead_letter: nothing added or computed).
"""

from __future__ import annotations

from streams.features.online import EntityPlan, StatePlan
from streams.features.spec import PREVIOUS_KINDS, FeatureSpec

_PRELUDE = r"""
local ev, ids, lab, out = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, ts = ARGV[1], ARGV[2]
local t = tonumber(ts)

local function fmt(x) return string.format('%.17g', x) end
local function since(x) return '(' .. fmt(x) end

local function first_after(xs, count, x)  -- the first index i with xs[i] > x (xs ascending)
  local a, b = 1, count + 1
  while a < b do
    local mid = math.floor((a + b) / 2)
    if xs[mid] <= x then a = mid + 1 else b = mid end
  end
  return a
end

-- aggregates of xs[a..b] in order, as streams.features.reference.aggregate (0 when empty)
local function agg_sum(xs, a, b)
  local s = 0
  for i = a, b do s = s + xs[i] end
  return s
end
local function agg_mean(xs, a, b)
  if b < a then return 0 end
  return agg_sum(xs, a, b) / (b - a + 1)
end
local function agg_std(xs, a, b)
  if b < a then return 0 end
  local mean, q = agg_mean(xs, a, b), 0
  for i = a, b do local d = xs[i] - mean; q = q + d * d end  -- d * d, as the reference
  return math.sqrt(q / (b - a + 1))
end
local function agg_min(xs, a, b)
  if b < a then return 0 end
  local m = xs[a]
  for i = a + 1, b do if xs[i] < m then m = xs[i] end end
  return m
end
local function agg_max(xs, a, b)
  if b < a then return 0 end
  local m = xs[a]
  for i = a + 1, b do if xs[i] > m then m = xs[i] end end
  return m
end
local function agg_distinct(xs, a, b)
  local seen, d = {}, 0
  for i = a, b do if not seen[xs[i]] then seen[xs[i]] = true; d = d + 1 end end
  return d
end

local function remove_below(zset, hash, cut, keep_newest, suffix)
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', cut)
  if keep_newest then old[#old] = nil end
  if #old == 0 then return end
  redis.call('ZREMRANGEBYRANK', zset, 0, #old - 1)
  for c = 1, #old, 1000 do  -- stays under Lua's unpack() limit
    local names = {}
    for i = c, math.min(c + 999, #old) do
      names[#names + 1] = string.sub(old[i], 1, #old[i] - suffix - 1)
    end
    redis.call('HDEL', hash, unpack(names))
  end
end

-- dedupe and lateness
local top = redis.call('ZREVRANGE', ev, 0, 0)[1]
local newest = top and struct.unpack('>d', top, #top - SUFFIX + 1)
local flag = '0'
if LATENESS and newest and t < newest - LATENESS then
  if DROP_LATE then return {'2'} end
  flag = '1'
end
local added = redis.call('HSETNX', ids, id, ts) == 1
if added then redis.call('ZADD', ev, ts, ARGV[3]) end
local result = {flag}
"""

# The window range over the longest window, in (time, id) order.
_RANGE = r"""
local times, vals, n = {}, {}, 0
for j = 1, NFIELDS do vals[j] = {} end
local r = redis.call('ZRANGEBYSCORE', ev, since(t - LOOKBACK), fmt(t - MIN_DELAY))
n = #r
for i = 1, n do unpack_row(r[i], #r[i] - SUFFIX + 1, times, vals, i) end
"""

# Labels known by t (outcome time <= t) and positive, by labelled event time.
_LABELS = r"""
local ltimes, positive, m = {}, {}, 0
do
  local r = redis.call('ZRANGEBYSCORE', lab, since(t - LOOKBACK), fmt(t - MIN_DELAY))
  m = #r
  for i = 1, m do
    local at, known, label = struct.unpack('>ddd', r[i], #r[i] - 23)
    ltimes[i] = at
    positive[i] = label == 1 and known <= t
  end
end
local function positives(lo, hi)
  local c = 0
  for i = first_after(ltimes, m, lo), first_after(ltimes, m, hi) - 1 do
    if positive[i] then c = c + 1 end
  end
  return c
end
"""

# The previous event: the greatest (time, id) <= t with another id.
_PREVIOUS = r"""
local prev = false
do
  local r = redis.call('ZREVRANGEBYSCORE', ev, ts, '-inf', 'LIMIT', 0, 2)
  local p = r[1]
  if p and string.sub(p, 1, #p - SUFFIX - 1) == id then p = r[2] end
  if p then prev = {struct.unpack(ROW, p, #p - SUFFIX + 1)} end
end
"""

_TRIM = r"""
-- trim what no on-time event reads any more, and let idle keys expire
if added then
  local cut = since(math.max(newest or t, t) - RETENTION)
  remove_below(ev, ids, cut, KEEPS_PREVIOUS, SUFFIX)
  if not KEEPS_PREVIOUS then
    redis.call('PEXPIRE', ev, TTL)
    redis.call('PEXPIRE', ids, TTL)
  end
  if lab then
    remove_below(lab, out, cut, false, 24)
    redis.call('PEXPIRE', lab, TTL)
    redis.call('PEXPIRE', out, TTL)
  end
end
return result
"""

# KEYS: lab, out; ARGV: labelled id, member, its time, "outcome time|label", ttl ms.
# Returns 1 when the id is new (the first outcome of an event counts).
OUTCOME_SCRIPT = r"""
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[4]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


def entity_script(entity: EntityPlan, plan: StatePlan) -> str:
    """The script of one entity: constants, the shared prelude, its features, the trim."""
    nfields = len(entity.fields)
    row = ", ".join(["times[i]", *(f"vals[{j}][i]" for j in range(1, nfields + 1))])
    head = [
        f"-- rtscore online features: entity {entity.name!r} keyed by {entity.key_field!r}",
        f"local NFIELDS, SUFFIX, ROW = {nfields}, {8 * (nfields + 1)}, '>{'d' * (nfields + 1)}'",
        f"local LATENESS = {plan.lateness_ms if entity.decides_lateness else 'nil'}",
        f"local DROP_LATE = {_lua_bool(plan.drop_late)}",
        f"local LOOKBACK, MIN_DELAY = {entity.lookback_ms}, {entity.min_delay_ms}",
        f"local RETENTION, TTL = {entity.retention_ms}, {entity.ttl_ms}",
        f"local KEEPS_PREVIOUS = {_lua_bool(entity.keeps_previous)}",
        "local function unpack_row(member, at, times, vals, i)",
        f"  {row} = struct.unpack(ROW, member, at)",
        "end",
    ]
    body = [_PRELUDE]
    if _ranged(entity):
        body.append(_RANGE)
    if entity.has_labels:
        body.append(_LABELS)
    if entity.keeps_previous:
        body.append(_PREVIOUS)
    body.append(_features(entity))
    body.append(_TRIM)
    return "\n".join(head) + "\n" + "".join(body)


def _features(entity: EntityPlan) -> str:
    """Lua computing each feature into ``result``: each distinct window's bounds (or count)
    once, then one expression per feature."""
    ranged = _ranged(entity)
    windows: dict[tuple[int, int], int] = {}
    lines = ["local A, B, C, P = {}, {}, {}, {}"]
    for f in entity.features:
        if f.kind in PREVIOUS_KINDS or (f.window_ms, f.delay_ms) in windows:
            continue
        k = windows[(f.window_ms, f.delay_ms)] = len(windows) + 1
        lo, hi = f"t - {f.window_ms + f.delay_ms}", f"t - {f.delay_ms}"
        if ranged:
            lines.append(f"A[{k}] = first_after(times, n, {lo})")
            lines.append(f"B[{k}] = first_after(times, n, {hi}) - 1")
            lines.append(f"C[{k}] = B[{k}] - A[{k}] + 1")
        else:  # counts only: O(log n), whatever the window holds
            lines.append(f"C[{k}] = redis.call('ZCOUNT', ev, since({lo}), fmt({hi}))")
        if entity.has_labels:
            lines.append(f"P[{k}] = positives({lo}, {hi})")
    for i, f in enumerate(entity.features, start=2):
        lines.append(f"result[{i}] = fmt({_expression(entity, f, windows)})")
    return "\n".join(lines) + "\n"


def _ranged(entity: EntityPlan) -> bool:
    """Whether a window aggregates values: then one range read serves every window."""
    return any(f.kind == "window" and f.agg != "count" for f in entity.features)


def _expression(entity: EntityPlan, f: FeatureSpec, windows: dict[tuple[int, int], int]) -> str:
    if f.kind in PREVIOUS_KINDS:
        if f.kind == "time_since_previous":
            value = "(t - prev[1]) / 1000"
        else:
            value = f"prev[{entity.field_index(f) + 2}]"
        return f"prev and {value} or {_lua_num(f.default)}"
    k = windows[(f.window_ms, f.delay_ms)]
    if f.kind == "label_count":
        return f"P[{k}]"
    if f.kind == "label_rate":
        return f"C[{k}] > 0 and P[{k}] / C[{k}] or 0"
    if f.agg == "count":
        return f"C[{k}]"
    return f"agg_{f.agg}(vals[{entity.field_index(f) + 1}], A[{k}], B[{k}])"


def _lua_num(x: float) -> str:
    text = repr(float(x))
    return {"inf": "(1/0)", "-inf": "(-1/0)", "nan": "(0/0)"}.get(text, f"({text})")


def _lua_bool(b: bool) -> str:
    return "true" if b else "false"
