"""Deribit instrument names: every form parses, expiries are 08:00 UTC, bad names are rejected."""

from datetime import datetime, timezone

import pytest

from marginopt import InputError, Kind, MalformedInstrumentName, Settlement, parse_instrument


def utc8(y, m, d):
    return datetime(y, m, d, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "name, underlying, kind, settlement, expiry, strike, is_call, pool, label",
    [
        ("BTC-27DEC24-60000-C", "BTC", Kind.OPTION, Settlement.INVERSE, utc8(2024, 12, 27), 60000.0, True, "BTC", "27DEC24"),
        ("BTC-27DEC24", "BTC", Kind.FUTURE, Settlement.INVERSE, utc8(2024, 12, 27), None, None, "BTC", "27DEC24"),
        ("BTC-PERPETUAL", "BTC", Kind.PERPETUAL, Settlement.INVERSE, None, None, None, "BTC", "PERPETUAL"),
        ("BTC_USDC-PERPETUAL", "BTC", Kind.PERPETUAL, Settlement.LINEAR, None, None, None, "BTC_USDC", "PERPETUAL"),
        ("SOL_USDC-27DEC24-150-P", "SOL", Kind.OPTION, Settlement.LINEAR, utc8(2024, 12, 27), 150.0, False, "SOL_USDC", "27DEC24"),
        ("XRP_USDC-27DEC24-0d625-C", "XRP", Kind.OPTION, Settlement.LINEAR, utc8(2024, 12, 27), 0.625, True, "XRP_USDC", "27DEC24"),
        ("BTC_USDC", "BTC", Kind.SPOT, Settlement.LINEAR, None, None, None, "BTC_USDC", "SPOT"),
        ("ETH-5JAN25-3000-P", "ETH", Kind.OPTION, Settlement.INVERSE, utc8(2025, 1, 5), 3000.0, False, "ETH", "5JAN25"),
        ("ETH_USDC-28MAR25", "ETH", Kind.FUTURE, Settlement.LINEAR, utc8(2025, 3, 28), None, None, "ETH_USDC", "28MAR25"),
    ],
)
def test_every_name_form(name, underlying, kind, settlement, expiry, strike, is_call, pool, label):
    inst = parse_instrument(name)
    assert inst.name == name
    assert inst.underlying == underlying
    assert inst.kind is kind
    assert inst.settlement is settlement
    assert inst.expiry == expiry
    assert inst.strike == strike
    assert inst.is_call is is_call
    assert inst.is_option is (kind is Kind.OPTION)
    assert inst.pool == pool
    assert inst.expiry_label == label


@pytest.mark.parametrize("name", ["BTC-27DEC24-60000-C", "ETH-5JAN25", "SOL_USDC-28MAR25-150-P"])
def test_expiry_is_0800_utc(name):
    exp = parse_instrument(name).expiry
    assert (exp.hour, exp.minute, exp.second) == (8, 0, 0)
    assert exp.utcoffset().total_seconds() == 0


def test_label_round_trips_through_the_parser():
    for name in ("BTC-27DEC24-60000-C", "ETH-5JAN25-3000-P", "BTC-28MAR25"):
        inst = parse_instrument(name)
        assert inst.expiry_label in name
        assert parse_instrument(f"{inst.underlying}-{inst.expiry_label}").expiry == inst.expiry


def test_case_and_whitespace_are_normalised():
    inst = parse_instrument("  btc-27dec24-60000-c ")
    assert inst.name == "BTC-27DEC24-60000-C"
    assert inst == parse_instrument("BTC-27DEC24-60000-C")


def test_decimal_strike_with_point():
    assert parse_instrument("XRP_USDC-27DEC24-0.625-C").strike == 0.625


@pytest.mark.parametrize("name", [
    "", "BTC", "BTC-", "BTC-PERP", "BTC-PERPETUALS", "-PERPETUAL", "BTC--PERPETUAL",
    "BTC-27DEC24-60000", "BTC-27DEC24-60000-X", "BTC-27DEC24-C", "BTC-27DEC2024",
    "BTC-DEC24", "BTC-27DEC24-60000-C-X", "BTC_EUR-PERPETUAL", "BTC_USDC-",
    "BTC-32DEC24", "BTC-30FEB25", "BTC-27XYZ24", "BTC-0DEC24",
    "BTC-27DEC24-0-C", "BTC-27DEC24-0d0-P", "BTC-27DEC24--5-C", "BTC 27DEC24",
])
def test_malformed_names_raise_quoting_the_name(name):
    with pytest.raises(MalformedInstrumentName) as err:
        parse_instrument(name)
    exc = err.value
    assert f"'{name}'" in str(exc)
    assert exc.value == name
    assert exc.field == "instrument_name"
    assert isinstance(exc, InputError) and isinstance(exc, ValueError)


@pytest.mark.parametrize("name", [None, 60000, 1.5])
def test_non_string_names_raise(name):
    with pytest.raises(MalformedInstrumentName) as err:
        parse_instrument(name)
    assert repr(name) in str(err.value)


@pytest.mark.parametrize("name", ["BTC-27DEC24-60000-C", "BTC-27DEC24", "BTC-PERPETUAL", "BTC_USDC-PERPETUAL",
                                  "SOL_USDC-27DEC24-150-P", "XRP_USDC-7MAR25-0d625-C", "ETH_USDC-28FEB25-3000-C"])
def test_names_are_built_as_they_are_parsed(name):
    from marginopt.instruments import instrument_name
    i = parse_instrument(name)
    assert instrument_name(i.underlying, i.expiry, i.strike, i.is_call, settlement=i.settlement) == name
