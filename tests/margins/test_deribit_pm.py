"""Deribit portfolio margin: the worked figures of margin-methods.md section 1b, the grid's
structure, and the risk matrix and roll shock recomputed independently for option books."""

import math

import numpy as np
import pytest

import marginopt
from marginopt import MarketSnapshot, Portfolio, UnsupportedCurrency, load_model, parse_instrument
from marginopt.pricing import black76_price

from ..conftest import BOOK, INDEX

REL = 1e-9
ETH_INDEX = 1949.34
Q = -0.999487053


@pytest.fixture(scope="module")
def doc_case():
    snap = MarketSnapshot.from_rows([{"instrument_name": "ETH-PERPETUAL", "mark_price": ETH_INDEX}],
                                    valuation_time="2026-02-10T12:00:00Z", index_prices={"ETH": ETH_INDEX})
    book = Portfolio({"ETH-PERPETUAL": Q})
    bound = load_model("deribit-pm").bind(book.instruments, snap)
    return snap, book, bound, marginopt.margin(book, snap, "deribit-pm")


def test_doc_worst_case_is_the_plus_18_move(doc_case):
    _, _, _, res = doc_case
    pool = res.by_underlying["ETH"]
    assert pool.currency == "ETH" and pool.usd_rate == ETH_INDEX
    labels = list(pool.scenario_labels)
    up18 = [i for i, l in enumerate(labels) if l.startswith("+18.00%")]
    assert len(up18) == 3  # vol down, flat, up: a perpetual does not care
    for i in up18:
        assert pool.scenario_pnl[i] == pytest.approx(-0.15246412673, rel=REL)
    assert pool.components["worst_case"] == pytest.approx(0.15246412673, rel=REL)
    assert pool.worst_scenario.startswith("+18.00%")
    assert min(pool.scenario_pnl[:27]) == pytest.approx(-0.15246412673, rel=REL)  # regular grid; extended P&L is unweighted here


def test_doc_roll_shock(doc_case):
    pool = doc_case[3].by_underlying["ETH"]
    assert pool.components["roll_shock"] == pytest.approx(0.004997435265, rel=REL)
    assert pool.components["roll_shock"] == pytest.approx(0.005 * 0.999487053, rel=1e-15)


def test_doc_gain_counts_at_pnl_offset(doc_case):
    """The -18% gain 0.219399597 counts as 0.13163975820 after aggregation (x 0.6)."""
    _, _, bound, res = doc_case
    pool = res.by_underlying["ETH"]
    i = pool.scenario_labels.index("-18.00% vol flat")
    assert pool.scenario_pnl[i] == pytest.approx(0.219399597, rel=REL)
    rm = bound.pools[0].initial[0]
    assert rm.pnl_offset == 0.6
    losses = rm._losses(np.array([Q]), rm.values())
    assert -losses[i] == pytest.approx(0.13163975820, rel=REL)  # a gain is a negative loss


def test_doc_risk_matrix_margin_and_mm(doc_case):
    res = doc_case[3]
    pool = res.by_underlying["ETH"]
    # IM = risk_matrix_margin = worst_case + roll_shock (no delta shock, no open orders), exactly
    assert pool.initial_margin == pool.components["worst_case"] + pool.components["roll_shock"]
    # The doc prints risk_matrix_margin 0.157461562265 (MM 0.8 x that = 0.125969249812), which is
    # 2.7e-10 above the sum of its own printed components, 0.15246412673 + 0.004997435265 =
    # 0.157461561995 (the doc's total was read from a Deribit response whose worst case carried
    # more digits than were printed). Our total equals that sum, so it matches the doc's total to
    # 1.7e-9 relative: test it to 2e-9, and the sum of the printed components to 1e-9.
    assert pool.initial_margin == pytest.approx(0.157461562265, rel=2e-9)
    assert pool.initial_margin == pytest.approx(0.15246412673 + 0.004997435265, rel=REL)
    assert pool.maintenance_margin == pytest.approx(0.125969249812, rel=2e-9)
    assert pool.maintenance_margin == pytest.approx(0.8 * pool.initial_margin, rel=1e-15)
    assert res.initial_margin_usd == pytest.approx(pool.initial_margin * ETH_INDEX, rel=1e-15)


def test_grid_structure(doc_case):
    pool = doc_case[3].by_underlying["ETH"]
    labels = pool.scenario_labels
    assert len(labels) == 27 + 8
    moves = sorted({float(l.split("%")[0]) for l in labels[:27]})
    np.testing.assert_allclose(moves, np.linspace(-18, 18, 9), atol=1e-9)
    assert [l.split("%")[0] for l in labels[27:]] == ["-66", "-33", "+50", "+100", "+200", "+300", "+400", "+500"]
    assert all(l.endswith("vol up (extended)") for l in labels[27:])


def test_book_pools_and_mm(market, book):
    res = marginopt.margin(book, market, "deribit-pm")
    assert set(res.by_underlying) == {"BTC", "BTC_USDC", "ETH", "ETH_USDC"}
    for name, pool in res.by_underlying.items():
        assert set(pool.components) == {"worst_case", "roll_shock"}
        assert pool.initial_margin == pytest.approx(sum(pool.components.values()), rel=1e-15)
        assert pool.maintenance_margin == pytest.approx(0.8 * pool.initial_margin, rel=1e-14)
        assert pool.currency == ("USD" if name.endswith("_USDC") else name)
    assert res.initial_margin_usd == pytest.approx(
        sum(p.initial_margin * p.usd_rate for p in res.by_underlying.values()), rel=1e-15)
    assert res.maintenance_margin_usd == pytest.approx(0.8 * res.initial_margin_usd, rel=1e-14)
    assert math.isfinite(res.initial_margin_usd) and res.initial_margin_usd > 0


PARAMS = {  # margin-methods.md 1b
    "BTC": dict(range=0.16, up=0.5, down=0.25, damp={"inverse": 100_000, "linear": 25_000},
                offset={"inverse": 0.0, "linear": 0.0}, min_move=0.01, move_risk=0.075),
    "ETH": dict(range=0.18, up=0.4, down=0.25, damp={"inverse": 200_000, "linear": 25_000},
                offset={"inverse": 0.6, "linear": 0.4}, min_move=0.005, move_risk=0.05),
}
EXTENDED = [-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]


def hand_worst_case(market, positions, ccy, settlement):
    """The risk matrix written out from the doc, one scenario and one position at a time."""
    p = PARAMS[ccy]
    scen = [(m, v, 1.0, 0.0) for m in np.linspace(-p["range"], p["range"], 9) for v in (-1, 0, 1)]
    scen += [(m, 1, p["range"] / abs(m), (abs(m) / p["range"] - 1) * p["damp"][settlement]) for m in EXTENDED]
    worst = 0.0
    for m, vs, w, damp in scen:
        pnl = 0.0
        for name, q in positions.items():
            inst = parse_instrument(name)
            row = market.rows.loc[name]
            inverse = settlement == "inverse"
            if not inst.is_option:
                level = INDEX[ccy] if inst.expiry is None else row["mark_price"]
                pnl += q * ((1 - 1 / (1 + m)) if inverse else level * m)
                continue
            f0, k, sig = row["underlying_price"], inst.strike, row["mark_iv"] / 100
            t = market.year_fraction(inst.expiry)
            dte = max(t * 365, 1.0)
            scale = (30 / dte) ** (0.3 if dte < 30 else 0.13)
            vol = {-1: max(sig * (1 - p["down"] * scale), 0.0), 0: sig,
                   1: max(sig * (1 + p["up"] * scale), 0.5)}[vs]
            f1 = f0 * (1 + m)
            v0 = float(black76_price(f0, k, t, sig, inst.is_call))
            v1 = float(black76_price(f1, k, t, vol, inst.is_call))
            pnl += q * ((v1 / f1 - v0 / f0) if inverse else (v1 - v0))
        agg = min(pnl, 0.0) + p["offset"][settlement] * max(pnl, 0.0)
        worst = max(worst, w * -agg - damp)
    return worst


@pytest.mark.parametrize("pool", ["BTC", "BTC_USDC", "ETH", "ETH_USDC"])
def test_worst_case_recomputed_by_hand(market, book, pool):
    res = marginopt.margin(book, market, "deribit-pm")
    ccy = pool.split("_")[0]
    settlement = "linear" if pool.endswith("_USDC") else "inverse"
    positions = {k: v for k, v in BOOK.items() if parse_instrument(k).pool == pool}
    want = hand_worst_case(market, positions, ccy, settlement)
    assert res.by_underlying[pool].components["worst_case"] == pytest.approx(want, rel=REL)


def test_short_wing_book_binds_an_extended_scenario(market):
    """Short far calls lose most at +50%..+500%; with the USD dampener of the linear pool the
    extended table can bind, and the result still matches the hand computation."""
    positions = {"BTC_USDC-27DEC24-65000-C": -2000.0}
    res = marginopt.margin(Portfolio(positions), market, "deribit-pm").by_underlying["BTC_USDC"]
    assert res.components["worst_case"] == pytest.approx(
        hand_worst_case(market, positions, "BTC", "linear"), rel=REL)
    assert res.worst_scenario.endswith("(extended)")


def test_roll_shock_by_expiry_not_netted(market):
    """Per expiry max(min_move, exp(move_risk T) - 1) x |delta_expiry|; perpetual: min_move only."""
    positions = {"BTC-27SEP24": 3.0, "BTC-27DEC24": -2.0, "BTC-PERPETUAL": -1.0}
    res = marginopt.margin(Portfolio(positions), market, "deribit-pm").by_underlying["BTC"]
    t_sep = market.year_fraction(parse_instrument("BTC-27SEP24").expiry)
    t_dec = market.year_fraction(parse_instrument("BTC-27DEC24").expiry)
    shock_sep = max(0.01, math.exp(0.075 * t_sep) - 1)
    shock_dec = max(0.01, math.exp(0.075 * t_dec) - 1)
    assert shock_sep == 0.01 and shock_dec > 0.01  # both branches of the max
    assert res.components["roll_shock"] == pytest.approx(3 * shock_sep + 2 * shock_dec + 0.01 * 1, rel=REL)


def test_roll_shock_of_options_uses_coin_delta(market):
    from marginopt.scenarios import delta_in_margin_currency
    names = ["ETH-27DEC24-3000-C", "ETH-27DEC24-2200-P", "ETH-27DEC24"]
    qty = np.array([10.0, -25.0, 3.0])
    res = marginopt.margin(Portfolio(dict(zip(names, qty))), market, "deribit-pm").by_underlying["ETH"]
    inputs = market.pricing_inputs([parse_instrument(n) for n in names])
    t = inputs.t[0]
    expiry_delta = delta_in_margin_currency(inputs) @ qty
    assert res.components["roll_shock"] == pytest.approx(
        max(0.005, math.exp(0.05 * t) - 1) * abs(expiry_delta), rel=REL)


def test_linear_eth_pool_counts_gains_at_0_4(market):
    res = marginopt.margin(Portfolio({"ETH_USDC-PERPETUAL": -1.0}), market, "deribit-pm")
    pool = res.by_underlying["ETH_USDC"]
    assert pool.components["worst_case"] == pytest.approx(0.18 * INDEX["ETH"], rel=REL)
    assert pool.components["roll_shock"] == pytest.approx(0.005 * INDEX["ETH"], rel=REL)


def test_unsupported_currency_names_the_instrument(market):
    with pytest.raises(UnsupportedCurrency) as err:
        marginopt.margin(Portfolio({"SOL_USDC-PERPETUAL": 1.0}), market, "deribit-pm")
    assert err.value.row == "SOL_USDC-PERPETUAL"
    assert "covers BTC, ETH" in str(err.value)


def test_empty_book_has_zero_margin(market):
    res = marginopt.margin(Portfolio({}), market, "deribit-pm")
    assert res.initial_margin_usd == 0.0 and res.maintenance_margin_usd == 0.0
