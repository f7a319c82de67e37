"""Market snapshots: both input forms, typed errors that name the row and field, never a NaN margin."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import marginopt
from marginopt import (ExpiredInstrument, InputError, InvalidValue, MarketSnapshot, MissingMarketData,
                       Portfolio, UnknownInstrument, UnsupportedCurrency, load_market, parse_instrument)

from .conftest import BOOK, INDEX, VALUATION, forward, year_fraction


def find(rows, name):
    return next(r for r in rows if r["instrument_name"] == name)


# ------------------------------------------------------------------ input forms
def test_file_form_round_trip(tmp_path, market):
    path = tmp_path / "market.json"
    path.write_text(json.dumps(market.to_dict()))
    again = load_market(path)
    assert again.valuation_time == VALUATION
    assert dict(again.index_prices) == INDEX
    assert again.source == str(path)
    pd.testing.assert_frame_equal(again.rows, market.rows)


def test_raw_deribit_response_with_index_and_time_given_separately(market_rows):
    raw = {"jsonrpc": "2.0", "result": market_rows, "usIn": 1, "usOut": 2}
    snap = MarketSnapshot.from_dict(raw, valuation_time="2024-09-02T09:30:00Z", index_prices=INDEX)
    assert snap.valuation_time == VALUATION
    assert len(snap.rows) == len(market_rows)
    assert load_market(raw, valuation_time=VALUATION, index_prices=INDEX).instrument_names == snap.instrument_names
    with pytest.raises(InputError, match="valuation_time and index_prices"):
        MarketSnapshot.from_dict(raw)


def test_file_form_validation_error_names_field():
    with pytest.raises(InputError) as err:
        MarketSnapshot.from_dict({"valuation_time": "2024-09-02T09:30:00Z", "instruments": []})
    assert err.value.field == "index_prices"


def test_naive_valuation_time_is_utc(market_rows):
    snap = MarketSnapshot.from_rows(market_rows, valuation_time="2024-09-02 09:30", index_prices=INDEX)
    assert snap.valuation_time == VALUATION
    assert snap.with_valuation_time("2024-09-03T09:30:00+01:00").valuation_time.hour == 8


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_market(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1,")
    with pytest.raises(InputError, match="not valid JSON"):
        load_market(bad)


def test_deribit_futures_rows_without_underlying_price(market, book):
    """Deribit's book summary gives a future its mark price but no underlying_price: the future's
    own mark is its forward."""
    inst = parse_instrument("BTC-27DEC24")
    inputs = market.pricing_inputs([inst])
    assert inputs.forward[0] == pytest.approx(forward("BTC", "27DEC24"), rel=1e-15)
    result = marginopt.margin(book, market, "deribit-pm")
    assert math.isfinite(result.initial_margin_usd) and result.initial_margin_usd > 0


def test_pricing_inputs(market):
    names = ["BTC-27SEP24-55000-P", "ETH-PERPETUAL", "BTC_USDC", "BTC_USDC-27SEP24-60000-C", "ETH-27DEC24"]
    inp = market.pricing_inputs([parse_instrument(n) for n in names])
    assert list(inp.is_option) == [True, False, False, True, False]
    assert list(inp.is_inverse) == [True, True, False, False, True]
    assert list(inp.is_spot) == [False, False, True, False, False]
    assert list(inp.is_call[[0, 3]]) == [False, True]
    assert inp.t[0] == pytest.approx(year_fraction("27SEP24"), rel=1e-15)
    assert inp.t[1] == inp.t[2] == 0.0
    assert list(inp.forward[1:3]) == [INDEX["ETH"], INDEX["BTC"]]
    assert inp.forward[0] == pytest.approx(forward("BTC", "27SEP24"), rel=1e-15)
    assert inp.sigma[0] == pytest.approx(find(market.to_dict()["instruments"], names[0])["mark_iv"] / 100)
    assert np.isnan(inp.sigma[1]) and np.isnan(inp.strike[1])
    assert inp.strike[3] == 60000.0


def test_mark_and_half_spread_in_usd(market):
    names = ["BTC-27SEP24-55000-P", "BTC_USDC-27SEP24-60000-C", "BTC-PERPETUAL"]
    insts = [parse_instrument(n) for n in names]
    rows = market.rows.loc[names]
    mark = market.mark_usd(insts)
    f = forward("BTC", "27SEP24")
    assert mark[0] == pytest.approx(rows["mark_price"].iloc[0] * f, rel=1e-14)
    assert mark[1] == rows["mark_price"].iloc[1]
    half = market.half_spread_usd(insts)
    assert half[0] == pytest.approx(0.0005 * f, rel=1e-9)
    assert half[1] == pytest.approx(0.5, rel=1e-12)
    assert half[2] == pytest.approx(0.5, rel=1e-12)


def test_decimal_strike_names_match_between_snapshot_and_book():
    snap = MarketSnapshot.from_rows(
        [{"instrument_name": "XRP_USDC-27DEC24-0d625-C", "mark_price": 0.05, "mark_iv": 90.0,
          "underlying_price": 0.6}], valuation_time=VALUATION, index_prices={"XRP": 0.6})
    assert snap.instrument_names == ["XRP_USDC-27DEC24-0d625-C"]
    inp = snap.pricing_inputs([parse_instrument("xrp_usdc-27dec24-0d625-c")])
    assert inp.strike[0] == 0.625


# ------------------------------------------------------------------ bad values: typed errors naming row and field
@pytest.mark.parametrize("field, value, why", [
    ("mark_price", -0.01, "negative"),
    ("mark_price", "abc", "not a number"),
    ("mark_price", "NaN", "not a number"),
    ("mark_iv", -5.0, "negative"),
    ("underlying_price", math.inf, "infinite"),
    ("bid_price", "1,5", "not a number"),
])
def test_bad_market_values_name_the_instrument_and_field(market_rows, field, value, why):
    name = "ETH-27SEP24-2200-P"
    find(market_rows, name)[field] = value
    with pytest.raises(InvalidValue) as err:
        MarketSnapshot.from_rows(market_rows, valuation_time=VALUATION, index_prices=INDEX,
                                 source="snap.json")
    exc = err.value
    assert (exc.row, exc.field, exc.source) == (name, field, "snap.json")
    assert why in str(exc) and name in str(exc)


@pytest.mark.parametrize("px", [-1.0, 0.0, math.nan, "abc", math.inf])
def test_bad_index_price(market_rows, px):
    with pytest.raises(InvalidValue) as err:
        MarketSnapshot.from_rows(market_rows, valuation_time=VALUATION, index_prices={**INDEX, "ETH": px})
    assert (err.value.row, err.value.field) == ("ETH", "index_prices")


def test_duplicate_and_nameless_rows(market_rows):
    with pytest.raises(InputError, match="twice") as err:
        MarketSnapshot.from_rows(market_rows + [dict(market_rows[0])], valuation_time=VALUATION,
                                 index_prices=INDEX)
    assert err.value.row == market_rows[0]["instrument_name"]
    with pytest.raises(InputError, match="instrument_name"):
        MarketSnapshot.from_rows([{"mark_price": 1.0}], valuation_time=VALUATION, index_prices=INDEX)
    with pytest.raises(InputError) as err:
        MarketSnapshot.from_rows(market_rows[:3] + [{"instrument_name": None, "mark_price": 1.0}],
                                 valuation_time=VALUATION, index_prices=INDEX)
    assert err.value.row == 4


@pytest.mark.parametrize("field", ["mark_price", "mark_iv"])
@pytest.mark.parametrize("blank", [None, math.nan, 0.0])
def test_held_option_without_mark_or_iv(market_rows, make_market, field, blank):
    name = "ETH-27SEP24-2200-P"
    if blank == 0.0 and field == "mark_price":
        pytest.skip("a zero mark is a legitimate price")
    find(market_rows, name)[field] = blank
    snap = make_market(market_rows)  # loading is fine: the row is only unusable if held
    with pytest.raises(MissingMarketData) as err:
        marginopt.margin(Portfolio(BOOK), snap, "deribit-pm")
    assert (err.value.row, err.value.field) == (name, field)
    assert snap.usable(parse_instrument(name)) is not None
    # not held: no error
    book = {k: v for k, v in BOOK.items() if k != name}
    assert math.isfinite(marginopt.margin(Portfolio(book), snap, "deribit-pm").initial_margin_usd)


def test_dated_instrument_without_any_forward(market_rows, make_market):
    row = find(market_rows, "BTC-27DEC24")
    row["mark_price"] = None
    with pytest.raises(MissingMarketData) as err:
        marginopt.margin(Portfolio({"BTC-27DEC24": 1.0}), make_market(market_rows))
    assert (err.value.row, err.value.field) == ("BTC-27DEC24", "underlying_price")


def test_missing_index_for_an_underlying(market_rows, make_market):
    snap = make_market(market_rows, index_prices={"BTC": INDEX["BTC"]})
    with pytest.raises(MissingMarketData) as err:
        marginopt.margin(Portfolio({"ETH-PERPETUAL": 1.0}), snap)
    assert (err.value.row, err.value.field) == ("ETH-PERPETUAL", "index_prices")


@pytest.mark.parametrize("when", ["2024-09-03T08:00:00Z", "2024-09-03T08:00:01Z", "2024-09-10T00:00:00Z"])
def test_expired_instrument(market, when):
    snap = market.with_valuation_time(when)
    with pytest.raises(ExpiredInstrument) as err:
        marginopt.margin(Portfolio({"BTC-27SEP24": 1.0, "BTC-3SEP24-60000-C": -1.0}), snap)
    assert (err.value.row, err.value.field) == ("BTC-3SEP24-60000-C", "expiry")
    assert "2024-09-03 08:00" in str(err.value)
    # a second before expiry it is live
    live = market.with_valuation_time("2024-09-03T07:59:59Z")
    assert math.isfinite(marginopt.margin(Portfolio({"BTC-3SEP24-60000-C": -1.0}), live).initial_margin_usd)


def test_unknown_instrument(market):
    with pytest.raises(UnknownInstrument) as err:
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0, "BTC-27SEP24-61000-C": 1.0}), market)
    assert (err.value.row, err.value.field) == ("BTC-27SEP24-61000-C", "instrument_name")


@pytest.mark.parametrize("model, name", [("deribit-pm", "SOL_USDC-PERPETUAL"),
                                         ("deribit-pm", "SOL_USDC-27SEP24-130-C"),
                                         ("covariance-var", "SOL_USDC-PERPETUAL")])
def test_currency_the_model_lacks(market, model, name):
    with pytest.raises(UnsupportedCurrency) as err:
        marginopt.margin(Portfolio({"BTC-PERPETUAL": 1.0, name: 10.0}), market, model)
    assert "SOL" in str(err.value)


def test_sol_is_margined_by_the_standard_model(market):
    res = marginopt.margin(Portfolio({"SOL_USDC-PERPETUAL": 10.0}), market, "deribit-standard")
    assert res.initial_margin_usd == pytest.approx(10 * 135 * (0.04 + 10 * 0.000005), rel=1e-12)


# ------------------------------------------------------------------ never a NaN margin
FIELDS = ["mark_price", "mark_iv", "underlying_price", "bid_price"]
MODELS = ["deribit-pm", "deribit-standard", "covariance-var"]


def test_never_a_nan_margin(market):
    """Blank (NaN, which is what a null loads as) each field of each held instrument in turn: under
    every model the margin is either finite or a typed input error naming the instrument."""
    books = {m: Portfolio({k: v for k, v in BOOK.items() if m != "covariance-var" or "_USDC" not in k})
             for m in MODELS}
    outcomes = set()
    for name in BOOK:
        for field in FIELDS:
            rows = market.rows.copy()
            rows.loc[name, field] = math.nan
            snap = dataclasses.replace(market, rows=rows)
            for model, book in books.items():
                if name not in book.positions:
                    continue
                try:
                    res = marginopt.margin(book, snap, model)
                except InputError as exc:
                    assert exc.row == name, (name, field, model)
                    outcomes.add("error")
                    continue
                values = [res.initial_margin_usd, res.maintenance_margin_usd]
                for pool in res.by_underlying.values():
                    values += [pool.initial_margin, pool.maintenance_margin, *pool.components.values(),
                               *pool.scenario_pnl]
                assert all(math.isfinite(v) for v in values), (name, field, model)
                outcomes.add("finite")
    assert outcomes == {"error", "finite"}


def test_raw_book_summary_may_carry_its_time_and_index(tmp_path):
    from marginopt.cli import sample_paths

    snap = json.loads(sample_paths()["market"].read_text())
    raw = {"result": snap["instruments"], "valuation_time": snap["valuation_time"],
           "index_prices": snap["index_prices"]}
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(raw))
    loaded = MarketSnapshot.from_file(path)
    assert loaded.index_prices == snap["index_prices"]
    assert len(loaded.rows) == len(snap["instruments"])
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"result": snap["instruments"]}))
    with pytest.raises(InputError, match="valuation_time"):
        MarketSnapshot.from_file(bare)
