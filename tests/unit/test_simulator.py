"""The fraud simulator follows notes/fraud-demo.md, is deterministic and emits valid records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from streams.demo.simulator import (
    BIG_AMOUNT,
    BIG_AMOUNT_THRESHOLD,
    COMPROMISED_CARD,
    COMPROMISED_TERMINAL,
    LEGIT,
    MS_PER_DAY,
    SimConfig,
    Simulation,
    expected_terminals_in_range,
    outcome_records,
    outcome_times_ms,
    simulate,
    terminals_in_range,
    transaction_records,
)
from streams.errors import ConfigError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
COLUMNS = (
    "transaction_id",
    "tx_time_ms",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "is_fraud",
    "scenario",
)


@pytest.fixture(scope="module")
def cfg() -> SimConfig:
    return SimConfig.light()


@pytest.fixture(scope="module")
def sim(cfg: SimConfig) -> Simulation:
    return simulate(cfg)


def _schema(name: str):
    return parse_schema(json.loads((SCHEMAS / name).read_text()))


def test_same_seed_same_arrays_other_seed_differs(cfg: SimConfig, sim: Simulation) -> None:
    again = simulate(cfg)
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(again, col), getattr(sim, col))
    other = simulate(SimConfig.light(seed=cfg.seed + 1))
    assert len(other) != len(sim) or not np.array_equal(other.tx_amount, sim.tx_amount)


def test_ids_are_row_indices_in_time_order(sim: Simulation) -> None:
    np.testing.assert_array_equal(sim.transaction_id, np.arange(len(sim)))
    assert np.all(np.diff(sim.tx_time_ms) >= 0)


def test_times_are_whole_seconds_strictly_inside_their_day(cfg: SimConfig, sim: Simulation) -> None:
    day = sim.day_index()
    assert day.min() >= 0 and day.max() < cfg.n_days
    ms_in_day = sim.tx_time_ms - cfg.start_ms - day * MS_PER_DAY
    assert np.all(ms_in_day % 1000 == 0)
    assert ms_in_day.min() > 0 and ms_in_day.max() < MS_PER_DAY


def test_amounts_non_negative_with_two_decimals(sim: Simulation) -> None:
    assert sim.tx_amount.min() >= 0
    np.testing.assert_array_equal(np.round(sim.tx_amount, 2), sim.tx_amount)


def test_fraud_label_is_any_scenario(sim: Simulation) -> None:
    np.testing.assert_array_equal(sim.is_fraud, sim.scenario != LEGIT)
    assert set(np.unique(sim.scenario).tolist()) <= {0, 1, 2, 3}


def test_scenario_1_is_amount_above_220_unless_a_later_scenario_applies(sim: Simulation) -> None:
    # Scenarios 2 and 3 override 1; scenario 3 also changes the amount. Among the rows they
    # left alone, the label is exactly "amount strictly above 220".
    untouched = np.isin(sim.scenario, (LEGIT, BIG_AMOUNT))
    np.testing.assert_array_equal(
        sim.scenario[untouched] == BIG_AMOUNT, sim.tx_amount[untouched] > BIG_AMOUNT_THRESHOLD
    )
    assert (sim.scenario == BIG_AMOUNT).any()


def test_scenario_2_compromised_terminals_are_fraud_for_28_days(
    cfg: SimConfig, sim: Simulation
) -> None:
    day, term = sim.day_index(), sim.terminal_id
    pairs = sim.compromised_terminals
    assert pairs.shape == (int(2 * cfg.n_terminals / 10_000 * cfg.n_days), 2)
    in_window = np.zeros(len(sim), dtype=bool)
    for d, t in pairs:
        window = (term == t) & (day >= d) & (day < d + 28)
        assert window.any()
        # All fraud; scenario 3 may override the code of some of them.
        assert sim.is_fraud[window].all()
        assert set(sim.scenario[window].tolist()) <= {COMPROMISED_TERMINAL, COMPROMISED_CARD}
        in_window |= window
    # ... and no terminal fraud outside a compromise window.
    assert not np.any((sim.scenario == COMPROMISED_TERMINAL) & ~in_window)


def test_scenario_3_frauds_fall_in_compromise_windows(sim: Simulation) -> None:
    day = sim.day_index()
    in_window = np.zeros(len(sim), dtype=bool)
    for d, c in sim.compromised_customers:
        in_window |= (sim.customer_id == c) & (day >= d) & (day < d + 14)
    card = sim.scenario == COMPROMISED_CARD
    assert card.any()
    assert not np.any(card & ~in_window)


def test_scenario_3_takes_a_third_rounded_down_of_the_pooled_transactions() -> None:
    # Compromises on days 13 and 27 only (rate 1/14), windows that cannot overlap.
    cfg = SimConfig.light(
        n_days=28, compromised_customers_per_day=1 / 14, compromised_terminals_per_day=0
    )
    sim = simulate(cfg)
    day = sim.day_index()
    assert sim.compromised_customers[:, 0].tolist() == [13, 27]
    pools = []
    for d, c in sim.compromised_customers:
        pool = (sim.customer_id == c) & (day >= d) & (day < d + 14)
        assert (sim.scenario[pool] == COMPROMISED_CARD).sum() == pool.sum() // 3
        pools.append(int(pool.sum()))
    assert max(pools) >= 3
    assert (sim.scenario == COMPROMISED_CARD).sum() == sum(p // 3 for p in pools)


def test_scenario_3_multiplies_amounts_by_five(cfg: SimConfig, sim: Simulation) -> None:
    card = sim.scenario == COMPROMISED_CARD
    ratio = (
        sim.tx_amount[card].mean() / sim.world.customer_mean_amount[sim.customer_id[card]].mean()
    )
    assert 3.5 < ratio < 7.0


def test_scenario_3_amounts_are_five_times_the_undisturbed_draw() -> None:
    cfg = SimConfig.light(n_days=20)
    with_cards = simulate(cfg)
    without = simulate(SimConfig.light(n_days=20, compromised_customers_per_day=0))
    # Scenario 3 draws last, so the transactions themselves are the same in both runs.
    np.testing.assert_array_equal(with_cards.tx_time_ms, without.tx_time_ms)
    card = with_cards.scenario == COMPROMISED_CARD
    assert card.any()
    np.testing.assert_allclose(with_cards.tx_amount[card], np.round(without.tx_amount[card] * 5, 2))
    np.testing.assert_array_equal(with_cards.tx_amount[~card], without.tx_amount[~card])


def test_light_config_has_plausible_rates(cfg: SimConfig, sim: Simulation) -> None:
    per_day = len(sim) / cfg.n_days
    # ~ customers x 2 a day x P(time kept) ~ 0.97
    assert 0.85 * cfg.n_customers * 2 < per_day < 1.15 * cfg.n_customers * 2
    assert 0.003 < sim.is_fraud.mean() < 0.015


def test_light_config_keeps_reference_terminal_density(sim: Simulation) -> None:
    per_customer = np.diff(sim.world.terminal_offsets)
    assert 65 < per_customer.mean() < 85
    assert expected_terminals_in_range(10_000, 5.0) == pytest.approx(75.2, abs=0.1)


def test_terminal_lists_are_exactly_those_strictly_within_radius(
    cfg: SimConfig, sim: Simulation
) -> None:
    w = sim.world
    dist = np.linalg.norm(w.customer_xy[:, None, :] - w.terminal_xy[None, :, :], axis=2)
    for c in range(cfg.n_customers):
        expected = np.flatnonzero(dist[c] < cfg.radius)
        np.testing.assert_array_equal(w.terminals_of(c), expected)
    d_used = np.linalg.norm(w.customer_xy[sim.customer_id] - w.terminal_xy[sim.terminal_id], axis=1)
    assert d_used.max() < cfg.radius


def test_terminals_in_range_handles_boundaries_and_empty_lists() -> None:
    points = np.array([[0.0, 0.0], [99.99, 99.99], [50.0, 50.0]])
    terms = np.array([[3.0, 4.0], [2.9, 4.0], [99.0, 99.0], [10.0, 10.0]])
    offsets, indices = terminals_in_range(points, terms, 5.0)
    assert indices[offsets[0] : offsets[1]].tolist() == [1]  # (3, 4) is exactly 5 away
    assert indices[offsets[1] : offsets[2]].tolist() == [2]
    assert offsets[3] == offsets[2]  # no terminal near the centre


def test_customers_without_terminals_make_no_transactions() -> None:
    cfg = SimConfig(n_customers=200, n_terminals=3, n_days=5, radius=2.0)
    sim = simulate(cfg)
    lonely = np.flatnonzero(np.diff(sim.world.terminal_offsets) == 0)
    assert lonely.size > 0
    assert not np.isin(sim.customer_id, lonely).any()


def test_outcome_time_is_tx_time_plus_delay(cfg: SimConfig, sim: Simulation) -> None:
    outcomes = outcome_records(sim, cfg)
    assert len(outcomes) == int(sim.is_fraud.sum())
    assert all(o["is_fraud"] for o in outcomes)
    delay = round(cfg.outcome_delay_days * MS_PER_DAY)
    assert all(o["outcome_datetime"] == o["tx_datetime"] + delay for o in outcomes)
    times = [o["outcome_datetime"] for o in outcomes]
    assert times == sorted(times)


def test_outcomes_for_all_and_jitter(sim: Simulation) -> None:
    cfg = SimConfig.light(outcomes_for="all", outcome_jitter_days=2.0)
    rows = slice(100, 300)
    outcomes = outcome_records(sim, cfg, rows)
    assert sorted(o["transaction_id"] for o in outcomes) == list(range(100, 300))
    lag = outcome_times_ms(sim, cfg) - sim.tx_time_ms
    assert lag.min() >= 7 * MS_PER_DAY and lag.max() < 9 * MS_PER_DAY
    # Same jitter whichever rows are asked for.
    by_id = {o["transaction_id"]: o["outcome_datetime"] for o in outcomes}
    again = outcome_records(sim, cfg, np.arange(150, 160))
    assert all(by_id[o["transaction_id"]] == o["outcome_datetime"] for o in again)


def test_records_validate_against_the_schemas(cfg: SimConfig, sim: Simulation) -> None:
    tx_schema, out_schema = _schema("transaction.avsc"), _schema("outcome.avsc")
    txs = transaction_records(sim, slice(0, 2000))
    assert [t["transaction_id"] for t in txs] == list(range(2000))
    for record in txs:
        assert validate(record, tx_schema, raise_errors=True)
    for record in outcome_records(sim, cfg):
        assert validate(record, out_schema, raise_errors=True)
    assert isinstance(txs[0]["tx_amount"], float) and isinstance(txs[0]["customer_id"], int)


def test_records_for_a_boolean_mask(sim: Simulation) -> None:
    mask = sim.customer_id == sim.customer_id[0]
    records = transaction_records(sim, mask)
    assert {r["customer_id"] for r in records} == {int(sim.customer_id[0])}
    assert len(records) == int(mask.sum())


@pytest.mark.parametrize(
    "bad",
    [{"n_customers": 0}, {"radius": 0.0}, {"outcome_delay_days": -1.0}, {"outcomes_for": "some"}],
)
def test_invalid_config_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**bad)
