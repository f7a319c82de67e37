"""The optimum checked independently: scipy's linprog on the hand-built LP matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

import marginopt as mo

from .conftest import assert_sound

N_SCENARIOS = 40


def _objective(p: mo.Proposal) -> float:
    return p.margin_after.initial_margin_usd + p.cost_usd


def test_scenario_max_matches_linprog(sample, tmp_path):
    book, market, _ = sample
    names = ["BTC-PERPETUAL", "BTC-27NOV26", "BTC-25DEC26", "ETH-PERPETUAL", "ETH-29JAN27"] + \
        [n for n in book.names if n.startswith("BTC-") and n.endswith(("-C", "-P"))][:4]
    insts = [mo.parse_instrument(n) for n in names]
    inputs = market.pricing_inputs(insts)
    rng = np.random.default_rng(3)
    # scenario P&L in USD per unit: a spot factor per underlying plus noise (hand-built)
    und = np.array([i.underlying for i in insts])
    moves = rng.normal(0.0, 0.05, size=(N_SCENARIOS, 2))
    delta_usd = inputs.coin_delta() * inputs.index
    pnl = np.where(und == "BTC", moves[:, [0]], moves[:, [1]]) * delta_usd + rng.normal(0, 50, (N_SCENARIOS, len(names)))
    matrix = tmp_path / "pnl.csv"
    header = ",".join(["scenario", *names])
    np.savetxt(matrix, np.column_stack([np.arange(N_SCENARIOS), pnl]), delimiter=",", header=header, comments="")
    model = mo.load_model("scenario-max", scenario_matrix=matrix)
    x0 = np.array([3.0, -1.0, 0.5, 20.0, -10.0, -2.0, 1.5, -1.0, 0.7])
    port = mo.Portfolio(dict(zip(names, x0)))
    spec = {"universe": "held", "limits": {"BTC": {"delta": [-1, 1]}, "ETH": {"delta": [-2, 2]}},
            "trade_bounds": {"max_quantity": 5.0}}
    p = mo.optimize(port, market, model, spec)
    assert_sound(p)

    # independent LP: variables [buy (N), sell (N), m]
    n = len(names)
    half = np.nan_to_num(market.half_spread_usd(insts), nan=0.0)
    c = np.concatenate([half, half, [1.0]])
    a_ub = [np.concatenate([-pnl, pnl, -np.ones((N_SCENARIOS, 1))], axis=1)]   # -(P x) - m <= 0
    b_ub = [pnl @ x0]
    delta = inputs.coin_delta()
    for u, (lo, hi) in (("BTC", (-1, 1)), ("ETH", (-2, 2))):
        row = np.where(und == u, delta, 0.0)
        a_ub += [np.concatenate([row, -row, [0.0]])[None], np.concatenate([-row, row, [0.0]])[None]]
        b_ub += [[hi - row @ x0], [row @ x0 - lo]]
    bounds = [(0, 5.0)] * (2 * n) + [(0, None)]
    ref = linprog(c, A_ub=np.vstack(a_ub), b_ub=np.concatenate(b_ub), bounds=bounds, method="highs")
    assert ref.status == 0
    assert _objective(p) == pytest.approx(ref.fun, rel=1e-7)


def test_deribit_pm_matches_linprog(sample):
    book, market, _ = sample
    spec = {"universe": "held+futures", "limits": {"BTC": {"delta": [-3, 3]}, "ETH": {"delta": [-20, 20]}},
            "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)

    reb = mo.Rebalancer("deribit-pm", spec)
    data = reb.problem_data(book, market)
    u, n = data.universe, len(data.universe.names)
    # variables: buy (n), sell (n), then per pool one epigraph m, then one per roll group
    blocks = []
    for pool in data.bound.pools:
        rm, roll = pool.initial
        blocks.append((pool, rm, roll))
    n_aux = sum(1 + roll.exposure.shape[0] for _, _, roll in blocks)
    width = 2 * n + n_aux
    c = np.zeros(width)
    c[:n] = c[n:2 * n] = data.half_spread_usd
    rows, rhs = [], []
    k = 2 * n
    for pool, rm, roll in blocks:
        cols = pool.columns
        fx = pool.usd_rate
        weighted = fx * rm.weight[:, None] * rm.raw_pnl          # USD per unit, S x n_pool
        damp = fx * rm.dampener
        c[k] = 1.0
        for factor in (1.0, rm.pnl_offset):                       # loss >= -p and >= -k p
            if factor == 0.0:
                continue
            a = np.zeros((weighted.shape[0], width))
            a[:, cols] = -factor * weighted
            a[:, n + cols] = factor * weighted
            a[:, k] = -1.0
            rows.append(a)
            rhs.append(factor * weighted @ u.x0[cols] + damp)
        k += 1
        e = fx * roll.exposure
        for g in range(e.shape[0]):                               # r_g >= |e_g x|
            for sign in (1.0, -1.0):
                a = np.zeros((1, width))
                a[0, cols] = sign * e[g]
                a[0, n + cols] = -sign * e[g]
                a[0, k] = -1.0
                rows.append(a)
                rhs.append([-sign * e[g] @ u.x0[cols]])
            c[k] = 1.0
            k += 1
    lim = data.limits
    for r in range(len(lim.names)):
        g = lim.matrix[r]
        for sign, bound in ((1.0, lim.upper[r]), (-1.0, -lim.lower[r])):
            a = np.zeros((1, width))
            a[0, :n], a[0, n:2 * n] = sign * g, -sign * g
            rows.append(a)
            rhs.append([bound - sign * g @ u.x0])
    bounds = [(0, b) for b in u.buy_max] + [(0, s) for s in u.sell_max] + [(0, None)] * n_aux
    ref = linprog(c, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
    assert ref.status == 0
    assert _objective(p) == pytest.approx(ref.fun, rel=1e-7)


def test_single_hedge_matches_brute_force():
    market = mo.MarketSnapshot.from_rows(
        [{"instrument_name": "BTC-PERPETUAL", "mark_price": 100_000, "bid_price": 99_999, "ask_price": 100_001},
         {"instrument_name": "BTC-25DEC26", "mark_price": 100_700, "underlying_price": 100_700,
          "bid_price": 100_690, "ask_price": 100_710}],
        valuation_time="2026-11-20T08:00:00Z", index_prices={"BTC": 100_000})
    book = mo.Portfolio({"BTC-25DEC26": 4.0})
    spec = {"universe": ["BTC-PERPETUAL"], "do_not_trade": ["BTC-25DEC26"]}
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    # the objective is convex in the hedge h: a ternary search on the calculator finds its minimum
    bound = mo.load_model("deribit-pm").bind(
        [mo.parse_instrument("BTC-25DEC26"), mo.parse_instrument("BTC-PERPETUAL")], market)

    def objective(h: float) -> float:
        return bound.initial_margin_usd(np.array([4.0, h])) + abs(h) * 1.0  # half spread 1 USD

    lo, hi = -8.0, 0.0
    for _ in range(200):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, b) if objective(a) <= objective(b) else (a, hi)
    best = objective(0.5 * (lo + hi))
    assert _objective(p) == pytest.approx(best, rel=1e-7)
    assert p.trade_quantities["BTC-PERPETUAL"] == pytest.approx(0.5 * (lo + hi), rel=1e-6)
