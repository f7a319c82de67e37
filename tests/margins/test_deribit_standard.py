"""Deribit standard margin: the worked figures of margin-methods.md section 1a, the option formulas
by hand, and per-position additivity (no credit for hedges)."""

import math

import pytest

import marginopt
from marginopt import MarketSnapshot, Portfolio

from ..conftest import BOOK, INDEX, VALUATION

REL = 1e-9


@pytest.fixture(scope="module")
def doc_market():
    """The doc's figures: BTC index 100,000 USDC, SOL at 200 USDC, the ETH put (underlying 2098)."""
    rows = [
        {"instrument_name": "BTC-PERPETUAL", "mark_price": 100_000.0},
        {"instrument_name": "BTC_USDC-PERPETUAL", "mark_price": 100_000.0},
        {"instrument_name": "SOL_USDC-PERPETUAL", "mark_price": 200.0},
        {"instrument_name": "ETH_USDC-27DEC24-1850-P", "mark_price": 2.4, "mark_iv": 55.0,
         "underlying_price": 2098.0},
    ]
    return MarketSnapshot.from_rows(rows, valuation_time="2024-10-01T00:00:00Z",
                                    index_prices={"BTC": 100_000.0, "SOL": 200.0, "ETH": 2098.0})


def std(positions, market):
    return marginopt.margin(Portfolio(positions), market, "deribit-standard")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_25_btc(doc_market, sign):
    lin = std({"BTC_USDC-PERPETUAL": sign * 25}, doc_market)
    pool = lin.by_underlying["BTC_USDC"]
    assert pool.currency == "USD"
    assert lin.initial_margin_usd == pytest.approx(53_125.0, rel=REL)
    assert lin.maintenance_margin_usd == pytest.approx(28_125.0, rel=REL)
    assert lin.initial_margin_usd / (25 * 100_000) == pytest.approx(0.02125, rel=REL)  # IM rate 2.125%
    assert lin.maintenance_margin_usd / (25 * 100_000) == pytest.approx(0.01125, rel=REL)  # MM 1.125%
    inv = std({"BTC-PERPETUAL": sign * 25}, doc_market)
    coin = inv.by_underlying["BTC"]
    assert coin.currency == "BTC" and coin.usd_rate == 100_000.0
    assert coin.initial_margin == pytest.approx(0.53125, rel=REL)
    assert coin.maintenance_margin == pytest.approx(0.28125, rel=REL)
    assert inv.initial_margin_usd == pytest.approx(53_125.0, rel=REL)


def test_350_btc(doc_market):
    inv = std({"BTC-PERPETUAL": -350}, doc_market)
    assert inv.by_underlying["BTC"].initial_margin == pytest.approx(13.125, rel=REL)  # rate 3.75%
    assert inv.by_underlying["BTC"].initial_margin / 350 == pytest.approx(0.0375, rel=REL)
    lin = std({"BTC_USDC-PERPETUAL": 350}, doc_market)
    assert lin.initial_margin_usd == pytest.approx(1_312_500.0, rel=REL)


def test_sol(doc_market):
    small = std({"SOL_USDC-PERPETUAL": 25}, doc_market)
    assert small.initial_margin_usd == pytest.approx(200.625, rel=REL)
    assert small.maintenance_margin_usd == pytest.approx(100.625, rel=REL)
    big = std({"SOL_USDC-PERPETUAL": -6000}, doc_market)
    assert big.initial_margin_usd == pytest.approx(84_000.0, rel=REL)
    assert big.initial_margin_usd / (6000 * 200) == pytest.approx(0.07, rel=REL)  # IM rate 7%


def test_eth_put_usd_form(doc_market):
    """Underlying 2098, strike 1850, mark 2.4: OTM 248, MM 159.75, IM 212.2; x 50: 10,610 / 7,987.5."""
    one = std({"ETH_USDC-27DEC24-1850-P": -1}, doc_market)
    assert one.initial_margin_usd == pytest.approx(212.2, rel=REL)
    assert one.maintenance_margin_usd == pytest.approx(159.75, rel=REL)
    fifty = std({"ETH_USDC-27DEC24-1850-P": -50}, doc_market)
    assert fifty.initial_margin_usd == pytest.approx(10_610.0, rel=REL)
    assert fifty.maintenance_margin_usd == pytest.approx(7_987.5, rel=REL)
    assert fifty.by_underlying["ETH_USDC"].components == pytest.approx(
        {"futures": 0.0, "short_options": 10_610.0}, rel=REL)
    assert std({"ETH_USDC-27DEC24-1850-P": 50}, doc_market).initial_margin_usd == 0.0  # long: premium paid


def test_eth_futures_rates(market):
    res = std({"ETH-PERPETUAL": 100.0}, market)
    assert res.by_underlying["ETH"].initial_margin == pytest.approx(100 * (0.02 + 100 * 0.000004), rel=REL)
    assert res.by_underlying["ETH"].maintenance_margin == pytest.approx(100 * (0.01 + 100 * 0.000004), rel=REL)


def _row(market, name):
    return market.rows.loc[name]


@pytest.mark.parametrize("name", ["BTC-27SEP24-65000-C", "BTC-27SEP24-55000-C",
                                  "ETH-27DEC24-3000-C", "ETH-27SEP24-2200-P", "BTC-27DEC24-60000-P"])
def test_inverse_short_options_by_hand(market, name):
    """Coin-settled, per coin: short call IM = max(0.15 - OTM/S, 0.1) + mark, MM = 0.075 + mark;
    short put IM = max(max(0.15 - OTM/S, 0.1) + mark, MM), MM = max(0.075, 0.075 mark) + mark."""
    row = _row(market, name)
    s, mark = row["underlying_price"], row["mark_price"]
    inst = marginopt.parse_instrument(name)
    otm = max(inst.strike - s, 0.0) if inst.is_call else max(s - inst.strike, 0.0)
    if inst.is_call:
        im, mm = max(0.15 - otm / s, 0.1) + mark, 0.075 + mark
    else:
        mm = max(0.075, 0.075 * mark) + mark
        im = max(max(0.15 - otm / s, 0.1) + mark, mm)
    q = 7.0
    res = std({name: -q}, market)
    pool = res.by_underlying[inst.underlying]
    assert pool.initial_margin == pytest.approx(q * im, rel=REL)
    assert pool.maintenance_margin == pytest.approx(q * mm, rel=REL)
    assert res.initial_margin_usd == pytest.approx(q * im * INDEX[inst.underlying], rel=REL)
    assert std({name: q}, market).initial_margin_usd == 0.0


def test_deep_itm_inverse_put_initial_is_floored_at_maintenance():
    """A put worth 2.2 coin (ITM, so OTM = 0): max(0.15 - 0, 0.1) + mark = 2.35 is below
    MM = 0.075 x 2.2 + 2.2 = 2.365, so IM is 2.365."""
    snap = MarketSnapshot.from_rows(
        [{"instrument_name": "BTC-27DEC24-160000-P", "mark_price": 2.2, "mark_iv": 60.0,
          "underlying_price": 50_000.0}], valuation_time=VALUATION, index_prices={"BTC": 50_000.0})
    pool = std({"BTC-27DEC24-160000-P": -1.0}, snap).by_underlying["BTC"]
    assert pool.maintenance_margin == pytest.approx(2.365, rel=REL)
    assert pool.initial_margin == pytest.approx(2.365, rel=REL)  # not 0.15 + 2.2


@pytest.mark.parametrize("name", ["BTC_USDC-27SEP24-60000-P", "BTC_USDC-27DEC24-65000-C",
                                  "SOL_USDC-27SEP24-110-P"])
def test_linear_short_options_by_hand(market, name):
    row = _row(market, name)
    s, mark = row["underlying_price"], row["mark_price"]
    inst = marginopt.parse_instrument(name)
    otm = max(inst.strike - s, 0.0) if inst.is_call else max(s - inst.strike, 0.0)
    im, mm = max(0.15 * s - otm, 0.1 * s) + mark, 0.075 * s + mark
    res = std({name: -3.0}, market)
    assert res.initial_margin_usd == pytest.approx(3 * im, rel=REL)
    assert res.maintenance_margin_usd == pytest.approx(3 * mm, rel=REL)


def test_linear_futures_use_the_index_and_spot_is_free(market):
    res = std({"BTC_USDC-PERPETUAL": 2.0, "BTC_USDC": 5.0}, market)
    assert res.initial_margin_usd == pytest.approx(2 * INDEX["BTC"] * (0.02 + 2 * 0.00005), rel=REL)


def test_positions_are_margined_alone_and_summed(market, book):
    """No netting: the book's margin is the sum of each position's, converted to USD."""
    total = std(BOOK, market)
    parts = [std({k: v}, market) for k, v in BOOK.items()]
    assert total.initial_margin_usd == pytest.approx(sum(p.initial_margin_usd for p in parts), rel=1e-12)
    assert total.maintenance_margin_usd == pytest.approx(sum(p.maintenance_margin_usd for p in parts), rel=1e-12)
    hedge = std({"BTC-27SEP24": 1.0, "BTC-27DEC24": -1.0}, market)
    assert hedge.initial_margin_usd == pytest.approx(2 * std({"BTC-27SEP24": 1.0}, market).initial_margin_usd)
    assert set(total.by_underlying) == {"BTC", "BTC_USDC", "ETH", "ETH_USDC"}
    usd = sum(p.initial_margin * p.usd_rate for p in total.by_underlying.values())
    assert total.initial_margin_usd == pytest.approx(usd, rel=1e-15)
    assert math.isfinite(total.initial_margin_usd) and total.maintenance_margin_usd < total.initial_margin_usd


def test_result_reports(market, book):
    res = std(BOOK, market)
    d = res.to_dict()
    assert d["model"] == "deribit-standard"
    assert d["by_underlying"]["BTC"]["initial_margin_usd"] == pytest.approx(
        res.by_underlying["BTC"].initial_margin * INDEX["BTC"])
    frame = res.to_frame()
    assert set(frame["component"]) == {"futures", "short_options"}
    assert frame["initial_margin_usd"].sum() == pytest.approx(res.initial_margin_usd, rel=1e-12)
    assert '"model": "deribit-standard"' in res.to_json()
