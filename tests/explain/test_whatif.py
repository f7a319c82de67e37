"""What-if against direct margin calls on the post-trade book, and model parameter paths."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from marginopt import InvalidValue, ModelError, Portfolio, UnknownInstrument, load_model, margin
from marginopt.explain import set_parameters, whatif
from marginopt.explain._whatif import parse_assignments
from marginopt.rebalance._data import greeks_summary

from .conftest import book_for


@pytest.mark.parametrize("model", ["deribit-pm", "deribit-standard", "covariance-var", "scenario-es"])
@pytest.mark.parametrize("seed", [0, 1])
def test_whatif_equals_direct_margin_of_the_post_trade_book(models, universe, market, model, seed):
    rng = np.random.default_rng(seed)
    book = book_for(model, universe, [], seed, size=8)
    rules = models[model]
    held = list(book.names)
    trades = {held[0]: -book.quantity(held[0])}              # close one position
    trades[held[1]] = float(np.round(rng.normal(0, 2), 3))  # resize another
    new = str(rng.choice([n for n in universe if n not in book.positions]))
    trades[new] = 1.25                                      # open a new one
    w = whatif(book, market, rules, trades=trades)
    post = book.apply(trades)
    direct = margin(post, market, rules)
    assert w.after.initial_margin_usd == pytest.approx(direct.initial_margin_usd, rel=1e-12)
    assert w.after.maintenance_margin_usd == pytest.approx(direct.maintenance_margin_usd, rel=1e-12)
    assert w.before.initial_margin_usd == pytest.approx(margin(book, market, rules).initial_margin_usd,
                                                        rel=1e-12)
    assert held[0] not in w.positions_after and w.positions_after[new] == 1.25
    frame = w.to_frame()
    assert frame["change_usd"].sum() == pytest.approx(w.initial_margin_change_usd, abs=1e-6)
    expected = greeks_summary(market.pricing_inputs(post.instruments), post.quantities)
    for u, g in expected.items():
        for k, v in g.items():
            assert w.greeks_after[u][k] == pytest.approx(v, rel=1e-12, abs=1e-12)
    assert w.to_dict()["trades"] == {k: float(v) for k, v in trades.items()}


def test_parameter_change_equals_an_edited_model(book, market):
    w = whatif(book, market, "deribit-pm", changes={"ETH.worst_case.price_range": "0.20",
                                                    "BTC.roll_shock.min_annualised_move": 0.02})
    data = load_model("deribit-pm").model_dump(exclude={"path"})
    edited = copy.deepcopy(data)
    edited["currencies"]["ETH"]["initial"][0]["price_range"] = 0.20
    edited["currencies"]["BTC"]["initial"][1]["min_annualised_move"] = 0.02
    direct = margin(book, market, load_model(edited))
    assert w.after.initial_margin_usd == pytest.approx(direct.initial_margin_usd, rel=1e-12)
    assert w.after.initial_margin_usd != pytest.approx(w.before.initial_margin_usd, rel=1e-6)
    # the book is unchanged: only the ETH worst case and the BTC roll shock move
    f = w.to_frame().set_index(["pool", "component"])
    assert f.loc[("ETH", "roll_shock"), "change_usd"] == 0.0
    assert f.loc[("BTC", "worst_case"), "change_usd"] == 0.0
    assert w.greeks_before == w.greeks_after


def test_parameter_paths(book, market):
    m = set_parameters("deribit-pm", {"ETH.worst_case.vol_shock.volatility_range_up": "0.6",
                                      "ETH.worst_case.extended_dampener.inverse": 150000,
                                      "BTC.maintenance_factor": "0.75"})
    eth = m.currencies["ETH"].initial[0]
    assert eth.vol_shock.volatility_range_up == 0.6 and eth.extended_dampener["inverse"] == 150000
    assert m.currencies["BTC"].maintenance_factor == 0.75
    assert m.path == load_model("deribit-pm").path  # relative inputs still resolve
    s = set_parameters("deribit-standard", {"BTC.maintenance.futures.base_rate": 0.02})
    assert s.currencies["BTC"].maintenance[0].base_rate == 0.02
    assert s.currencies["BTC"].initial[0].base_rate == 0.02  # the shipped initial rate


@pytest.mark.parametrize("path,value,words", [
    ("XRP.worst_case.price_range", "0.2", "no pool XRP"),
    ("ETH.worst_cse.price_range", "0.2", "did you mean worst_case"),
    ("ETH.worst_case.price_rnge", "0.2", "did you mean price_range"),
    ("ETH.worst_case.price_range", "1.5", "less than 1"),
    ("ETH.worst_case.price_range", "abc", "valid number"),
    ("ETH.worst_case.price_range.x", "1", "is a value"),
    ("ETH.worst_case.type", "roll_shock", "cannot be changed"),
    ("ETH", "1", "POOL.COMPONENT.KEY"),
])
def test_a_wrong_path_or_value_is_a_model_error_naming_it(path, value, words):
    with pytest.raises(ModelError, match=words) as err:
        set_parameters("deribit-pm", {path: value})
    assert err.value.field == path


def test_ambiguous_component_and_bad_assignments(book, market):
    with pytest.raises(ModelError, match="BTC.initial.futures.base_rate"):
        set_parameters("deribit-standard", {"BTC.futures.base_rate": 0.03})
    with pytest.raises(ModelError, match="NAME=VALUE"):
        parse_assignments(["ETH.worst_case.price_range"], "--set")
    with pytest.raises(InvalidValue, match="NAME=VALUE"):
        parse_assignments(["BTC-PERPETUAL"], "--trade")
    assert parse_assignments(["BTC-PERPETUAL=+1.5", "x = -2"], "--trade") == {"BTC-PERPETUAL": "+1.5", "x": "-2"}
    with pytest.raises(InvalidValue, match="quantity"):
        whatif(book, market, trades={"BTC-PERPETUAL": "lots"})
    with pytest.raises(UnknownInstrument):
        whatif(Portfolio({"BTC-PERPETUAL": 1.0}), market, trades={"BTC-27SEP24-99999-C": 1.0})
    # names are read as the exchange writes them, whatever the case
    w = whatif(Portfolio({"BTC-PERPETUAL": 1.0}), market, trades={"btc-perpetual": 1.0})
    assert w.positions_after == {"BTC-PERPETUAL": 2.0}
