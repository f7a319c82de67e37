"""What a warm optimizer keeps across snapshots (the universe's structure, a model's pool layout,
contract terms, rows of a name list) gives exactly the numbers a fresh one computes, and is not
reused where it no longer holds (another listing, another book, another venue registry)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

import marginopt as mo
from marginopt.errors import UnknownInstrument
from marginopt.market import MarketSnapshot
from marginopt.synthetic import make_book, make_market
from marginopt.venues import registry_generation, venue


def moved(market: MarketSnapshot, f: float, dvol: float, drop: list[str] = (),
          shift: timedelta = timedelta(0)) -> MarketSnapshot:
    rows = market.rows.drop(index=list(drop)).copy()
    rows["underlying_price"] *= f
    rows["mark_iv"] += dvol
    return MarketSnapshot(market.valuation_time + shift,
                          {u: p * f for u, p in market.index_prices.items()}, rows)


@pytest.fixture(scope="module")
def case():
    market = make_market(strikes_per_expiry=9)
    book = make_book(market, n_structures=8)
    spec = {"universe": "listed", "limits": {"BTC": {"delta": [-5, 5]}},
            "trade_bounds": {"max_open_interest_fraction": 0.25},
            "do_not_trade": [book.names[0]], "close_only": [book.names[1]]}
    return book, market, spec


def _same_data(a, b) -> None:
    assert a.universe.names == b.universe.names
    assert a.universe.excluded == b.universe.excluded and a.universe.frozen == b.universe.frozen
    for f in ("x0", "buy_max", "sell_max"):
        np.testing.assert_array_equal(getattr(a.universe, f), getattr(b.universe, f), err_msg=f)
    for f in ("half_spread_usd", "notional_usd", "lot", "tiebreak_usd"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.limits.matrix, b.limits.matrix)
    np.testing.assert_array_equal(a.limits.lower, b.limits.lower)
    for pa, pb in zip(a.bound.pools, b.bound.pools, strict=True):
        np.testing.assert_array_equal(pa.columns, pb.columns)
        for ca, cb in zip(pa.initial, pb.initial, strict=True):
            for va, vb in zip(ca.values(pa.usd_rate), cb.values(pb.usd_rate), strict=True):
                np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))
    assert a.margin_before_usd == b.margin_before_usd


def test_a_warm_rebalancer_prepares_the_numbers_a_fresh_one_does(case):
    book, market, spec = case
    warm = mo.Rebalancer("deribit-pm", spec)
    warm.problem_data(book, market)
    for k, (f, dv) in enumerate([(1.003, 0.1), (0.996, -0.2), (1.01, 0.3)]):
        snap = moved(market, f, dv, shift=timedelta(minutes=k))
        _same_data(warm.problem_data(book, snap), mo.Rebalancer("deribit-pm", spec).problem_data(book, snap))


def test_a_snapshot_listing_other_instruments_gets_its_own_universe(case):
    book, market, spec = case
    reb = mo.Rebalancer("deribit-pm", spec)
    full = reb.problem_data(book, market)
    gone = [n for n in full.universe.names[len(book):]][:3]
    fewer = reb.problem_data(book, moved(market, 1.0, 0.0, drop=gone))
    assert not set(gone) & set(fewer.universe.names)
    assert len(fewer.universe.names) == len(full.universe.names) - 3
    # and back: the first listing's structure is found again, with its instruments
    again = reb.problem_data(book, market)
    assert again.universe.names == full.universe.names


def test_another_book_is_not_given_the_last_books_universe(case):
    book, market, spec = case
    reb = mo.Rebalancer("deribit-pm", {**spec, "do_not_trade": [], "close_only": []})
    reb.problem_data(book, market)
    other = mo.Portfolio({book.names[2]: 3.0})
    data = reb.problem_data(other, market)
    assert data.universe.names[0] == book.names[2]
    np.testing.assert_array_equal(data.universe.x0[:1], [3.0])
    assert not data.universe.x0[1:].any()


def test_rows_of_a_name_list_follow_the_listing_order(case):
    _, market, _ = case
    names = market.instrument_names[:5]
    reversed_rows = market.rows.iloc[::-1]
    flipped = MarketSnapshot(market.valuation_time, market.index_prices, reversed_rows)
    a = market.column(names, "mark_price")
    b = flipped.column(names, "mark_price")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UnknownInstrument) as err:
        flipped.column([*names, "BTC-1JAN30-1000-C"], "mark_price")
    assert err.value.row == "BTC-1JAN30-1000-C"


def test_time_to_expiry_is_counted_in_whole_microseconds_as_year_fraction(case):
    _, market, _ = case
    snap = MarketSnapshot(market.valuation_time + timedelta(microseconds=123457),
                          market.index_prices, market.rows)
    insts = snap.instruments()
    t = snap.pricing_inputs(insts).t
    expected = np.array([snap.year_fraction(i.expiry) for i in insts])
    np.testing.assert_array_equal(t, expected)  # bit for bit


def test_registering_a_venue_invalidates_what_was_kept_by_name(case):
    book, market, spec = case
    from marginopt.venues import Venue, register_venue, unregister_venue
    before = registry_generation()
    toy = Venue(name="toy-cache", expiry_hour_utc=8)
    register_venue(toy)
    try:
        assert registry_generation() != before
        # nothing kept before names an instrument differently now: the numbers still agree
        reb = mo.Rebalancer("deribit-pm", spec)
        _same_data(reb.problem_data(book, market), mo.Rebalancer("deribit-pm", spec).problem_data(book, market))
    finally:
        unregister_venue("toy-cache")
    assert registry_generation() != before
