"""Card transactions with fraud and late labels, after the Fraud Detection Handbook's simulator.

Pure and vectorised: :func:`simulate` turns a :class:`SimConfig` into column arrays (no I/O);
:func:`transaction_records` and :func:`outcome_records` shape rows as the demo's Avro records.
The facts it follows (distributions, the three fraud scenarios) are in notes/fraud-demo.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np

from streams.errors import ConfigError

MS_PER_DAY = 86_400_000
SECONDS_PER_DAY = 86_400
SIDE = 100.0  # customers and terminals live in the square [0, SIDE)^2

# Reference sizes of the handbook; SimConfig.light() keeps their densities.
_REF_TERMINALS = 10_000
_REF_CUSTOMERS = 5_000
_REF_RADIUS = 5.0

# Scenario codes, as in schemas/outcome.avsc.
LEGIT, BIG_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CARD = 0, 1, 2, 3
BIG_AMOUNT_THRESHOLD = 220.0
TERMINAL_FRAUD_DAYS = 28  # days d .. d+27
CARD_FRAUD_DAYS = 14  # days d .. d+13
CARD_FRAUD_FACTOR = 5.0

Rows = slice | np.ndarray | None


@dataclass(frozen=True)
class SimConfig:
    """Sizes, geometry, fraud intensity and the label feed of one simulation.

    The compromise rates are per day; a fractional rate compromises
    ``floor((d+1)*rate) - floor(d*rate)`` entities on day d (exactly ``rate`` a day when it is
    a whole number), so a smaller world can keep the reference share of fraud.
    """

    n_customers: int = _REF_CUSTOMERS
    n_terminals: int = _REF_TERMINALS
    n_days: int = 183
    start: date = date(2018, 4, 1)
    radius: float = _REF_RADIUS
    seed: int = 0
    outcome_delay_days: float = 7.0
    outcome_jitter_days: float = 0.0
    outcomes_for: Literal["frauds", "all"] = "frauds"  # chargeback feed by default
    compromised_terminals_per_day: float = 2.0
    compromised_customers_per_day: float = 3.0

    def __post_init__(self) -> None:
        for name in ("n_customers", "n_terminals", "n_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.radius <= SIDE / 2:
            raise ConfigError(f"SimConfig.radius must be in (0, {SIDE / 2}], got {self.radius}")
        if self.outcome_delay_days < 0 or self.outcome_jitter_days < 0:
            raise ConfigError("SimConfig outcome delay and jitter must be >= 0")
        if self.outcomes_for not in ("frauds", "all"):
            raise ConfigError(
                f"SimConfig.outcomes_for is {self.outcomes_for!r}", hint="use 'frauds' or 'all'"
            )
        if self.compromised_terminals_per_day < 0 or self.compromised_customers_per_day < 0:
            raise ConfigError("SimConfig compromise rates must be >= 0")

    @classmethod
    def light(cls, **overrides: Any) -> SimConfig:
        """A quick size for tests and the demo: 500 customers, 1,000 terminals, 60 days.

        Fewer terminals in the same square would leave each customer ~7 instead of ~75, so
        the radius grows until the expected count (edges included) equals the reference one;
        the area stays 100 x 100. Compromise rates scale with the population, which keeps
        the reference share of fraud from each scenario. Any field can be overridden; the
        radius and rates are derived only when not given.
        """
        n_customers = int(overrides.get("n_customers", 500))
        n_terminals = int(overrides.get("n_terminals", 1_000))
        values: dict[str, Any] = {
            "n_customers": n_customers,
            "n_terminals": n_terminals,
            "n_days": 60,
            "radius": radius_for_density(n_terminals),
            "compromised_terminals_per_day": 2.0 * n_terminals / _REF_TERMINALS,
            "compromised_customers_per_day": 3.0 * n_customers / _REF_CUSTOMERS,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def start_ms(self) -> int:
        return (self.start - date(1970, 1, 1)).days * MS_PER_DAY


def expected_terminals_in_range(n_terminals: int, radius: float) -> float:
    """Mean number of terminals closer than ``radius`` to a uniform point of the square.

    The mean area of a disc cut by the square's edges is ``L^2 (pi p^2 - 8p^3/3 + p^4/2)``
    with ``p = radius / L`` (valid for p <= 1/2).
    """
    p = radius / SIDE
    return n_terminals * (math.pi * p**2 - 8 * p**3 / 3 + p**4 / 2)


def radius_for_density(
    n_terminals: int,
    target: float | None = None,
) -> float:
    """The radius giving ``target`` terminals per customer (default: the reference ~75.2)."""
    if target is None:
        target = expected_terminals_in_range(_REF_TERMINALS, _REF_RADIUS)
    lo, hi = 0.0, SIDE / 2
    if expected_terminals_in_range(n_terminals, hi) <= target:
        return hi
    for _ in range(60):  # bisection; the function increases on (0, SIDE/2]
        mid = (lo + hi) / 2
        if expected_terminals_in_range(n_terminals, mid) < target:
            lo = mid
        else:
            hi = mid
    return round(hi, 6)


@dataclass(frozen=True, eq=False)
class World:
    """Customer and terminal profiles; the terminals of customer c are
    ``terminal_indices[terminal_offsets[c]:terminal_offsets[c + 1]]`` (ascending ids)."""

    customer_xy: np.ndarray  # (n_customers, 2)
    customer_mean_amount: np.ndarray
    customer_std_amount: np.ndarray
    customer_mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray  # (n_terminals, 2)
    terminal_offsets: np.ndarray  # (n_customers + 1,) int64
    terminal_indices: np.ndarray  # int64

    def terminals_of(self, customer: int) -> np.ndarray:
        return self.terminal_indices[
            self.terminal_offsets[customer] : self.terminal_offsets[customer + 1]
        ]


@dataclass(frozen=True, eq=False)
class Simulation:
    """One row per transaction, sorted by time; ``transaction_id`` is the row index."""

    transaction_id: np.ndarray  # int64
    tx_time_ms: np.ndarray  # int64, epoch milliseconds UTC
    customer_id: np.ndarray  # int64
    terminal_id: np.ndarray  # int64
    tx_amount: np.ndarray  # float64, currency units rounded to cents
    is_fraud: np.ndarray  # bool
    scenario: np.ndarray  # int8: LEGIT, BIG_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CARD
    start: date
    world: World = field(repr=False)
    # (day, terminal id) and (day, customer id) of each compromise, in the order drawn.
    compromised_terminals: np.ndarray = field(repr=False)
    compromised_customers: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.transaction_id.shape[0])

    def day_index(self) -> np.ndarray:
        """Day of each transaction counted from ``start`` (0-based)."""
        start_ms = (self.start - date(1970, 1, 1)).days * MS_PER_DAY
        return np.floor_divide(self.tx_time_ms - start_ms, MS_PER_DAY)


def simulate(cfg: SimConfig) -> Simulation:
    """Draw a world and its transactions; one Generator from ``cfg.seed``, in a fixed order:
    customers, terminals, daily counts, times, amounts, terminal picks, scenario 2, scenario 3.
    """
    rng = np.random.default_rng(cfg.seed)
    world = _draw_world(rng, cfg)
    day, seconds, customer, terminal, amount = _draw_transactions(rng, cfg, world)

    time_ms = cfg.start_ms + day * MS_PER_DAY + seconds * 1000
    order = np.argsort(time_ms, kind="stable")  # ties keep generation order: deterministic
    time_ms, day, customer, terminal, amount = (
        a[order] for a in (time_ms, day, customer, terminal, amount)
    )

    # Scenario 1 first, then 2 and 3: a later scenario overrides the earlier code.
    scenario = np.where(amount > BIG_AMOUNT_THRESHOLD, BIG_AMOUNT, LEGIT).astype(np.int8)
    bad_terminals = _compromise_terminals(rng, cfg, day, terminal, scenario)
    amount, bad_cards = _compromise_cards(rng, cfg, day, customer, amount, scenario)

    return Simulation(
        transaction_id=np.arange(time_ms.shape[0], dtype=np.int64),
        tx_time_ms=time_ms,
        customer_id=customer,
        terminal_id=terminal,
        tx_amount=amount,
        is_fraud=scenario != LEGIT,
        scenario=scenario,
        start=cfg.start,
        world=world,
        compromised_terminals=bad_terminals,
        compromised_customers=bad_cards,
    )


def _draw_world(rng: np.random.Generator, cfg: SimConfig) -> World:
    customer_xy = rng.uniform(0, SIDE, size=(cfg.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=cfg.n_customers)
    mean_tx = rng.uniform(0, 4, size=cfg.n_customers)
    terminal_xy = rng.uniform(0, SIDE, size=(cfg.n_terminals, 2))
    offsets, indices = terminals_in_range(customer_xy, terminal_xy, cfg.radius)
    return World(customer_xy, mean_amount, mean_amount / 2, mean_tx, terminal_xy, offsets, indices)


def terminals_in_range(
    points: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the terminals strictly closer than ``radius`` to each point.

    A grid of cells at least ``radius`` wide bounds the search to the 3 x 3 cells around a
    point, so the work grows with the pairs in range, not customers x terminals.
    """
    n_cells = max(1, int(SIDE // radius))
    width = SIDE / n_cells
    tcell = np.clip((terminal_xy // width).astype(np.int64), 0, n_cells - 1)
    tkey = tcell[:, 0] * n_cells + tcell[:, 1]
    by_cell = np.argsort(tkey, kind="stable")
    sorted_keys = tkey[by_cell]
    all_keys = np.arange(n_cells * n_cells)
    cell_lo = np.searchsorted(sorted_keys, all_keys, side="left")
    cell_hi = np.searchsorted(sorted_keys, all_keys, side="right")

    pcell = np.clip((points // width).astype(np.int64), 0, n_cells - 1)
    owners, candidates = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            cx, cy = pcell[:, 0] + dx, pcell[:, 1] + dy
            inside = (cx >= 0) & (cx < n_cells) & (cy >= 0) & (cy < n_cells)
            key = np.where(inside, cx * n_cells + cy, 0)
            lo = cell_lo[key]
            count = np.where(inside, cell_hi[key] - lo, 0)
            owner, pos = _expand_ranges(lo, count)
            owners.append(owner)
            candidates.append(by_cell[pos])
    owner = np.concatenate(owners)
    cand = np.concatenate(candidates)
    delta = points[owner] - terminal_xy[cand]
    near = np.sqrt(delta[:, 0] ** 2 + delta[:, 1] ** 2) < radius
    owner, cand = owner[near], cand[near]
    order = np.lexsort((cand, owner))
    offsets = np.zeros(points.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=points.shape[0]), out=offsets[1:])
    return offsets, cand[order].astype(np.int64)


def _expand_ranges(lo: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo_i, lo_i + count_i): (range index, position) of every element."""
    owner = np.repeat(np.arange(lo.shape[0]), count)
    first = np.cumsum(count) - count  # where each range starts in the output
    pos = np.arange(owner.shape[0]) - first[owner] + lo[owner]
    return owner, pos


def _draw_transactions(
    rng: np.random.Generator, cfg: SimConfig, world: World
) -> tuple[np.ndarray, ...]:
    n_available = np.diff(world.terminal_offsets)
    counts = rng.poisson(
        np.repeat(world.customer_mean_tx_per_day[:, None], cfg.n_days, axis=1)
    )  # (customers, days)
    # A customer with no terminal in range makes no transactions (never at reference sizes,
    # where the fewest terminals any customer has is ~22).
    counts[n_available == 0, :] = 0
    cells = np.repeat(np.arange(counts.size), counts.ravel())
    customer, day = np.divmod(cells, cfg.n_days)

    # Whole seconds, truncated toward zero; a draw outside (0, 86400) is a transaction not made.
    seconds = np.trunc(rng.normal(SECONDS_PER_DAY / 2, 20_000, size=cells.shape[0]))
    made = (seconds > 0) & (seconds < SECONDS_PER_DAY)
    customer, day, seconds = customer[made], day[made], seconds[made].astype(np.int64)

    mean = world.customer_mean_amount[customer]
    amount = rng.normal(mean, world.customer_std_amount[customer])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0, 2 * mean[negative])  # redrawn once, never negative
    amount = np.round(amount, 2)

    pick = np.floor(rng.random(customer.shape[0]) * n_available[customer]).astype(np.int64)
    terminal = world.terminal_indices[world.terminal_offsets[customer] + pick]
    return day.astype(np.int64), seconds, customer.astype(np.int64), terminal, amount


def _daily_counts(rate: float, n_days: int) -> np.ndarray:
    days = np.arange(n_days + 1, dtype=np.float64)
    return np.diff(np.floor(days * rate + 1e-9)).astype(np.int64)


def _compromise_terminals(
    rng: np.random.Generator,
    cfg: SimConfig,
    day: np.ndarray,
    terminal: np.ndarray,
    scenario: np.ndarray,
) -> np.ndarray:
    """Scenario 2: terminals compromised on day d make every transaction of d..d+27 fraud.

    Returns the (day, terminal) pairs drawn."""
    compromised = np.zeros((cfg.n_days, cfg.n_terminals), dtype=bool)
    drawn: list[tuple[int, int]] = []
    for d, k in enumerate(_daily_counts(cfg.compromised_terminals_per_day, cfg.n_days)):
        chosen = rng.choice(cfg.n_terminals, size=min(int(k), cfg.n_terminals), replace=False)
        compromised[d : d + TERMINAL_FRAUD_DAYS, chosen] = True
        drawn.extend((d, int(t)) for t in chosen)
    scenario[compromised[day, terminal]] = COMPROMISED_TERMINAL
    return np.array(drawn, dtype=np.int64).reshape(-1, 2)


def _compromise_cards(
    rng: np.random.Generator,
    cfg: SimConfig,
    day: np.ndarray,
    customer: np.ndarray,
    amount: np.ndarray,
    scenario: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Scenario 3: for cards compromised on day d, a third (rounded down) of their pooled
    transactions of d..d+13, chosen at random, become fraud with 5x the amount. Windows
    overlap, so a transaction chosen twice is multiplied twice, as in the handbook.

    Returns the new amounts and the (day, customer) pairs drawn."""
    drawn: list[tuple[int, int]] = []
    amount = amount.copy()
    by_customer = np.argsort(customer, kind="stable")  # time order within each customer
    cust_lo = np.searchsorted(customer[by_customer], np.arange(cfg.n_customers + 1))
    day_by_customer = day[by_customer]
    for d, k in enumerate(_daily_counts(cfg.compromised_customers_per_day, cfg.n_days)):
        chosen = rng.choice(cfg.n_customers, size=min(int(k), cfg.n_customers), replace=False)
        drawn.extend((d, int(c)) for c in chosen)
        pools = []
        for c in chosen:
            lo, hi = cust_lo[c], cust_lo[c + 1]
            days_c = day_by_customer[lo:hi]
            a = lo + np.searchsorted(days_c, d, side="left")
            b = lo + np.searchsorted(days_c, d + CARD_FRAUD_DAYS, side="left")
            pools.append(by_customer[a:b])
        pool = np.concatenate(pools) if pools else np.empty(0, dtype=np.int64)
        if pool.shape[0] < 3:
            continue
        victims = rng.choice(pool, size=pool.shape[0] // 3, replace=False)
        amount[victims] = np.round(amount[victims] * CARD_FRAUD_FACTOR, 2)
        scenario[victims] = COMPROMISED_CARD
    return amount, np.array(drawn, dtype=np.int64).reshape(-1, 2)


def _select(rows: Rows, n: int) -> np.ndarray:
    return np.arange(n)[rows] if rows is not None else np.arange(n)


def transaction_records(sim: Simulation, rows: Rows = None) -> list[dict[str, Any]]:
    """Rows as dicts matching schemas/transaction.avsc (plain Python values), in row order."""
    idx = _select(rows, len(sim))
    columns = (
        sim.transaction_id[idx].tolist(),
        sim.tx_time_ms[idx].tolist(),
        sim.customer_id[idx].tolist(),
        sim.terminal_id[idx].tolist(),
        sim.tx_amount[idx].tolist(),
    )
    return [
        {
            "transaction_id": tid,
            "tx_datetime": t,
            "customer_id": c,
            "terminal_id": term,
            "tx_amount": amt,
        }
        for tid, t, c, term, amt in zip(*columns, strict=True)
    ]


def outcome_times_ms(sim: Simulation, cfg: SimConfig) -> np.ndarray:
    """When each transaction's label becomes known: tx time + delay + U(0, jitter).

    The jitter comes from its own Generator (seeded by ``cfg.seed``, one draw per transaction)
    so it is the same whichever rows are published and never moves a label before the delay.
    """
    delay_ms = round(cfg.outcome_delay_days * MS_PER_DAY)
    out = sim.tx_time_ms + delay_ms
    if cfg.outcome_jitter_days > 0:
        jitter_rng = np.random.default_rng([cfg.seed, 1])
        jitter = jitter_rng.uniform(0, cfg.outcome_jitter_days * MS_PER_DAY, size=len(sim))
        out = out + np.floor(jitter).astype(np.int64)
    return out


def outcome_records(sim: Simulation, cfg: SimConfig, rows: Rows = None) -> list[dict[str, Any]]:
    """Outcomes of the chosen transactions as dicts matching schemas/outcome.avsc.

    Only frauds when ``cfg.outcomes_for == "frauds"``; sorted by outcome time (ties by id).
    """
    idx = _select(rows, len(sim))
    if cfg.outcomes_for == "frauds":
        idx = idx[sim.is_fraud[idx]]
    when = outcome_times_ms(sim, cfg)[idx]
    order = np.lexsort((sim.transaction_id[idx], when))
    idx, when = idx[order], when[order]
    columns = (
        sim.transaction_id[idx].tolist(),
        when.tolist(),
        sim.tx_time_ms[idx].tolist(),
        sim.customer_id[idx].tolist(),
        sim.terminal_id[idx].tolist(),
        sim.is_fraud[idx].tolist(),
        sim.scenario[idx].tolist(),
    )
    return [
        {
            "transaction_id": tid,
            "outcome_datetime": out,
            "tx_datetime": t,
            "customer_id": c,
            "terminal_id": term,
            "is_fraud": fraud,
            "scenario": sc,
        }
        for tid, out, t, c, term, fraud, sc in zip(*columns, strict=True)
    ]
