"""Derive PM2 inside the engine: the ``derive_pm2`` component, the shipped model file,
``to_marginopt`` and the rebalancer on a Derive book.

The engine's margin is the PM2 *requirement* (``loss factor x worst loss + contingencies``); the
exchange publishes ``IM``/``MM`` as the account value less it, so every golden case must give
``PortfolioMTM - IM`` and ``PortfolioMTM - MM`` through ``marginopt.margin``, and the bound
component's ``exchange_margin`` must give ``IM`` and ``MM`` themselves (1e-8, as the golden tests).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import marginopt
from marginopt.derive import (
    DerivePM2Margin,
    case_from_mapping,
    load_case,
    load_case_as_book,
    load_params,
    to_marginopt,
)
from marginopt.derive._params import build_params, params_to_block
from marginopt.errors import MissingMarketData, UnsupportedInstrument
from marginopt.instruments import parse_instrument
from marginopt.margins import BoundModel

from ._cases import CASE_FILES, CASE_PARAMS, CASES_DIR, close, pick, require_cases


@lru_cache(maxsize=None)
def book_of(path: Path):
    case = load_case(path)
    return (case, *to_marginopt(case))


def components(bound: BoundModel) -> tuple[DerivePM2Margin, DerivePM2Margin]:
    (pool,) = bound.pools
    (im,), (mm,) = pool.initial, pool.maintenance
    return im, mm


# --------------------------------------------------------------------------- the model file
def test_shipped_model_loads_and_is_listed():
    model = marginopt.load_model("derive-pm2")
    assert "derive-pm2" in marginopt.available_models()
    assert model.pooling == "single" and list(model.currencies) == ["ALL"]
    rules = model.currencies["ALL"]
    assert [(c.type, c.which) for c in rules.initial] == [("derive_pm2", "initial")]
    assert [(c.type, c.which) for c in rules.maintenance] == [("derive_pm2", "maintenance")]
    assert not model.convex
    # the default parameter set lives in the model file, and load_params reads it from there
    default = load_params()
    for comp in (*rules.initial, *rules.maintenance):
        block = params_to_block(comp.params)
        assert block == params_to_block(default)
    assert params_to_block(build_params(params_to_block(default))) == params_to_block(default)


# --------------------------------------------------------------------------- golden cases
def test_case_folder_is_populated():
    require_cases()
    assert CASE_FILES, f"no golden cases under {CASES_DIR} (set MARGINOPT_DERIVE_CASES)"


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_engine_margin_matches_the_exchange(path):
    case, book, market, model = book_of(path)
    r = case.expected.raw
    mtm, im, mm = float(r["PortfolioMTM"]), float(r["IM"]), float(r["MM"])
    result = marginopt.margin(book, market, model)
    assert close(result.initial_margin_usd, mtm - im), (result.initial_margin_usd, mtm - im)
    assert close(result.maintenance_margin_usd, mtm - mm), (result.maintenance_margin_usd, mtm - mm)
    bound = model.bind(book.instruments, market)
    c_im, c_mm = components(bound)
    x = book.quantities
    assert close(c_im.exchange_margin(x), im) and close(c_mm.exchange_margin(x), mm)
    d = c_im.details(x)
    assert close(d["derive_margin"], im) and close(d["account_value"], mtm)
    assert close(d["account_value"] - d["requirement"], im)
    assert len(d["scenario_labels"]) == len(d["scenario_pnl"])
    pool = result.by_underlying["ALL"]
    assert pool.worst_scenario == d["worst_scenario"]
    assert (d["worst_scenario"] == "forward_contingency") == \
        (r.get("worst_all_scenarios") == "fwd_contingency")


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_instruments_and_snapshot(path):
    case, book, market, model = book_of(path)
    if case.valuation_time is not None:
        assert market.valuation_time == datetime.fromtimestamp(case.valuation_time, tz=timezone.utc)
    for name in book.names:
        inst = parse_instrument(name)
        assert inst.settlement.value == "linear" and inst.name == name
        if inst.is_option:
            assert inst.expiry.hour == 8 and inst.expiry.minute == 0
            assert int((inst.expiry - market.valuation_time).total_seconds()) in \
                set(case.feed_expiry.tolist())
    rows = market.rows
    assert rows["bid_price"].isna().all() and rows["ask_price"].isna().all()
    options = [n for n in rows.index if parse_instrument(n).is_option]
    if options:  # marks in USD, vols in percent, forwards per expiry
        assert (rows.loc[options, "mark_iv"] > 1.0).all()
        assert (rows.loc[options, "underlying_price"] > 0).all()
    (und,) = market.index_prices
    assert market.index_prices[und] == case.spot


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_linearize_is_exact_and_its_gradient_is_the_slope(path):
    case, book, market, model = book_of(path)
    x = book.quantities
    checked = 0
    for comp in components(model.bind(book.instruments, market)):
        value, grad = comp.linearize(x, comp.values(1.0))
        assert value == comp.evaluate(x)
        assert grad.shape == x.shape
        scaled, grad2 = comp.linearize(x, comp.values(2.0))
        assert scaled == 2.0 * value and np.array_equal(grad2, 2.0 * grad)
        for j in range(x.size):
            h = 1e-4 * max(1.0, abs(x[j]))
            e = np.zeros_like(x)
            e[j] = h
            right = (comp.evaluate(x + e) - value) / h
            left = (value - comp.evaluate(x - e)) / h
            # rounding of the finite differences, plus a relative allowance
            tol = 1e-6 * max(1.0, abs(grad[j])) + 1e-13 * max(abs(value), 1.0) / h
            if abs(right - left) > tol:
                continue  # a kink along this direction: no single slope to compare with
            assert abs(grad[j] - 0.5 * (right + left)) <= tol, (book.names[j], grad[j], right, left)
            checked += 1
    # every direction of a short box kinks (naked-short netting at zero), and a book of one or
    # two positions may sit on a kink; a book of ten or more is smooth in most directions
    if x.size >= 10:
        assert checked >= 0.9 * 2 * x.size


# --------------------------------------------------------------------------- binding
def test_the_shipped_model_margins_a_snapshot_like_the_case():
    """Without account and market blocks the component reads the snapshot; on a case with zero
    rates, no cash and no collaterals it must agree with the case's own market data."""
    for path in pick(_shipped_parameters, 3, "an option book under the shipped model's parameters"):
        stem = path.stem
        data = json.loads(path.read_text())
        data.pop("Result")
        s = data["Scenario"]
        s.update(Cash=0.0, Collaterals=[], UnrealisedPerpPNL=0.0, UnrealisedFunding=0.0)
        for feed in s["OptionFeeds"]:
            feed["Rate"] = 0.0
        book, market, model = to_marginopt(case_from_mapping(data, source=stem))
        ours = marginopt.margin(book, market, model)
        shipped = marginopt.margin(book, market, "derive-pm2")
        assert shipped.initial_margin_usd == pytest.approx(ours.initial_margin_usd, rel=1e-10)
        assert shipped.maintenance_margin_usd == pytest.approx(ours.maintenance_margin_usd,
                                                               rel=1e-10)


def _shipped_parameters(path: Path) -> bool:
    """A case with options whose parameters are the shipped model's (the default set)."""
    case = _case(path)
    return case.option_strike.size > 0 and _same(params_to_block(case.params), params_to_block(load_params()))


def _same(a, b) -> bool:
    """Equal parameter blocks, numbers to 1e-12 (the files' derived totals are sums)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-12, atol=0.0))
    return a == b


def _options_only_expiry_book(path: Path) -> bool:
    """A book of options only (no perp), of one expiry: another expiry has no feed."""
    case = _case(path)
    return case.option_strike.size >= 2 and len(set(case.feed_expiry.tolist())) == 1 \
        and not case.perp_position


@lru_cache(maxsize=None)
def _case(path: Path):
    return load_case(path)


def test_instruments_pm2_cannot_margin_are_refused():
    (path,) = pick(_options_only_expiry_book, 1, "an options-only book of one expiry")
    case, book, market, model = book_of(path)
    rows = market.rows.reset_index().to_dict(orient="records")
    held = book.names[0]
    inst = parse_instrument(held)
    other_expiry = held.replace(inst.expiry_label, "27JUN25")  # no feed for that expiry
    inverse = held.replace("_USDC", "")
    extra = [{**rows[0], "instrument_name": n} for n in (other_expiry, inverse)]
    snap = marginopt.MarketSnapshot.from_rows(rows + extra, valuation_time=market.valuation_time,
                                              index_prices=market.index_prices)
    for name, error in ((other_expiry, MissingMarketData), (inverse, UnsupportedInstrument)):
        with pytest.raises(error) as err:
            model.bind([*book.instruments, parse_instrument(name)], snap)
        assert err.value.row == name
    # as candidates, the rebalancer leaves them out and says why
    p = marginopt.optimize(book, snap, model, spec={"universe": "listed", "costs": {"spread": False},
                                                    "trade_bounds": {"max_quantity": 1.0}})
    assert "no option feed" in p.excluded[other_expiry]
    assert inverse in p.excluded
    assert not set(p.trade_quantities) & {other_expiry, inverse}


# --------------------------------------------------------------------------- the rebalancer
def _optimised(kind: str):
    """The case a rebalancer test runs on, chosen by what its book holds."""
    def accept(path: Path) -> bool:
        case = _case(path)
        n = case.option_strike.size
        if kind == "largest option book":
            return n >= 2
        if kind == "options and a perp":
            return n >= 1 and bool(case.perp_position)
        return 2 <= n <= 5 and len(set(case.feed_expiry.tolist())) == 1  # a small one-expiry book
    return accept


@pytest.mark.parametrize("kind", ["largest option book", "options and a perp", "small one-expiry book"])
def test_optimise_a_derive_book(kind):
    (path,) = pick(_optimised(kind), 1, f"a {kind}")
    book, market, model = load_case_as_book(path)
    (und,) = market.index_prices
    spec = {"universe": "held", "costs": {"spread": False},
            "limits": {und: {"delta": 0.5, "vega": 200.0, "relative": True}},
            "trade_bounds": {"max_quantity": 1.0}}
    p = marginopt.optimize(book, market, model, spec=spec)

    # no instrument frozen for want of a bid/ask when spread costs are off
    assert not any("is not traded" in n for n in p.notes), p.notes
    before = marginopt.margin(book, market, model).initial_margin_usd
    after = marginopt.margin(book.apply(p.trade_quantities), market, model).initial_margin_usd
    assert p.margin_before.initial_margin_usd == pytest.approx(before, rel=1e-12)
    assert p.margin_after.initial_margin_usd == pytest.approx(after, rel=1e-12)
    assert after <= before
    assert p.margin_saved_usd == pytest.approx(before - after, rel=1e-9, abs=1e-9)
    for lim in p.limits:
        scale = max(abs(lim.lower or 0.0), abs(lim.upper or 0.0), 1.0)
        if lim.lower is not None:
            assert lim.after >= lim.lower - 1e-9 * scale, lim
        if lim.upper is not None:
            assert lim.after <= lim.upper + 1e-9 * scale, lim
    assert all(abs(t.quantity) <= 1.0 + 1e-9 for t in p.trades)
    if p.trades:
        assert p.status == "optimal"
        assert p.margin_saved_usd > 0.0
    # the exchange's IM rises by the saving: trades at the mark leave the account value alone
    c_before, _ = components(model.bind(book.instruments, market))
    post = book.apply(p.trade_quantities)
    c_after, _ = components(model.bind(post.instruments, market))
    gain = c_after.exchange_margin(post.quantities) - c_before.exchange_margin(book.quantities)
    # (an option changes hands at its mark; a perp has no value at entry)
    premium = sum(q * float(market.column([n], "mark_price")[0])
                  for n, q in p.trade_quantities.items() if parse_instrument(n).is_option)
    assert gain - premium == pytest.approx(p.margin_saved_usd, rel=1e-9, abs=1e-6)


def test_spread_costs_freeze_a_book_without_quotes():
    """Cases carry no bid/ask: with spread costs on, nothing can trade (and the proposal says so)."""
    (path,) = pick(_optimised("small one-expiry book"), 1, "a small one-expiry option book")
    book, market, model = load_case_as_book(path)
    p = marginopt.optimize(book, market, model, spec={"universe": "held"})
    assert p.status == "no_trade" and not p.trades
    assert any("no ask" in n or "no bid" in n for n in p.notes)
