"""The rebalancer on real-shaped books: soundness, agreement with the calculator, limits, lots."""

from __future__ import annotations

import json

import numpy as np
import pytest

import marginopt as mo
from marginopt.errors import Infeasible, SpecError
from marginopt.rebalance import Rebalancer

from .conftest import assert_sound, recompute_after


def test_sample_book_saves_margin_and_agrees_with_calculator(sample):
    book, market, spec = sample
    before = mo.margin(book, market, "deribit-pm")
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p, before)
    assert p.status == "optimal"
    assert p.margin_saved_usd > 0.1 * before.initial_margin_usd
    after = recompute_after(book, market, "deribit-pm", p)
    assert p.margin_after.initial_margin_usd == pytest.approx(after.initial_margin_usd, rel=1e-12)
    # the solver's objective and the calculator agree on the post-trade book
    assert p.solver_margin_usd == pytest.approx(after.initial_margin_usd, rel=1e-7, abs=1e-4)
    assert p.solver == "HIGHS (native)" and p.problem_class == "LP"  # the native LP path
    assert not any("differs from the calculator" in n for n in p.notes)
    assert p.binding_limits, "with relative vega/gamma limits something binds"
    for lim in p.binding_limits:
        assert lim.shadow_price >= 0


def test_greeks_after_are_the_book_after(sample):
    book, market, spec = sample
    p = mo.optimize(book, market, "deribit-pm", spec)
    post = book.apply(p.trade_quantities)
    inputs = market.pricing_inputs(post.instruments)
    und = np.array([i.underlying for i in post.instruments])
    for u in ("BTC", "ETH"):
        delta = float((inputs.coin_delta() * post.quantities)[und == u].sum())
        vega = float((inputs.vega_usd() * post.quantities)[und == u].sum())
        assert p.greeks_after[u]["delta"] == pytest.approx(delta, rel=1e-10, abs=1e-10)
        assert p.greeks_after[u]["vega"] == pytest.approx(vega, rel=1e-10, abs=1e-8)
        lo, hi = spec.limits[u].delta
        assert lo - 1e-9 * max(abs(lo), abs(hi)) <= delta <= hi + 1e-9 * max(abs(lo), abs(hi))


@pytest.mark.parametrize("model", ["deribit-pm", "deribit-standard", "covariance-var"])
def test_every_model_class_optimises_soundly(sample, model):
    book, market, _ = sample
    spec = {"universe": "held+futures", "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-40, 40]}},
            "relative_limits": {"BTC": {"vega": 200}, "ETH": {"vega": 150}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    p = mo.optimize(book, market, model, spec)
    assert_sound(p)
    expected_class = {"deribit-pm": "LP", "deribit-standard": "QP", "covariance-var": "SOCP"}[model]
    assert p.problem_class == expected_class
    if p.trades:
        after = recompute_after(book, market, model, p)
        assert p.solver_margin_usd == pytest.approx(after.initial_margin_usd, rel=1e-6, abs=1e-3)


def test_already_optimal_book_proposes_no_trade(sample):
    book, market, spec = sample
    first = mo.optimize(book, market, "deribit-pm", spec)
    post = book.apply(first.trade_quantities)
    # same absolute limits, the relative ones pinned at the post-trade book's greeks
    fixed = spec.model_copy(update={"relative_limits": {}})
    again = mo.optimize(post, market, "deribit-pm", fixed.model_copy(update={"universe": "held"}))
    assert_sound(again)
    assert again.margin_saved_usd <= first.margin_after.initial_margin_usd * 1e-6 + 1.0 or again.trades


def test_no_trade_when_nothing_may_trade(sample):
    book, market, _ = sample
    p = mo.optimize(book, market, "deribit-pm", {"universe": "held", "do_not_trade": book.names})
    assert_sound(p)
    assert p.status == "no_trade" and p.trades == ()
    assert p.margin_after.initial_margin_usd == p.margin_before.initial_margin_usd
    assert "lowest margin" in p.reason


def test_cost_above_saving_proposes_nothing():
    market = mo.MarketSnapshot.from_rows(
        [{"instrument_name": "BTC-PERPETUAL", "mark_price": 100_000, "bid_price": 90_000, "ask_price": 110_000}],
        valuation_time="2026-11-20T08:00:00Z", index_prices={"BTC": 100_000})
    book = mo.Portfolio({"BTC-PERPETUAL": 1.0})
    # closing saves about 0.16 BTC of margin (16,000 USD); the half spread is 5,000 USD per BTC,
    # so closing is worth it; with a minimum saving of 20,000 USD nothing is proposed
    p = mo.optimize(book, market, "deribit-pm", {"universe": "held", "min_saving_usd": 20_000})
    assert_sound(p)
    assert p.status == "no_trade" and "minimum" in p.reason
    q = mo.optimize(book, market, "deribit-pm", {"universe": "held"})
    assert_sound(q)
    assert q.trade_quantities == pytest.approx({"BTC-PERPETUAL": -1.0})


def test_book_breaking_a_limit_is_restored(sample):
    book, market, _ = sample
    spec = {"universe": "held+futures", "limits": {"BTC": {"delta": [1.0, 2.0]}}}
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    btc = next(l for l in p.limits if l.name == "BTC.delta")
    assert btc.breached_before and 1.0 - 1e-9 <= btc.after <= 2.0 + 1e-9
    assert p.status in ("restores_limits",)


def test_infeasible_limits_name_the_limit_to_move(sample):
    book, market, _ = sample
    # only options may trade, and none at all: delta cannot move to the band
    spec = {"universe": "held", "do_not_trade": book.names, "limits": {"BTC": {"delta": [10, 12]}}}
    with pytest.raises(Infeasible) as err:
        mo.optimize(book, market, "deribit-pm", spec)
    diagnosis = err.value.diagnosis
    assert list(diagnosis) == ["BTC.delta.lower"]
    current = mo.optimize(book, market, "deribit-pm", {"universe": "held"}).greeks_before["BTC"]["delta"]
    assert diagnosis["BTC.delta.lower"] == pytest.approx(-(10 - current), rel=1e-6)
    assert "BTC.delta.lower" in str(err.value)


def test_conflicting_turnover_budget_is_diagnosed(sample):
    book, market, _ = sample
    spec = {"universe": "held+futures", "limits": {"BTC": {"delta": [20, 21]}},
            "trade_bounds": {"turnover_usd": 1000}}
    with pytest.raises(Infeasible) as err:
        mo.optimize(book, market, "deribit-pm", spec)
    assert set(err.value.diagnosis) <= {"BTC.delta.lower", "turnover_usd"}
    assert err.value.diagnosis


def test_round_to_lots_keeps_limits_and_reverifies(sample):
    book, market, spec = sample
    lots = {"mode": "round", "sizes": {"BTC-future": 0.01, "ETH-future": 0.1}}
    p = mo.optimize(book, market, "deribit-pm", spec.model_copy(update={"lots": mo.load_spec({"lots": lots}).lots}))
    assert_sound(p)
    after = recompute_after(book, market, "deribit-pm", p)
    assert p.margin_after.initial_margin_usd == pytest.approx(after.initial_margin_usd, rel=1e-12)
    sizes = {"BTC-option": 0.1, "ETH-option": 1.0, "BTC-future": 0.01, "ETH-future": 0.1}
    for t in p.trades:
        inst = mo.parse_instrument(t.instrument_name)
        lot = sizes[f"{inst.underlying}-{'option' if inst.is_option else 'future'}"]
        assert abs(t.quantity / lot - round(t.quantity / lot)) < 1e-9


def test_exact_lots_are_lot_exact(sample):
    book, market, spec = sample
    small = {"universe": "held+futures", "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
             "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
             "trade_bounds": {"max_open_interest_fraction": 0.25},
             "lots": {"mode": "exact", "sizes": {"BTC-future": 0.01, "ETH-future": 0.1}}}
    p = mo.optimize(book, market, "deribit-pm", small)
    assert_sound(p)
    assert p.problem_class.endswith("MILP (lots)")
    sizes = {"BTC-option": 0.1, "ETH-option": 1.0, "BTC-future": 0.01, "ETH-future": 0.1}
    for t in p.trades:
        inst = mo.parse_instrument(t.instrument_name)
        lot = sizes[f"{inst.underlying}-{'option' if inst.is_option else 'future'}"]
        assert abs(t.quantity / lot - round(t.quantity / lot)) < 1e-9
    continuous = mo.optimize(book, market, "deribit-pm", {**small, "lots": {"mode": "none"}})
    assert p.margin_after.initial_margin_usd >= continuous.margin_after.initial_margin_usd - 1e-6


def test_max_instruments_caps_the_trade_count(sample):
    book, market, spec = sample
    spec2 = {"universe": "held+futures", "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
             "trade_bounds": {"max_open_interest_fraction": 0.25, "max_instruments": 3}}
    p = mo.optimize(book, market, "deribit-pm", spec2)
    assert_sound(p)
    assert 0 < len(p.trades) <= 3


def test_free_margin_objective_frees_the_target_at_least_cost(sample):
    book, market, spec = sample
    target = 20_000.0
    p = mo.optimize(book, market, "deribit-pm", spec.model_copy(update={"objective": "free_margin",
                                                                          "free_margin_usd": target}))
    assert_sound(p)
    assert p.margin_saved_usd >= target - 1e-3
    full = mo.optimize(book, market, "deribit-pm", spec)
    assert p.cost_usd <= full.cost_usd + 1e-6


def test_close_only_and_no_new_instruments(sample):
    book, market, spec = sample
    p = mo.optimize(book, market, "deribit-pm", spec.model_copy(update={"close_only": book.names,
                                                                          "universe": "held"}))
    assert_sound(p)
    for t in p.trades:
        x0 = book.quantity(t.instrument_name)
        assert np.sign(t.quantity) == -np.sign(x0) and abs(t.quantity) <= abs(x0) + 1e-12
    q = mo.optimize(book, market, "deribit-pm", spec.model_copy(update={"no_new_instruments": True}))
    assert_sound(q)
    assert all(t.instrument_name in book.positions for t in q.trades)


def test_resolve_with_new_snapshot_reuses_compiled_problem(sample):
    book, market, spec = sample
    spec = spec.model_copy(update={"solver": "cvxpy"})  # the cvxpy problem (test_native: the native one)
    reb = Rebalancer("deribit-pm", spec)
    first = reb.optimize(book, market)
    prob = next(iter(reb._problems.values()))
    compiled = prob.compiled
    assert compiled is not None
    moved = market.rows.copy()
    moved["underlying_price"] *= 1.01
    moved["mark_iv"] += 1.0
    new_market = mo.MarketSnapshot(market.valuation_time, {k: v * 1.01 for k, v in market.index_prices.items()},
                                   moved)
    second = reb.optimize(book, new_market)
    assert reb.builds == 1
    assert prob.compiled is compiled  # same compiled parametric program: no recompilation
    assert_sound(first)
    assert_sound(second)
    assert second.margin_before.initial_margin_usd != first.margin_before.initial_margin_usd
    # and the warm answer equals a cold solve of the new snapshot
    cold = mo.optimize(book, new_market, "deribit-pm", spec)
    assert second.margin_after.initial_margin_usd == pytest.approx(cold.margin_after.initial_margin_usd,
                                                                   rel=1e-7)


def test_named_solver_and_fallback(sample):
    book, market, spec = sample
    p = mo.optimize(book, market, "deribit-pm", spec, solver="CLARABEL")
    assert_sound(p)
    assert p.solver == "CLARABEL"
    h = mo.optimize(book, market, "deribit-pm", spec)
    assert p.margin_after.initial_margin_usd == pytest.approx(h.margin_after.initial_margin_usd, rel=1e-6)


def test_json_has_the_documented_shape(sample):
    book, market, spec = sample
    d = json.loads(mo.optimize(book, market, "deribit-pm", spec).to_json())
    for key in ("margin_before", "margin_after", "margin_saved_usd", "margin_saved_pct", "trades",
                "greeks_before", "greeks_after", "binding_limits", "status", "schema_version"):
        assert key in d
    assert {"instrument_name", "quantity", "price", "cost"} <= set(d["trades"][0])
    assert "initial_margin_usd" in d["margin_after"] and "by_underlying" in d["margin_after"]


def test_spec_errors_are_typed():
    with pytest.raises(SpecError) as err:
        mo.load_spec({"objective": "free_margin"})
    assert "free_margin_usd" in str(err.value)
    with pytest.raises(SpecError):
        mo.load_spec({"limits": {"BTC": {"delta": [5, -5]}}})


def test_impact_cost_makes_an_socp_and_stays_sound(sample):
    book, market, spec = sample
    impact_spec = spec.model_copy(update={"costs": mo.load_spec({"costs": {"impact": 5.0}}).costs})
    p = mo.optimize(book, market, "deribit-pm", impact_spec)
    assert_sound(p)
    assert p.problem_class == "SOCP" and p.solver == "CLARABEL"
    # the SOCP optimum beats the LP's trades when both are charged the impact cost
    plain = mo.optimize(book, market, "deribit-pm", spec)
    data = Rebalancer("deribit-pm", impact_spec).problem_data(book, market)
    t = np.array([plain.trade_quantities.get(n, 0.0) for n in data.universe.names])
    plain_cost = data.half_spread_usd @ np.abs(t) + data.impact_usd @ np.abs(t) ** 1.5
    assert p.cost_usd > 0
    assert p.margin_after.initial_margin_usd + p.cost_usd <= \
        plain.margin_after.initial_margin_usd + plain_cost + 1e-6 * p.margin_before.initial_margin_usd


def test_vega_buckets_and_gamma_limits_hold(sample):
    book, market, _ = sample
    spec = {"universe": "held+futures",
            "limits": {"BTC": {"delta": [-5, 5], "gamma": [-0.08, 0.08],
                               "vega_buckets": {"0-30": [-600, 600], "30-": [-1200, 1200]}}}}
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    names = {l.name for l in p.limits}
    assert {"BTC.delta", "BTC.gamma", "BTC.vega[0-30d]", "BTC.vega[30-d]"} <= names
    # the bucket rows add up to the whole BTC vega
    after = {l.name: l.after for l in p.limits}
    assert after["BTC.vega[0-30d]"] + after["BTC.vega[30-d]"] == pytest.approx(p.greeks_after["BTC"]["vega"], rel=1e-9)
