"""Shared fixtures: a small, realistic BTC + ETH (+ SOL) Deribit market built in code.

Valuation 2024-09-02 09:30 UTC. Index BTC 59,000, ETH 2,500, SOL 135. Expiries 3SEP24 (under a
day), 27SEP24, 27DEC24 and 28MAR25. Forwards carry 6% (BTC) / 5% (ETH) a year. Options (calls and
puts, strikes around spot) are marked at Black-76 on a smile, in coin for coin-settled options
and in USD for USDC-settled ones; futures rows look as Deribit sends them (mark price, no
``underlying_price``); perpetuals, USDC perpetuals and BTC_USDC spot are marked at the index.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime, timezone

import numpy as np
import pytest

import marginopt
from marginopt.market import MarketSnapshot
from marginopt.pricing import SECONDS_PER_YEAR, black76

VALUATION = datetime(2024, 9, 2, 9, 30, tzinfo=timezone.utc)
INDEX = {"BTC": 59_000.0, "ETH": 2_500.0, "SOL": 135.0}
CARRY = {"BTC": 0.06, "ETH": 0.05, "SOL": 0.04}
ATM_VOL = {"BTC": 0.52, "ETH": 0.64, "SOL": 0.80}
EXPIRIES = {  # label -> expiry (08:00 UTC)
    "3SEP24": datetime(2024, 9, 3, 8, tzinfo=timezone.utc),
    "27SEP24": datetime(2024, 9, 27, 8, tzinfo=timezone.utc),
    "27DEC24": datetime(2024, 12, 27, 8, tzinfo=timezone.utc),
    "28MAR25": datetime(2025, 3, 28, 8, tzinfo=timezone.utc),
}
STRIKES = {
    "BTC": [45_000, 50_000, 55_000, 58_000, 60_000, 62_000, 65_000, 70_000, 80_000],
    "ETH": [1_800, 2_000, 2_200, 2_400, 2_500, 2_600, 2_800, 3_000, 3_500],
}
LINEAR_OPTION_EXPIRIES = ("27SEP24", "27DEC24")
LINEAR_STRIKES = {"BTC": [55_000, 60_000, 65_000], "SOL": [110, 130, 150]}


def year_fraction(label: str) -> float:
    return (EXPIRIES[label] - VALUATION).total_seconds() / SECONDS_PER_YEAR


def forward(ccy: str, label: str) -> float:
    return INDEX[ccy] * math.exp(CARRY[ccy] * year_fraction(label))


def smile(ccy: str, strike: float, fwd: float, t: float) -> float:
    """A skewed smile that flattens with maturity, in decimal vol."""
    k = math.log(strike / fwd) / max(math.sqrt(t), 0.1)
    atm = ATM_VOL[ccy] * (1.0 + 0.05 * math.log(max(t, 1 / 365) * 12))
    return atm * (1.0 + 0.12 * k * k - 0.06 * k)


def option_row(name: str, ccy: str, label: str, strike: float, is_call: bool, inverse: bool) -> dict:
    t, fwd = year_fraction(label), forward(ccy, label)
    vol = smile(ccy, strike, fwd, t)
    mark = float(black76(fwd, strike, t, vol, is_call, inverse=inverse).price)
    tick = 0.0005 if inverse else 0.5
    return {"instrument_name": name, "mark_price": mark, "mark_iv": round(100 * vol, 4),
            "underlying_price": fwd, "bid_price": max(mark - tick, 0.0), "ask_price": mark + tick,
            "open_interest": 100.0, "volume": 10.0}


def build_rows() -> list[dict]:
    rows: list[dict] = []
    for ccy in ("BTC", "ETH"):
        spot = INDEX[ccy]
        rows.append({"instrument_name": f"{ccy}-PERPETUAL", "mark_price": spot,
                     "bid_price": spot - 0.5, "ask_price": spot + 0.5})
        rows.append({"instrument_name": f"{ccy}_USDC-PERPETUAL", "mark_price": spot,
                     "bid_price": spot - 1.0, "ask_price": spot + 1.0})
        for label in EXPIRIES:
            if label != "3SEP24":  # Deribit futures rows carry no underlying_price
                f = forward(ccy, label)
                rows.append({"instrument_name": f"{ccy}-{label}", "mark_price": f,
                             "bid_price": f - 2.5, "ask_price": f + 2.5})
            for k in STRIKES[ccy]:
                for cp in "CP":
                    rows.append(option_row(f"{ccy}-{label}-{k}-{cp}", ccy, label, k, cp == "C", True))
    rows.append({"instrument_name": "BTC_USDC", "mark_price": INDEX["BTC"],
                 "bid_price": INDEX["BTC"] - 1.0, "ask_price": INDEX["BTC"] + 1.0})
    rows.append({"instrument_name": "SOL_USDC-PERPETUAL", "mark_price": INDEX["SOL"]})
    for ccy, strikes in LINEAR_STRIKES.items():
        for label in LINEAR_OPTION_EXPIRIES:
            for k in strikes:
                for cp in "CP":
                    rows.append(option_row(f"{ccy}_USDC-{label}-{k}-{cp}", ccy, label, k, cp == "C", False))
    return rows


_ROWS = build_rows()

#: a mixed book: short puts, long and short calls, futures across expiries, perpetuals, linear
#: contracts and spot; quantities in coin
BOOK = {
    "BTC-27SEP24-55000-P": -12.0,
    "BTC-27SEP24-65000-C": 8.5,
    "BTC-27DEC24-70000-C": -5.0,
    "BTC-28MAR25-50000-P": 3.0,
    "BTC-3SEP24-60000-C": -2.0,
    "BTC-27SEP24": -4.0,
    "BTC-27DEC24": 6.0,
    "BTC-PERPETUAL": -1.5,
    "BTC_USDC-PERPETUAL": 2.0,
    "BTC_USDC-27SEP24-60000-P": -3.0,
    "BTC_USDC": 1.0,
    "ETH-27SEP24-2200-P": -150.0,
    "ETH-27DEC24-3000-C": 80.0,
    "ETH-28MAR25-2500-C": -40.0,
    "ETH-27DEC24": -30.0,
    "ETH-PERPETUAL": 25.0,
    "ETH_USDC-PERPETUAL": -10.0,
}


@pytest.fixture(scope="session")
def valuation_time() -> datetime:
    return VALUATION


@pytest.fixture(scope="session")
def index_prices() -> dict[str, float]:
    return dict(INDEX)


@pytest.fixture
def market_rows() -> list[dict]:
    """A fresh, mutable copy of the market rows."""
    return copy.deepcopy(_ROWS)


@pytest.fixture(scope="session")
def market() -> MarketSnapshot:
    return MarketSnapshot.from_rows(copy.deepcopy(_ROWS), valuation_time=VALUATION, index_prices=INDEX)


@pytest.fixture(scope="session")
def make_market():
    """``make_market(rows, valuation_time=..., index_prices=...)`` with the fixture defaults."""
    def make(rows, *, valuation_time=VALUATION, index_prices=None) -> MarketSnapshot:
        return MarketSnapshot.from_rows(rows, valuation_time=valuation_time,
                                        index_prices=INDEX if index_prices is None else index_prices)
    return make


@pytest.fixture(scope="session")
def book() -> marginopt.Portfolio:
    return marginopt.Portfolio(BOOK)


@pytest.fixture(scope="session")
def universe(market) -> list[str]:
    """Every BTC and ETH instrument of the market (what the property tests draw books from)."""
    return [n for n in market.instrument_names if n.split("_")[0].split("-")[0] in ("BTC", "ETH")]


def rel_close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


@pytest.fixture(scope="session")
def assert_rel():
    def check(a, b, rel=1e-9, abs_=1e-12):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        np.testing.assert_allclose(a, b, rtol=rel, atol=abs_)
    return check
