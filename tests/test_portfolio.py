"""Portfolios from CSV, JSON, DataFrames and Deribit's private/get_positions response."""

import json
import math

import pandas as pd
import pytest

from marginopt import (InputError, InvalidValue, MalformedInstrumentName, Portfolio,
                       load_portfolio)

EXPECTED = {"BTC-27SEP24-55000-P": -12.0, "BTC-PERPETUAL": -1.5, "ETH-27DEC24-3000-C": 80.0}


def test_csv_with_extra_columns_and_repeated_rows(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text(
        "# exported by the desk\n"
        "desk,instrument,quantity,trader,avg_price\n"
        "vol,BTC-27SEP24-55000-P,-10,ann,0.012\n"
        "delta, btc-perpetual ,-1.5,bob,58000\n"
        "vol,ETH-27DEC24-3000-C,80,ann,0.05\n"
        "vol,BTC-27SEP24-55000-P,-2,cy,0.011\n")
    book = Portfolio.from_file(path)
    assert book.positions == EXPECTED
    assert book.names == list(EXPECTED)  # order of first appearance
    assert book.source == str(path)
    assert load_portfolio(path).positions == EXPECTED
    assert load_portfolio(str(path)).positions == EXPECTED


def test_csv_with_deribit_columns_and_direction(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text("instrument_name,size_currency,direction\n"
                    "BTC-PERPETUAL,1.5,sell\n"
                    "ETH-27DEC24-3000-C,80,buy\n")
    assert Portfolio.from_file(path).positions == {"BTC-PERPETUAL": -1.5, "ETH-27DEC24-3000-C": 80.0}


@pytest.mark.parametrize("payload", [
    {"positions": [{"instrument": "BTC-27SEP24-55000-P", "quantity": -12},
                   {"instrument": "BTC-PERPETUAL", "quantity": -1.5},
                   {"instrument": "ETH-27DEC24-3000-C", "quantity": 80}]},
    [{"instrument_name": "BTC-27SEP24-55000-P", "quantity": -7},
     {"instrument_name": "BTC-PERPETUAL", "quantity": -1.5},
     {"instrument_name": "ETH-27DEC24-3000-C", "quantity": 80},
     {"instrument_name": "BTC-27SEP24-55000-P", "quantity": -5}],
    {"BTC-27SEP24-55000-P": -12, "BTC-PERPETUAL": -1.5, "ETH-27DEC24-3000-C": 80},
])
def test_json_shapes(tmp_path, payload):
    path = tmp_path / "book.json"
    path.write_text(json.dumps(payload))
    assert Portfolio.from_file(path).positions == EXPECTED
    assert load_portfolio(payload).positions == EXPECTED


def test_dataframe_with_loose_headers():
    frame = pd.DataFrame({" Instrument ": ["BTC-27SEP24-55000-P", "BTC-PERPETUAL", "ETH-27DEC24-3000-C",
                                            "BTC-27SEP24-55000-P"],
                          "QUANTITY": [-11.0, -1.5, 80.0, -1.0], "note": ["a", None, "c", "d"]})
    assert Portfolio.from_frame(frame).positions == EXPECTED
    assert load_portfolio(frame).positions == EXPECTED


def test_dataframe_without_columns_is_rejected():
    with pytest.raises(InputError, match="instrument"):
        Portfolio.from_frame(pd.DataFrame({"name": ["BTC-PERPETUAL"], "quantity": [1]}))
    with pytest.raises(InputError, match="quantity"):
        Portfolio.from_frame(pd.DataFrame({"instrument": ["BTC-PERPETUAL"], "qty": [1]}))


def test_deribit_get_positions_response(tmp_path):
    """Futures report ``size`` in USD and ``size_currency`` in coin; options ``size`` in coin."""
    response = {"jsonrpc": "2.0", "id": 7, "result": [
        {"instrument_name": "BTC-PERPETUAL", "kind": "future", "direction": "sell", "size": -88500.0,
         "size_currency": -1.5, "average_price": 58900.0, "mark_price": 59001.2, "index_price": 59000.0,
         "delta": -1.5, "initial_margin": 0.03, "maintenance_margin": 0.015, "leverage": 50,
         "floating_profit_loss": -0.0001, "total_profit_loss": 0.002, "settlement_price": 58990.0},
        {"instrument_name": "BTC-27SEP24-55000-P", "kind": "option", "direction": "sell", "size": -12.0,
         "average_price": 0.012, "mark_price": 0.0105, "delta": 2.4, "gamma": 0.0001, "vega": -60.0,
         "theta": 40.0, "initial_margin": 1.5, "maintenance_margin": 1.1},
        {"instrument_name": "ETH-27DEC24-3000-C", "kind": "option", "direction": "buy", "size": 80.0,
         "average_price": 0.05, "mark_price": 0.048},
    ], "usIn": 1, "usOut": 2, "usDiff": 1, "testnet": False}
    assert Portfolio.from_dict(response).positions == EXPECTED
    path = tmp_path / "positions.json"
    path.write_text(json.dumps(response))
    assert load_portfolio(path).positions == EXPECTED


def test_direction_sell_with_unsigned_size():
    rows = [{"instrument_name": "BTC-PERPETUAL", "size_currency": 1.5, "direction": "sell"},
            {"instrument_name": "BTC-PERPETUAL", "size_currency": -0.5, "direction": "sell"}]
    assert Portfolio.from_records(rows).positions == {"BTC-PERPETUAL": -2.0}


def test_non_number_quantity_names_row_and_field(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text("instrument,quantity\nBTC-PERPETUAL,1\nETH-PERPETUAL,ten\n")
    with pytest.raises(InvalidValue) as err:
        Portfolio.from_file(path)
    exc = err.value
    assert (exc.row, exc.field, exc.value, exc.source) == (2, "quantity", "ten", str(path))
    assert "row 2" in str(exc) and "'quantity'" in str(exc) and "'ten'" in str(exc)


@pytest.mark.parametrize("bad", ["abc", None, "", [1], "nan", math.inf, float("nan"), "-inf"])
def test_bad_quantities_in_records(bad):
    rows = [{"instrument": "BTC-PERPETUAL", "quantity": 1},
            {"instrument": "ETH-PERPETUAL", "size": bad}]
    with pytest.raises(InvalidValue) as err:
        Portfolio.from_records(rows)
    assert err.value.row == 2
    assert err.value.field in ("quantity", "size")


def test_malformed_instrument_names_row():
    with pytest.raises(MalformedInstrumentName) as err:
        Portfolio.from_records([{"instrument": "BTC-PERPETUAL", "quantity": 1},
                                {"instrument": "BTC-27DEC24-60000", "quantity": 1}], source="book.csv")
    exc = err.value
    assert (exc.row, exc.field, exc.source) == (2, "instrument", "book.csv")
    assert "'BTC-27DEC24-60000'" in str(exc)


def test_missing_name_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no instrument name"):
        Portfolio.from_records([{"quantity": 1}])
    with pytest.raises(InputError, match="not found"):
        Portfolio.from_file(tmp_path / "nope.csv")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Portfolio.from_file(bad)
    with pytest.raises(InputError, match="list of positions"):
        Portfolio.from_dict({"positions": "BTC-PERPETUAL"})


def test_accessors_and_apply():
    book = Portfolio({"BTC-PERPETUAL": -1.5, "XRP_USDC-27DEC24-0d625-C": 100.0})
    assert len(book) == 2
    assert book.quantity("btc-perpetual") == -1.5
    assert book.quantity("xrp_usdc-27dec24-0d625-c") == 100.0
    assert book.quantity("ETH-PERPETUAL") == 0.0
    assert list(book.quantities) == [-1.5, 100.0]
    assert [i.name for i in book.instruments] == book.names
    after = book.apply({"BTC-PERPETUAL": 1.5, "ETH-PERPETUAL": 2.0})
    assert after.positions == {"XRP_USDC-27DEC24-0d625-C": 100.0, "ETH-PERPETUAL": 2.0}
    assert book.apply({"BTC-PERPETUAL": 1.5}, drop_zero=False).positions["BTC-PERPETUAL"] == 0.0
    frame = book.to_frame()
    assert list(frame.columns) == ["instrument", "quantity"]
    assert Portfolio.from_frame(frame).positions == book.positions
    assert load_portfolio(book) is book
