"""A new venue is a venue module, a component module, one registry line each and a model file:
this test is all of them. It defines a toy venue (its own name scheme, expiry hour, lot sizes and
API fields) and a toy margin component, registers both from here, writes the model YAML to a
temporary folder, loads a book and a market in the toy venue's API fields and optimises the book
end to end; nothing in the package changes. Unregistering leaves no trace."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, Mapping

import cvxpy as cp
import numpy as np
import pytest

import marginopt as mo
from marginopt.errors import MalformedInstrumentName, ModelError, UnsupportedInstrument
from marginopt.instruments import Instrument, Kind, Settlement, strike_text
from marginopt.margins import (BoundComponent, ComponentSpec, PoolContext, Term, register,
                               registered_components, unregister)
from marginopt.pricing import black76_price
from marginopt.rebalance import Rebalancer
from marginopt.rebalance._verify import Verifier
from marginopt.scenarios import delta_in_margin_currency
from marginopt.venues import Venue, register_venue, unregister_venue, venue, venues

from ..rebalance.conftest import assert_sound


# --------------------------------------------------------------------------- the venue module
_TOY = re.compile(r"^TOY:(?P<und>[A-Z0-9]+):(?:(?P<perp>PERP)|(?P<date>\d{8})"
                  r"(?::(?P<cp>[CP]):(?P<strike>\d+(?:\.\d+)?))?)$")


@dataclass(frozen=True)
class Toy(Venue):
    """``TOY:BTC:20261225:C:100000``, ``TOY:BTC:20261225``, ``TOY:BTC:PERP``; everything
    USD-settled, expiring at 16:00 UTC; its API calls a row's fields symbol, mark, iv, ..."""

    name: str = "toy"
    expiry_hour_utc: int = 16
    examples: tuple[str, ...] = ("TOY:BTC:20261225:C:100000", "TOY:BTC:20261225", "TOY:BTC:PERP")
    lot_sizes: Mapping[str, float] = field(default_factory=lambda: {"BTC-option": 0.5,
                                                                     "BTC-future": 0.01})
    market_fields: Mapping[str, str] = field(default_factory=lambda: {
        "instrument_name": "symbol", "mark_price": "mark", "mark_iv": "iv",
        "underlying_price": "forward", "bid_price": "bid", "ask_price": "ask",
        "open_interest": "oi", "volume": "vol"})
    position_name_fields: tuple[str, ...] = ("symbol",)
    position_quantity_fields: tuple[str, ...] = ("qty",)

    def recognises(self, name: str) -> bool:
        return _TOY.match(self.canonical(name)) is not None

    def parse(self, name: str) -> Instrument:
        text = self.canonical(name)
        m = _TOY.match(text)
        if m is None:
            raise MalformedInstrumentName(f"'{name}' is not a toy name", field="instrument_name",
                                          value=name)
        if m["perp"]:
            return Instrument(text, m["und"], Kind.PERPETUAL, Settlement.LINEAR)
        d = m["date"]
        expiry = datetime(int(d[:4]), int(d[4:6]), int(d[6:]), self.expiry_hour_utc, tzinfo=timezone.utc)
        if m["cp"] is None:
            return Instrument(text, m["und"], Kind.FUTURE, Settlement.LINEAR, expiry)
        return Instrument(text, m["und"], Kind.OPTION, Settlement.LINEAR, expiry,
                          float(m["strike"]), m["cp"] == "C")

    def format(self, underlying, kind, settlement=Settlement.LINEAR, expiry=None, strike=None,
               is_call=None) -> str:
        if kind is Kind.PERPETUAL:
            return f"TOY:{underlying}:PERP"
        date = f"{expiry:%Y%m%d}"
        if kind is Kind.FUTURE:
            return f"TOY:{underlying}:{date}"
        return f"TOY:{underlying}:{date}:{'C' if is_call else 'P'}:{strike_text(strike).replace('d', '.')}"


# --------------------------------------------------------------------------- the component module
class NetDelta(BoundComponent):
    """``rate x |net delta in USD| + short_rate x index x (options sold)``: linear."""

    cone = "linear"
    signed_values = frozenset({"delta"})

    def __init__(self, name: str, delta: np.ndarray, short: np.ndarray) -> None:
        self.name, self.delta, self.short = name, delta, short

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"delta": scale * self.delta, "short": scale * self.short}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        return float(abs(v["delta"] @ x) + v["short"] @ np.maximum(-x, 0.0))

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        return Term(cp.abs(params["delta"] @ x) + params["short"] @ cp.neg(x))


class NetDeltaSpec(ComponentSpec):
    type: Literal["toy_net_delta"]
    implementation = NetDelta
    rate: float
    short_rate: float

    def bind(self, ctx: PoolContext) -> NetDelta:
        inp = ctx.inputs
        return NetDelta(self.name, self.rate * delta_in_margin_currency(inp),
                        self.short_rate * inp.index * inp.is_option)


MODEL_YAML = """\
name: toy-net-delta
description: Toy venue margin, |net delta| plus a charge per option sold
source: tests/venues/test_toy_venue.py
venue: toy
pooling: per_underlying
settlements: [linear]
currencies:
  BTC:
    initial:
      - {type: toy_net_delta, name: net_delta, rate: 0.1, short_rate: 0.12}
    maintenance_factor: 0.5
"""


# --------------------------------------------------------------------------- the data (toy API)
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
EXPIRY = datetime(2026, 12, 25, 16, 0, tzinfo=timezone.utc)
SPOT, FORWARD = 97_250.0, 97_900.0


def toy_market_rows() -> list[dict]:
    t = (EXPIRY - NOW).total_seconds() / (365.0 * 86_400)
    rows = [{"symbol": "TOY:BTC:PERP", "mark": SPOT, "bid": SPOT - 5, "ask": SPOT + 5, "oi": 900.0},
            {"symbol": "TOY:BTC:20261225", "mark": FORWARD, "forward": FORWARD, "bid": FORWARD - 10,
             "ask": FORWARD + 10, "oi": 300.0}]
    for k in (90_000, 100_000, 110_000):
        for call in (True, False):
            px = float(black76_price(FORWARD, k, t, 0.55, call))
            rows.append({"symbol": f"TOY:BTC:20261225:{'C' if call else 'P'}:{k}", "mark": px,
                         "iv": 55.0, "forward": FORWARD, "bid": px - 20.0, "ask": px + 20.0,
                         "oi": 50.0})
    return rows


@pytest.fixture
def toy(tmp_path):
    """The venue and component registered (one line each), the model file written."""
    register_venue(Toy())
    register(NetDeltaSpec)
    path = tmp_path / "toy-net-delta.yaml"
    path.write_text(MODEL_YAML)
    yield path
    unregister("toy_net_delta")
    unregister_venue("toy")


def test_a_book_on_a_toy_venue_optimises_end_to_end(toy):
    model = mo.load_model(toy)
    assert model.venue == "toy" and model.trading_venue.lot_size(mo.parse_instrument(
        "TOY:BTC:20261225:C:100000")) == 0.5
    market = mo.load_market({"valuation_time": NOW.isoformat(), "index_prices": {"BTC": SPOT},
                             "instruments": toy_market_rows()}, venue="toy")
    book = mo.load_portfolio({"positions": [{"symbol": "toy:btc:20261225:c:100000", "qty": -6},
                                            {"symbol": "TOY:BTC:20261225:P:90000", "qty": -2},
                                            {"symbol": "TOY:BTC:PERP", "qty": 0.4}]}, venue="toy")
    assert book.names[0] == "TOY:BTC:20261225:C:100000"
    inst = mo.parse_instrument(book.names[0])
    assert (inst.kind, inst.settlement, inst.strike, inst.is_call, inst.expiry) == \
        (Kind.OPTION, Settlement.LINEAR, 100_000.0, True, EXPIRY)
    assert market.rows.loc["TOY:BTC:20261225", "underlying_price"] == FORWARD

    before = mo.margin(book, market, model)
    assert before.by_underlying["BTC_USDC"].components["net_delta"] > 0
    # the short call stays: its delta is hedged with the future or the perpetual, in their lots
    spec = {"universe": "held+futures", "lots": {"mode": "round"}, "do_not_trade": [book.names[0]],
            "limits": {"BTC": {"delta": [-3, 3]}}}
    p = mo.optimize(book, market, model, spec)
    assert_sound(p, before)
    assert p.status == "optimal" and p.margin_after.initial_margin_usd < before.initial_margin_usd
    assert p.margin_saved_usd > 0.05 * before.initial_margin_usd
    assert {t.instrument_name for t in p.trades} & {"TOY:BTC:PERP", "TOY:BTC:20261225"}
    # the venue's lots: options in 0.5, futures and perpetuals in 0.01
    for t in p.trades:
        lot = 0.5 if mo.parse_instrument(t.instrument_name).is_option else 0.01
        assert abs(t.quantity / lot - round(t.quantity / lot)) < 1e-9, t
    # the proposal verifies afresh, and its margin is the calculator's
    data = Rebalancer(model, spec).problem_data(book, market)
    trades = np.array([p.trade_quantities.get(n, 0.0) for n in data.universe.names])
    assert Verifier(data, mo.load_spec(spec)).check(trades).ok
    again = mo.margin(book.apply(p.trade_quantities), market, model)
    assert again.initial_margin_usd == pytest.approx(p.margin_after.initial_margin_usd, rel=1e-12)


def test_other_venues_models_do_not_margin_toy_instruments(toy):
    market = mo.load_market({"valuation_time": NOW.isoformat(), "index_prices": {"BTC": SPOT},
                             "instruments": toy_market_rows()}, venue="toy")
    book = mo.Portfolio({"TOY:BTC:PERP": 1.0})
    with pytest.raises(UnsupportedInstrument, match="deribit instruments, not venue toy's") as err:
        mo.margin(book, market, "deribit-pm")
    assert err.value.row == "TOY:BTC:PERP"


def test_the_toy_venue_cannot_take_names_of_another():
    @dataclass(frozen=True)
    class Greedy(Toy):
        name: str = "greedy"

        def recognises(self, name: str) -> bool:
            return True

    with pytest.raises(ValueError, match="would claim venue deribit's name"):
        register_venue(Greedy())
    assert "greedy" not in venues()


def test_unregistering_cleans_up(tmp_path):
    register_venue(Toy())
    register(NetDeltaSpec)
    assert mo.parse_instrument("TOY:BTC:PERP").kind is Kind.PERPETUAL
    unregister("toy_net_delta")
    unregister_venue("toy")
    assert "toy" not in venues() and "toy_net_delta" not in registered_components()
    with pytest.raises(MalformedInstrumentName, match="not an instrument name of any venue"):
        mo.parse_instrument("TOY:BTC:PERP")
    with pytest.raises(KeyError, match="no venue 'toy'"):
        venue("toy")
    path = tmp_path / "toy.yaml"
    path.write_text(MODEL_YAML.replace("{type: toy_net_delta, name: net_delta, rate: 0.1, short_rate: 0.12}",
                                       "{type: futures_size, name: f, base_rate: 0.02, size_rate: 0.0}"))
    with pytest.raises(ModelError, match="unknown venue 'toy'"):
        mo.load_model(path)
