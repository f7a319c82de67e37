"""Distance to liquidation against a brute-force grid: the market is moved in the snapshot's own
rows (index, forwards, futures marks, option marks repriced), the book's P&L comes from the
scenario engine (``scenarios.revalue``), and maintenance margin from ``marginopt.margin`` on the
moved snapshot; no crossing comes before the reported move, and one follows it."""

from __future__ import annotations

import numpy as np
import pytest

from marginopt import InvalidValue, Portfolio, margin
from marginopt.explain import liquidation
from marginopt.instruments import parse_instrument
from marginopt.market import MarketSnapshot
from marginopt.pricing import black76_price
from marginopt.scenarios import ScenarioGrid, revalue

from .conftest import book_for


def _moved(market_rows, market, underlying, move, vol_shift=0.0, names=None):
    """The snapshot (of ``names``' rows) with ``underlying`` moved by ``move`` and every option
    vol by ``vol_shift``."""
    rows = []
    for r in market_rows:
        if names is not None and r["instrument_name"] not in names:
            continue
        r = dict(r)
        inst = parse_instrument(r["instrument_name"])
        f = 1.0 + (move if inst.underlying == underlying else 0.0)
        if inst.is_option:
            fwd0, sigma0 = r["underlying_price"], r["mark_iv"] / 100.0
            t = market.year_fraction(inst.expiry)
            v0 = black76_price(fwd0, inst.strike, t, sigma0, inst.is_call)
            v1 = black76_price(fwd0 * f, inst.strike, t, sigma0 + vol_shift, inst.is_call)
            inverse = inst.settlement.value == "inverse"
            r["mark_price"] = max(r["mark_price"] + (float(v1 / (fwd0 * f) - v0 / fwd0) if inverse
                                                     else float(v1 - v0)), 0.0)
            r["mark_iv"] = 100.0 * (sigma0 + vol_shift)
            r["underlying_price"] = fwd0 * f
        else:
            r["mark_price"] *= f
            if r.get("underlying_price") is not None:
                r["underlying_price"] *= f
        rows.append(r)
    index = {u: p * (1.0 + (move if u == underlying else 0.0)) for u, p in market.index_prices.items()}
    return MarketSnapshot.from_rows(rows, valuation_time=market.valuation_time, index_prices=index)


def _gap(book, market_rows, market, rules, equity, underlying, move):
    """Maintenance margin less equity (with the book's P&L) after an index move, brute force."""
    inputs = market.pricing_inputs(book.instruments)
    grid = ScenarioGrid(("move",), [move], [0], [1.0], [0.0])
    pnl = revalue(inputs, grid)[0]
    mine = np.array([i.underlying == underlying for i in book.instruments])
    usd = np.where(inputs.is_inverse, inputs.index * (1.0 + move), 1.0)
    equity_there = equity + float((book.quantities * pnl * usd * mine).sum())
    moved = _moved(market_rows, market, underlying, move, names=set(book.names))
    return margin(book, moved, rules).maintenance_margin_usd - equity_there


@pytest.mark.parametrize("model,seed", [("deribit-pm", 0), ("deribit-pm", 1), ("deribit-standard", 2),
                                        ("covariance-var", 3)])
def test_index_moves_against_a_brute_force_grid(models, universe, market, market_rows, model, seed):
    rng = np.random.default_rng(seed)
    book = book_for(model, universe, [], seed, size=6)
    rules = models[model]
    mm = margin(book, market, rules).maintenance_margin_usd
    equity = mm * (1.0 + rng.uniform(0.3, 1.5)) + 5_000.0
    liq = liquidation(book, market, rules, equity=equity)
    assert liq.maintenance_margin_usd == pytest.approx(mm, rel=1e-12)
    index_points = [p for p in liq.points if p.kind == "index"]
    assert {p.underlying for p in index_points} == {i.underlying for i in book.instruments}
    reached = 0
    for p in index_points:
        sign = -1.0 if p.direction == "down" else 1.0
        if p.move is None:
            grid = np.linspace(0.0, abs(p.searched_to), 31)[1:]
            gaps = [_gap(book, market_rows, market, rules, equity, p.underlying, sign * s) for s in grid]
            assert max(gaps) <= 0.0, p.shock
            continue
        reached += 1
        root = abs(p.move)
        assert _gap(book, market_rows, market, rules, equity, p.underlying, p.move) == \
            pytest.approx(0.0, abs=1e-7 * equity)
        grid = np.linspace(0.0, root, 31)[1:-1]   # no crossing before the reported move
        gaps = [_gap(book, market_rows, market, rules, equity, p.underlying, sign * s) for s in grid]
        assert max(gaps) <= 0.0, p.shock
        beyond = _gap(book, market_rows, market, rules, equity, p.underlying, sign * root * (1 + 1e-4))
        assert beyond > 0.0, p.shock
        assert p.equity_usd == pytest.approx(p.maintenance_margin_usd, rel=1e-7)
    assert reached >= 1


def test_vol_shift_against_brute_force(models, universe, market, market_rows):
    options = [n for n in universe if n.endswith(("-C", "-P"))]
    book = book_for("deribit-pm", options, [], 7, size=6)
    book = Portfolio({k: -abs(v) for k, v in book.positions.items()})  # short vol: up hurts
    rules = models["deribit-pm"]
    mm = margin(book, market, rules).maintenance_margin_usd
    equity = 1.6 * mm
    liq = liquidation(book, market, rules, equity=equity)
    (up,) = [p for p in liq.points if p.shock == "vol up"]
    assert up.status == "reached"
    inputs = market.pricing_inputs(book.instruments)

    def gap(shift):
        v0 = black76_price(inputs.forward, inputs.strike, inputs.t, inputs.sigma, inputs.is_call)
        v1 = black76_price(inputs.forward, inputs.strike, inputs.t, inputs.sigma + shift, inputs.is_call)
        coin = np.where(inputs.is_inverse, (v1 - v0) / inputs.forward * inputs.index, v1 - v0)
        moved = _moved(market_rows, market, None, 0.0, shift, names=set(book.names))
        return margin(book, moved, rules).maintenance_margin_usd - (equity + float(book.quantities @ coin))

    assert gap(up.move) == pytest.approx(0.0, abs=1e-7 * equity)
    assert max(gap(s) for s in np.linspace(0, up.move, 25)[1:-1]) <= 0.0
    assert gap(up.move * (1 + 1e-4)) > 0.0


def test_already_below_maintenance_and_bad_equity(market):
    book = Portfolio({"BTC-27SEP24-55000-P": -10.0})
    mm = margin(book, market, "deribit-pm").maintenance_margin_usd
    liq = liquidation(book, market, "deribit-pm", equity=mm / 2)
    assert all(p.status == "already below maintenance" and p.move == 0.0 for p in liq.points)
    with pytest.raises(InvalidValue, match="equity"):
        liquidation(book, market, "deribit-pm", equity=float("inf"))
    with pytest.raises(InvalidValue, match="max_index_down"):
        liquidation(book, market, "deribit-pm", equity=1e6, max_index_down=1.5)
    frame = liquidation(book, market, "deribit-pm", equity=10 * mm).to_frame()
    assert list(frame["shock"]) == ["BTC index down", "BTC index up", "vol down", "vol up"]
