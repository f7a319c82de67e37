"""Scenario engine: vol shocks, grids, full revaluation and margin-currency delta."""

import numpy as np
import pytest

import marginopt.scenarios as scenarios
from marginopt import parse_instrument
from marginopt.pricing import black76_price
from marginopt.scenarios import ScenarioGrid, VolShock, delta_in_margin_currency, revalue

SHOCK = VolShock(range_up=0.5, range_down=0.25, short_term_power=0.3, long_term_power=0.13,
                 min_vol_for_shock_up=0.5)
NAMES = ["BTC-27SEP24-55000-P", "BTC-27DEC24-70000-C", "BTC-3SEP24-60000-C", "BTC-27SEP24",
         "BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC_USDC", "BTC_USDC-27SEP24-60000-P",
         "BTC_USDC-27DEC24-65000-C", "BTC-28MAR25-45000-P"]


@pytest.fixture(scope="module")
def inputs(market):
    return market.pricing_inputs([parse_instrument(n) for n in NAMES])


def test_vol_shock_by_hand():
    sigma = np.array([0.40, 0.60, 0.60, 0.30])
    t = np.array([10 / 365, 60 / 365, 0.1 / 365, 30 / 365])
    out = SHOCK.shocked(sigma, t)
    assert out.shape == (3, 4)
    s10 = 3.0 ** 0.3                # DTE 10 < 30: short-term power
    s60 = 0.5 ** 0.13               # DTE 60: long-term power
    s1 = 30.0 ** 0.3                # DTE floored at 1 day
    s30 = 1.0                       # DTE 30: long-term power, (30/30)^p = 1
    up = [max(0.40 * (1 + 0.5 * s10), 0.5), max(0.60 * (1 + 0.5 * s60), 0.5),
          max(0.60 * (1 + 0.5 * s1), 0.5), max(0.30 * (1 + 0.5 * s30), 0.5)]
    down = [0.40 * (1 - 0.25 * s10), 0.60 * (1 - 0.25 * s60), max(0.60 * (1 - 0.25 * s1), 0.0),
            0.30 * (1 - 0.25 * s30)]
    np.testing.assert_allclose(out[0], down, rtol=1e-14)
    np.testing.assert_array_equal(out[1], sigma)
    np.testing.assert_allclose(out[2], up, rtol=1e-14)
    assert out[2][3] == 0.5  # 0.45 floored at min_volatility_for_shock_up
    steep = VolShock(0.5, 0.9, 0.3, 0.13)
    assert steep.shocked(sigma, t)[0][2] == 0.0  # 1 - 0.9 * 30^0.3 < 0: floored at zero


def test_price_vol_grid():
    moves = np.linspace(-0.16, 0.16, 9)
    g = ScenarioGrid.price_vol_grid(moves)
    assert len(g) == 27
    np.testing.assert_array_equal(g.price_move, np.repeat(moves, 3))
    np.testing.assert_array_equal(g.vol_state, np.tile([-1, 0, 1], 9))
    assert g.labels[:3] == ("-16.00% vol down", "-16.00% vol flat", "-16.00% vol up")
    assert g.labels[13] == "+0.00% vol flat"
    assert np.all(g.weight == 1.0) and np.all(g.dampener == 0.0)
    both = ScenarioGrid.concat(g, ScenarioGrid.price_vol_grid([0.5], (1,)))
    assert len(both) == 28 and both.labels[-1] == "+50.00% vol up" and both.vol_state[-1] == 1


def test_grid_validation():
    with pytest.raises(ValueError, match="one entry per scenario"):
        ScenarioGrid(("a", "b"), [0.1], [0, 0], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="above -100%"):
        ScenarioGrid(("a",), [-1.0], [0], [1], [0])


def test_futures_perpetuals_and_spot_are_exact(inputs):
    moves = np.array([-0.66, -0.18, -0.01, 0.0, 0.07, 0.5, 5.0])
    grid = ScenarioGrid(tuple(map(str, moves)), moves, np.zeros(7), np.ones(7), np.zeros(7))
    pnl = revalue(inputs, grid)
    coin = 1.0 - 1.0 / (1.0 + moves)
    np.testing.assert_array_equal(pnl[:, NAMES.index("BTC-27SEP24")], coin)
    np.testing.assert_array_equal(pnl[:, NAMES.index("BTC-PERPETUAL")], coin)
    np.testing.assert_array_equal(pnl[:, NAMES.index("BTC_USDC-PERPETUAL")], moves * 59_000.0)
    np.testing.assert_array_equal(pnl[:, NAMES.index("BTC_USDC")], moves * 59_000.0)
    assert np.all(pnl[moves == 0.0] == 0.0)


def test_options_by_full_revaluation(inputs):
    moves = np.array([-0.16, 0.0, 0.08, 0.16, 1.0])
    states = np.array([1, 0, -1, 1, 1])
    grid = ScenarioGrid(tuple(map(str, moves)), moves, states, np.ones(5), np.zeros(5))
    pnl = revalue(inputs, grid, SHOCK)
    vols = SHOCK.shocked(np.nan_to_num(inputs.sigma), inputs.t)
    for j, name in enumerate(NAMES):
        if not inputs.is_option[j]:
            continue
        f0, k, t, s, c = inputs.forward[j], inputs.strike[j], inputs.t[j], inputs.sigma[j], inputs.is_call[j]
        for i, (m, v) in enumerate(zip(moves, states)):
            f1 = f0 * (1 + m)
            v1 = float(black76_price(f1, k, t, vols[v + 1, j], c))
            v0 = float(black76_price(f0, k, t, s, c))
            want = v1 / f1 - v0 / f0 if inputs.is_inverse[j] else v1 - v0
            assert pnl[i, j] == pytest.approx(want, rel=1e-12, abs=1e-15), (name, m, v)
    assert np.all(pnl[1, inputs.is_option] == 0.0)  # no move, vol flat


def test_vol_states_need_a_vol_shock(inputs):
    grid = ScenarioGrid.price_vol_grid([0.1])
    with pytest.raises(ValueError, match="VolShock"):
        revalue(inputs, grid)
    flat = ScenarioGrid.price_vol_grid([0.1, -0.1], (0,))
    assert revalue(inputs, flat).shape == (2, len(NAMES))


def test_blocks_do_not_change_the_result(inputs, monkeypatch):
    grid = ScenarioGrid.price_vol_grid(np.linspace(-0.3, 0.3, 21))
    whole = revalue(inputs, grid, SHOCK)
    monkeypatch.setattr(scenarios, "_BLOCK_ELEMENTS", 7)  # one scenario per block
    np.testing.assert_array_equal(revalue(inputs, grid, SHOCK), whole)


def test_delta_in_margin_currency_is_the_slope_at_zero(inputs):
    h = 1e-6
    grid = ScenarioGrid(("dn", "up"), [-h, h], [0, 0], [1, 1], [0, 0])
    pnl = revalue(inputs, grid)
    slope = (pnl[1] - pnl[0]) / (2 * h)
    delta = delta_in_margin_currency(inputs)
    np.testing.assert_allclose(delta, slope, rtol=1e-6, atol=1e-9)
    assert delta[NAMES.index("BTC-27SEP24")] == 1.0
    assert delta[NAMES.index("BTC_USDC")] == 59_000.0
