"""Capacity: at the reported quantity the calculator's initial margin equals the budget (1e-8
relative) and just beyond it exceeds the budget, on random books and instruments under every
model (closed form for piecewise-linear models, root-find for the others); spec limits and trade
bounds cap it and are named."""

from __future__ import annotations

import numpy as np
import pytest

from marginopt import InvalidValue, Portfolio, UnknownInstrument, margin
from marginopt.explain import capacity
from marginopt.explain._capacity import EXACT, ROOT_CONVEX, ROOT_NONCONVEX

from .conftest import MODELS, book_for


def _check_at_capacity(book, market, rules, cap, names, sides=(1.0, -1.0)):
    checked = 0
    for name in names:
        j = cap.instruments.index(name)
        for side, q, why in ((1.0, cap.buy[j], cap.buy_limited_by[j]),
                             (-1.0, cap.sell[j], cap.sell_limited_by[j])):
            if side not in sides or why != "margin budget":
                continue
            assert np.isfinite(q) and q >= 0
            at = margin(book.apply({name: side * q}, drop_zero=False), market, rules).initial_margin_usd
            assert abs(at - cap.budget_usd) <= 1e-8 * cap.budget_usd, (name, side, q, at)
            step = max(q * 1e-6, 1e-6)
            beyond = margin(book.apply({name: side * (q + step)}, drop_zero=False), market,
                            rules).initial_margin_usd
            assert beyond > cap.budget_usd, (name, side, q, beyond)
            checked += 1
    return checked


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_margin_at_capacity_is_the_budget(models, universe, derive_universe, market, model, seed):
    rng = np.random.default_rng(100 + seed)
    names = derive_universe if model == "derive-pm2" else universe
    book = book_for(model, universe, derive_universe, seed)
    rules = models[model]
    im = margin(book, market, rules).initial_margin_usd
    budget = im * (1.0 + rng.uniform(0.05, 0.6)) + 1000.0
    pick = [str(n) for n in rng.choice(names, size=min(6, len(names)), replace=False)]
    cap = capacity(book, market, rules, budget=budget, instruments=pick)
    assert cap.initial_margin_usd == pytest.approx(im, rel=1e-12)
    assert set(pick) <= set(cap.instruments) and set(book.names) <= set(cap.instruments)
    checked = _check_at_capacity(book, market, rules, cap, pick + book.names[:2])
    assert checked >= 3  # most sides are bounded by margin: the check is not vacuous
    expected = {"deribit-pm": {EXACT}, "scenario-max": {EXACT}, "derive-pm2": {ROOT_NONCONVEX},
                "covariance-var": {ROOT_CONVEX}, "covariance-var-variance": {ROOT_CONVEX},
                "scenario-es": {ROOT_CONVEX}, "deribit-standard": {EXACT, ROOT_CONVEX}}[model]
    assert set(cap.method) <= expected


def test_standard_margin_closed_form_for_options_root_find_for_futures(models, market):
    book = Portfolio({"BTC-27DEC24": 2.0, "BTC-27SEP24-55000-P": -3.0})
    names = ["BTC-PERPETUAL", "BTC-27SEP24-60000-C", "BTC-28MAR25-50000-P"]
    cap = capacity(book, market, "deribit-standard", budget=60_000.0, instruments=names)
    method = dict(zip(cap.instruments, cap.method))
    assert method["BTC-PERPETUAL"] == ROOT_CONVEX and method["BTC-27DEC24"] == ROOT_CONVEX
    assert method["BTC-27SEP24-60000-C"] == EXACT
    # buying an option adds no standard margin: nothing but the spec could stop it
    j = cap.instruments.index("BTC-27SEP24-60000-C")
    assert cap.buy[j] == np.inf and cap.buy_limited_by[j] == "unbounded"
    assert _check_at_capacity(book, market, models["deribit-standard"], cap, names, sides=(-1.0,)) == 3


def test_spec_limits_and_trade_bounds_cap_and_are_named(market):
    book = Portfolio({"BTC-PERPETUAL": 1.0, "BTC-27SEP24-55000-P": -2.0})
    spec = {"limits": {"BTC": {"delta": [-3, 4]}},
            "trade_bounds": {"max_quantity": 50, "max_quantity_by_instrument": {"BTC-27DEC24": 0.5}},
            "do_not_trade": ["BTC-27SEP24"]}
    names = ["BTC-PERPETUAL", "BTC-27DEC24", "BTC-27SEP24", "ETH-PERPETUAL"]
    cap = capacity(book, market, "deribit-pm", budget=10_000_000.0, instruments=names, spec=spec)
    f = cap.to_frame().set_index("instrument")
    inputs = market.pricing_inputs(Portfolio({n: 1.0 for n in cap.instruments}).instruments)
    delta = dict(zip(cap.instruments, inputs.coin_delta()))
    book_delta = sum(q * delta[n] for n, q in book.positions.items())
    perp = f.loc["BTC-PERPETUAL"]
    assert perp.buy_limited_by == "limit BTC.delta" and perp.sell_limited_by == "limit BTC.delta"
    assert perp.buy_max == pytest.approx(4 - book_delta, rel=1e-12)
    assert perp.sell_max == pytest.approx(book_delta + 3, rel=1e-12)
    assert f.loc["BTC-27DEC24"].buy_max == 0.5
    assert f.loc["BTC-27DEC24"].buy_limited_by == "max_quantity_by_instrument"
    assert f.loc["BTC-27SEP24"].sell_max == 0 and f.loc["BTC-27SEP24"].sell_limited_by == "do_not_trade"
    assert f.loc["ETH-PERPETUAL"].buy_max == 50 and f.loc["ETH-PERPETUAL"].buy_limited_by == "max_quantity"


def test_over_budget_and_bad_input(market):
    book = Portfolio({"BTC-27SEP24-55000-P": -20.0})
    im = margin(book, market, "deribit-pm").initial_margin_usd
    cap = capacity(book, market, "deribit-pm", equity=im / 2, instruments=["BTC-PERPETUAL"])
    assert np.all(cap.buy == 0) and np.all(cap.sell == 0)
    assert set(cap.buy_limited_by) == {"over budget"}
    with pytest.raises(InvalidValue, match="equity or a margin budget"):
        capacity(book, market, "deribit-pm")
    with pytest.raises(InvalidValue, match="budget"):
        capacity(book, market, "deribit-pm", budget=float("nan"))
    with pytest.raises(UnknownInstrument, match="BTC-PERPETUL"):
        capacity(book, market, "deribit-pm", budget=1e6, instruments=["BTC-PERPETUL"])


def test_instruments_the_model_cannot_margin_are_excluded_with_the_reason(market):
    book = Portfolio({"BTC-PERPETUAL": 1.0})
    cap = capacity(book, market, "deribit-pm", budget=1e6)
    assert "SOL_USDC-PERPETUAL" in cap.excluded and "SOL" in cap.excluded["SOL_USDC-PERPETUAL"]
    assert len(cap.instruments) + len(cap.excluded) == len(set(market.instrument_names))
    frame = cap.to_frame()
    assert list(frame.columns) == ["instrument", "position", "buy_max", "buy_limited_by", "sell_max",
                                   "sell_limited_by", "method"]
    assert cap.to_dict()["instruments"][0]["instrument"] == "BTC-PERPETUAL"
