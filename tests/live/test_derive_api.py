"""Derive's API replies into marginopt (``marginopt.derive._api``): names, rows, typed errors, and
every golden case read back from its Derive-shaped replies to the exchange's own IM and MM."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

import pytest

import marginopt as mo
from marginopt.derive import (derive_feeds, derive_market, derive_model, derive_portfolio,
                              derive_subaccount, marginopt_name, native_name)
from marginopt.derive._api import book_for_margin
from marginopt.errors import InputError, InvalidValue, MalformedInstrumentName, MissingMarketData

from ..derive._cases import CASE_PARAMS, close
from ._fake_derive import FakeDerive, NotExpressible

T0 = datetime(2025, 2, 19, 3, 12, 28, tzinfo=timezone.utc)
EXP = int(datetime(2025, 2, 28, 8, tzinfo=timezone.utc).timestamp())


@lru_cache(maxsize=None)
def fake_of(path) -> FakeDerive:
    return FakeDerive(path)


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("native, ours", [
    ("ETH-20250228-3000-C", "ETH_USDC-28FEB25-3000-C"),
    ("BTC-20250328-95000-P", "BTC_USDC-28MAR25-95000-P"),
    ("ETH-20250228-2512.5-P", "ETH_USDC-28FEB25-2512d5-P"),
    ("ETH-PERP", "ETH_USDC-PERPETUAL"),
])
def test_names_translate_both_ways(native, ours):
    assert marginopt_name(native) == ours
    assert native_name(ours) == native
    inst = mo.parse_instrument(ours)
    if inst.expiry is not None:
        assert inst.expiry.hour == 8  # Derive's options expire at 08:00 UTC


@pytest.mark.parametrize("bad", ["ETH-20250231-3000-C", "ETH-PERPETUAL", "eth-perp",
                                 "ETH-20250228-3000-X", "ETH-USDC", ""])
def test_a_name_derive_does_not_list_is_refused_naming_the_row(bad):
    with pytest.raises(MalformedInstrumentName) as err:
        marginopt_name(bad, source="derive public/get_tickers", row=7)
    assert err.value.field == "instrument_name" and err.value.row == 7
    assert "derive public/get_tickers" in str(err.value)


# --------------------------------------------------------------------------- market rows
def _option_ticker(**over):
    t = {"instrument_name": "ETH-20250228-3000-C", "mark_price": "101.5", "index_price": "2700",
         "best_bid_price": "100", "best_ask_price": "103", "stats": {"open_interest": "12.5"},
         "option_pricing": {"iv": "0.65", "forward_price": "2712.25", "mark_price": "101.5"}}
    t.update(over)
    return t


def test_tickers_become_market_rows_with_the_native_name_kept():
    perp = {"M": "2701.5", "I": "2700", "b": "2701", "a": "0", "stats": {"oi": "300"},
            "option_pricing": None}
    market = derive_market({"tickers": {"ETH-20250228-3000-C": _option_ticker(), "ETH-PERP": perp}},
                           valuation_time="2025-02-19T03:12:28.750Z")
    assert market.valuation_time == T0  # whole seconds: PM2 counts expiries in seconds
    assert dict(market.index_prices) == {"ETH": 2700.0}
    rows = market.rows
    c = rows.loc["ETH_USDC-28FEB25-3000-C"]
    assert c["native_name"] == "ETH-20250228-3000-C"
    assert (c["mark_price"], c["mark_iv"], c["underlying_price"]) == (101.5, 65.0, 2712.25)
    assert (c["bid_price"], c["ask_price"], c["open_interest"]) == (100.0, 103.0, 12.5)
    p = rows.loc["ETH_USDC-PERPETUAL"]
    assert p["native_name"] == "ETH-PERP" and p["mark_price"] == 2701.5
    assert p["bid_price"] == 2701.0 and p["ask_price"] != p["ask_price"]  # an empty side: NaN
    assert p["open_interest"] == 300.0


@pytest.mark.parametrize("over, field", [
    ({"option_pricing": None}, "option_pricing"),
    ({"option_pricing": {"iv": "0", "forward_price": "2712"}}, "iv"),
    ({"option_pricing": {"iv": "0.6"}}, "forward_price"),
    ({"mark_price": "abc"}, "mark_price"),
    ({"mark_price": None}, "mark_price"),
])
def test_a_malformed_ticker_names_the_row_and_field(over, field):
    with pytest.raises(InputError) as err:
        derive_market([_option_ticker(**over)], valuation_time=T0)
    assert err.value.row == "ETH-20250228-3000-C" and err.value.field == field


def test_a_ticker_without_a_name_names_its_position():
    with pytest.raises(InputError) as err:
        derive_market([_option_ticker(), {"mark_price": "1"}], valuation_time=T0)
    assert err.value.row == 2 and err.value.field == "instrument_name"


# --------------------------------------------------------------------------- positions, subaccount
def test_positions_become_a_portfolio():
    rows = [{"instrument_name": "ETH-20250228-3000-C", "amount": "-2.5"},
            {"instrument_name": "ETH-PERP", "amount": "0"},
            {"instrument_name": "ETH-20250228-2500-P", "amount": 1}]
    book = derive_portfolio({"positions": rows})
    assert book.positions == {"ETH_USDC-28FEB25-3000-C": -2.5, "ETH_USDC-28FEB25-2500-P": 1.0}
    with pytest.raises(InvalidValue) as err:
        derive_portfolio([{"instrument_name": "ETH-PERP", "amount": "NaN"}])
    assert err.value.row == "ETH-PERP" and err.value.field == "amount"
    with pytest.raises(InputError, match="listed twice"):
        derive_portfolio(rows[:1] * 2)


def test_the_subaccount_reply_gives_cash_collaterals_and_the_exchange_figures():
    sub = {"subaccount_id": 7, "margin_type": "PM2", "currency": "ETH",
           "subaccount_value": "1000", "initial_margin": "400", "maintenance_margin": "600",
           "open_orders_margin": "-5",
           "collaterals": [{"asset_name": "USDC", "amount": "-50"},
                           {"asset_name": "WBTC", "amount": "0.1", "mark_price": "95000"}],
           "positions": [{"instrument_name": "ETH-PERP", "amount": "1", "unrealized_pnl": "-12.5",
                          "pending_funding": "0.25"}]}
    a = derive_subaccount(sub)
    assert (a.cash, a.collaterals) == (-50.0, (("WBTC", 0.1, 95000.0),))
    assert (a.perp_unrealised_pnl, a.perp_pending_funding) == (-12.5, 0.25)
    assert (a.initial_requirement, a.maintenance_requirement) == (600.0, 400.0)
    del sub["initial_margin"]
    with pytest.raises(InputError) as err:
        derive_subaccount(sub)
    assert err.value.field == "initial_margin" and err.value.row == "subaccount 7"


# --------------------------------------------------------------------------- feeds and the model
def _feeds():
    svi = {"SVI_a": "0.01", "SVI_b": "0.05", "SVI_rho": "-0.3", "SVI_m": "0", "SVI_sigma": "0.1",
           "SVI_fwd": "2712", "SVI_refTau": "0.025"}
    old = str(int(T0.timestamp()) - 3600)
    return {"spot_data": {"ETH": {"price": "2700", "confidence": "1"},
                          "USDC": {"price": "0.9999", "confidence": "1"}},
            "perp_data": {"ETH": {"P": {"spot_diff_value": "1.5", "confidence": "0.9"}}},
            "vol_data": {"ETH": {str(EXP): {"vol_data": svi, "confidence": "0.95"},
                                 old: {"vol_data": svi, "confidence": "1"}}},
            "fwd_data": {"ETH": {str(EXP): {"fwd_diff": "12", "confidence": "1"}}},
            "rate_data": {"ETH": {str(EXP): {"rate": "0.1", "confidence": "1"}}}}


def test_feeds_become_the_pm2_market_block():
    m = derive_feeds(_feeds(), "eth", valuation_time=T0)
    assert (m["SpotPrice"], m["PerpPrice"], m["PerpConfidence"], m["StablePrice"]) == \
        (2700.0, 2701.5, 0.9, 0.9999)
    (f,) = m["OptionFeeds"]  # the expired expiry is dropped
    assert f["FeedExpiry"] == EXP - int(T0.timestamp()) and f["Forward"] == 2712.0
    assert f["SVIparam"] == [0.01, 0.05, -0.3, 0.0, 0.1, 2712.0, 0.025]
    assert (f["Rate"], f["OptionVolConfidences"]) == (0.1, 0.95)


@pytest.mark.parametrize("drop, field", [(("spot_data", "USDC"), "spot_data"),
                                         (("fwd_data", "ETH"), "fwd_data"),
                                         (("rate_data", "ETH"), "rate_data")])
def test_missing_feeds_are_named(drop, field):
    feeds = _feeds()
    del feeds[drop[0]][drop[1]]
    with pytest.raises(MissingMarketData) as err:
        derive_feeds(feeds, "ETH", valuation_time=T0)
    assert err.value.field == field


def test_a_collateral_without_its_haircuts_is_refused_naming_it():
    sub = {"subaccount_id": 7, "margin_type": "PM2", "currency": "ETH", "subaccount_value": "1",
           "initial_margin": "1", "maintenance_margin": "1",
           "collaterals": [{"asset_name": "WBTC", "amount": "0.1", "mark_price": "95000"}]}
    with pytest.raises(InputError) as err:
        derive_model(sub, _feeds(), valuation_time=T0)
    assert err.value.row == "WBTC" and err.value.field == "IMHaircut"
    with pytest.raises(InputError) as err:
        derive_model(sub, _feeds(), valuation_time=T0, collateral_params={"WBTC": {"IMHaircut": 0.1}})
    assert err.value.field == "MMHaircut"
    with pytest.raises(MissingMarketData) as err:  # no WBTC spot feed: its confidence is unknown
        derive_model(sub, _feeds(), valuation_time=T0,
                     collateral_params={"WBTC": {"IMHaircut": 0.1, "MMHaircut": 0.2}})
    assert err.value.row == "WBTC"


# --------------------------------------------------------------------------- every golden case
@pytest.mark.parametrize("path", CASE_PARAMS)
def test_a_case_read_from_derive_replies_margins_as_the_exchange(path):
    """The case served in Derive's shapes, read back by the loaders: marginopt's PM2 is the
    exchange's requirement (``PortfolioMTM - IM``, ``- MM``) to the golden tolerance."""
    try:
        fake = fake_of(path)
    except NotExpressible as why:
        pytest.skip(f"not expressible in Derive's replies: {why}")
    r = fake.replies()
    market = derive_market(r["tickers"], valuation_time=fake.now)
    book = book_for_margin(derive_portfolio(r["positions"]), fake.currency)
    model = derive_model(r["subaccount"], r["feeds"], valuation_time=market.valuation_time,
                         collateral_params=fake.collateral_params(), parameters=fake.parameters())
    result = mo.margin(book, market, model)
    acct = derive_subaccount(r["subaccount"])
    assert close(result.initial_margin_usd, acct.initial_requirement), \
        (result.initial_margin_usd, acct.initial_requirement)
    assert close(result.maintenance_margin_usd, acct.maintenance_requirement)
    raw = fake.case.expected.raw
    assert close(acct.initial_requirement, float(raw["PortfolioMTM"]) - float(raw["IM"]))
