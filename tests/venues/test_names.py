"""Each venue module's names both ways: ``parse(format(x)) == x`` and ``format(parse(n)) == n``
on every instrument of the sample market (Deribit), every Derive golden case's book (Derive), and
the registry and model files naming venues."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

import marginopt as mo
from marginopt.cli import sample_paths
from marginopt.derive import load_case_as_book
from marginopt.errors import InputError, MalformedInstrumentName, ModelError
from marginopt.instruments import Kind, Settlement
from marginopt.rebalance._data import open_interest_coin
from marginopt.venues import naming_venue, venue, venues

from ..derive._cases import CASE_FILES, require_cases

DERIBIT, DERIVE, USER = venue("deribit"), venue("derive"), venue("user")


@pytest.fixture(scope="module")
def sample_market():
    return mo.load_market(sample_paths()["market"])


def _round_trip(v, name: str) -> None:
    inst = mo.parse_instrument(name)
    assert naming_venue(name) is (v if v.owns_names else DERIBIT)
    assert v.parse(name) == inst
    assert v.name_of(inst) == name
    assert v.parse(v.format(inst.underlying, inst.kind, inst.settlement, inst.expiry, inst.strike,
                            inst.is_call)) == inst


def test_deribit_names_round_trip_on_the_sample_market(sample_market):
    names = sample_market.instrument_names
    assert len(names) == 378
    kinds = set()
    for name in names:
        _round_trip(DERIBIT, name)
        kinds.add((mo.parse_instrument(name).kind, mo.parse_instrument(name).settlement))
    assert {(Kind.OPTION, Settlement.INVERSE), (Kind.FUTURE, Settlement.INVERSE),
            (Kind.PERPETUAL, Settlement.INVERSE), (Kind.PERPETUAL, Settlement.LINEAR)} <= kinds


@pytest.mark.parametrize("name", ["XRP_USDC-7MAR25-0d625-C", "SOL_USDC-27DEC24-150-P", "BTC_USDC",
                                  "ETH_USDC-28FEB25", "BTC-27DEC24-60000-C"])
def test_deribit_names_round_trip_in_every_form(name):
    _round_trip(DERIBIT, name)


def test_deribit_dated_contracts_expire_at_its_hour():
    assert DERIBIT.expiry_hour_utc == 8
    assert mo.parse_instrument("BTC-27DEC24").expiry == datetime(2024, 12, 27, 8, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="expire at 08:00 UTC"):
        DERIBIT.format("BTC", Kind.FUTURE, Settlement.INVERSE, datetime(2024, 12, 27, 16, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="needs strike and is_call"):
        DERIBIT.format("BTC", Kind.OPTION, Settlement.INVERSE, datetime(2024, 12, 27, 8, tzinfo=timezone.utc))


def test_deribit_amounts_and_open_interest_units(sample_market):
    perp, opt = mo.parse_instrument("BTC-PERPETUAL"), mo.parse_instrument("ETH-25DEC26-3000-C")
    linear = mo.parse_instrument("BTC_USDC-PERPETUAL")
    assert (DERIBIT.contract_usd(perp), DERIBIT.lot_size(perp)) == (10.0, 0.0)
    assert (DERIBIT.contract_usd(opt), DERIBIT.lot_size(opt)) == (0.0, 1.0)
    assert (DERIBIT.contract_usd(linear), DERIBIT.lot_size(linear)) == (0.0, 0.0001)
    insts = [perp, opt, linear]
    oi = open_interest_coin(insts, sample_market, DERIBIT)
    raw = sample_market.column([i.name for i in insts], "open_interest")
    mark = sample_market.column([i.name for i in insts], "mark_price")
    np.testing.assert_array_equal(oi, [raw[0] / mark[0], raw[1], raw[2]])  # USD -> coin for the inverse perp


def test_derive_names_round_trip_on_every_golden_case():
    require_cases()
    seen = 0
    for path in CASE_FILES:
        book, market, model = load_case_as_book(path)
        assert model.venue == "derive"
        for name in market.instrument_names:
            _round_trip(DERIVE, name)
            inst = mo.parse_instrument(name)
            assert inst.settlement is Settlement.LINEAR
            assert inst.expiry is None or inst.expiry.hour == DERIVE.expiry_hour_utc
            seen += 1
    assert seen > len(CASE_FILES)


def test_derive_contracts_are_usdc_settled():
    with pytest.raises(MalformedInstrumentName, match="Derive's are USDC-settled"):
        DERIVE.parse("ETH-PERPETUAL")
    with pytest.raises(ValueError, match="USDC-settled"):
        DERIVE.format("ETH", Kind.PERPETUAL, Settlement.INVERSE)
    assert DERIVE.format("ETH", Kind.PERPETUAL) == "ETH_USDC-PERPETUAL"


def test_the_user_venue_takes_each_instruments_own_conventions(sample_market):
    assert not USER.owns_names and USER.expiry_hour_utc is None
    with pytest.raises(MalformedInstrumentName):
        USER.parse("BTC-PERPETUAL")
    insts = sample_market.instruments()
    assert all(USER.accepts(i) for i in insts)
    assert [USER.lot_size(i) for i in insts] == [DERIBIT.lot_size(i) for i in insts]
    assert [USER.contract_usd(i) for i in insts] == [DERIBIT.contract_usd(i) for i in insts]
    np.testing.assert_array_equal(open_interest_coin(insts, sample_market, USER),
                                  open_interest_coin(insts, sample_market, DERIBIT))
    assert USER.lot_kinds() == DERIBIT.lot_kinds()


def test_each_shipped_model_names_its_venue():
    expected = {"deribit-pm": "deribit", "deribit-standard": "deribit", "derive-pm2": "derive",
                "scenario-max": "user", "scenario-es": "user", "covariance-var": "user"}
    assert {n: mo.load_model(n).venue for n in mo.model_names()} == expected
    assert set(expected.values()) <= set(venues())


def test_an_unknown_venue_is_an_error_naming_the_registered_ones():
    with pytest.raises(KeyError, match="registered: deribit, derive, user"):
        venue("nope")
    with pytest.raises(ModelError, match="unknown venue 'nope'") as err:
        mo.load_model("deribit-pm", venue="nope")
    assert err.value.field == "venue"
    with pytest.raises(InputError, match="no venue 'nope'") as err:
        mo.load_market(sample_paths()["market"], venue="nope")
    assert err.value.field == "venue"
    with pytest.raises(InputError, match="no venue 'nope'"):
        mo.load_portfolio(sample_paths()["portfolio"], venue="nope")
