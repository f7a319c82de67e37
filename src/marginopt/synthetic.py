"""Realistic synthetic markets and books: the embedded sample data, benchmarks and batch tests.

A market has Deribit's listing pattern (weekly, monthly and quarterly Friday expiries at 08:00 UTC),
strikes around the forward on Deribit's grid, a smile with put skew and a term structure, marks
from Black-76 (coin for inverse options), bid/ask spreads that widen away from the money, and open
interest that decays with moneyness. Every number comes from the generator and its seed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np

from .instruments import Kind, Settlement, parse_instrument
from .market import MarketSnapshot
from .portfolio import Portfolio
from .pricing import SECONDS_PER_YEAR, black76_price
from .venues import venue

#: the venue whose listings, names and amounts the synthetic markets and books copy
DERIBIT = venue("deribit")

#: per underlying: index, ATM vol, strike step, basis (annual); books are sized in the venue's
#: option lots
_UNDERLYINGS = {
    "BTC": dict(index=97_250.0, atm_vol=0.52, step=1_000.0, basis=0.07,
                lot=DERIBIT.lot_sizes["BTC-option"]),
    "ETH": dict(index=3_420.0, atm_vol=0.66, step=50.0, basis=0.08,
                lot=DERIBIT.lot_sizes["ETH-option"]),
}


def _name(underlying: str, kind: Kind, settlement: Settlement = Settlement.INVERSE,
          expiry: datetime | None = None, strike: float | None = None,
          is_call: bool | None = None) -> str:
    return DERIBIT.format(underlying, kind, settlement, expiry, strike, is_call)


def _fridays(start: datetime, count_weekly: int = 3) -> list[datetime]:
    """Deribit-like expiries: the next weeklies, month-ends and quarter-ends (Fridays, at the
    venue's expiry hour)."""
    day = start.replace(hour=DERIBIT.expiry_hour_utc, minute=0, second=0, microsecond=0)
    fridays = []
    d = day + timedelta(days=1)
    while len(fridays) < 60:
        if d.weekday() == 4:
            fridays.append(d)
        d += timedelta(days=1)
    weekly = fridays[:count_weekly]
    last_of_month = [f for f in fridays if (f + timedelta(days=7)).month != f.month]
    monthly = last_of_month[:3]
    quarterly = [f for f in last_of_month if f.month in (3, 6, 9, 12)][:3]
    return sorted(set(weekly + monthly + quarterly))


def make_market(
    valuation_time: datetime = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc),
    underlyings: Iterable[str] = ("BTC", "ETH"),
    strikes_per_expiry: int = 13,
    seed: int = 7,
    strike_step: float = 1.0,
) -> MarketSnapshot:
    """A snapshot with futures, perpetuals and options for each underlying. ``strike_step``
    scales the strike grid's step (1,000 USD for BTC, 50 for ETH): 0.5 lists strikes every 500
    and 25, as the venue does near the money, for a listing of about 4,000 instruments."""
    rng = np.random.default_rng(seed)
    rows = []
    index_prices = {}
    expiries = _fridays(valuation_time)
    for u in underlyings:
        p = _UNDERLYINGS[u]
        s = p["index"]
        index_prices[u] = s
        perp_spread = s * 0.00005
        rows.append(dict(instrument_name=_name(u, Kind.PERPETUAL), mark_price=s, underlying_price=s,
                         bid_price=round(s - perp_spread, 2), ask_price=round(s + perp_spread, 2),
                         open_interest=float(rng.uniform(2e8, 9e8)), volume=float(rng.uniform(1e8, 5e8))))
        rows.append(dict(instrument_name=_name(u, Kind.PERPETUAL, Settlement.LINEAR), mark_price=s, underlying_price=s,
                         bid_price=round(s - 2 * perp_spread, 2), ask_price=round(s + 2 * perp_spread, 2),
                         open_interest=float(rng.uniform(1e3, 5e3)), volume=float(rng.uniform(1e3, 1e4))))
        for exp in expiries:
            t = (exp - valuation_time).total_seconds() / SECONDS_PER_YEAR
            fwd = round(s * np.exp(p["basis"] * t), 2)
            if (exp + timedelta(days=7)).month != exp.month:  # futures list at month ends
                half = fwd * (0.0001 + 0.0002 * t)
                rows.append(dict(instrument_name=_name(u, Kind.FUTURE, expiry=exp), mark_price=fwd, underlying_price=fwd,
                                 bid_price=round(fwd - half, 2), ask_price=round(fwd + half, 2),
                                 open_interest=float(rng.uniform(5e7, 3e8)), volume=float(rng.uniform(1e7, 1e8))))
            width = p["atm_vol"] * np.sqrt(max(t, 1 / 365)) * 2.2
            k_lo, k_hi = fwd * np.exp(-width), fwd * np.exp(width)
            unit = p["step"] * strike_step
            step = unit * max(1, int(round((k_hi - k_lo) / strikes_per_expiry / unit)))
            strikes = np.unique(np.round(np.linspace(k_lo, k_hi, strikes_per_expiry) / step) * step)
            strikes = strikes[strikes > 0]
            m = np.log(strikes / fwd) / np.sqrt(max(t, 1 / 365))
            term = p["atm_vol"] * (1.0 + 0.08 * np.exp(-t * 12))
            vol = term * (1.0 - 0.10 * m + 0.06 * m**2)
            for is_call in (True, False):
                usd = black76_price(fwd, strikes, t, vol, is_call)
                coin = usd / fwd
                spread_vol = 0.006 + 0.004 * np.abs(m)
                vega_coin = (black76_price(fwd, strikes, t, vol + 0.01, is_call) - usd) / fwd
                half = np.maximum(spread_vol * 100 * vega_coin, 0.0001)
                oi = np.round(rng.uniform(50, 800, strikes.size) * np.exp(-0.5 * m**2) * (1 if u == "BTC" else 12), 1)
                for k, c, v, h, o in zip(strikes, coin, vol, half, oi):
                    rows.append(dict(
                        instrument_name=_name(u, Kind.OPTION, expiry=exp, strike=int(k), is_call=is_call),
                        mark_price=float(round(c, 8)), mark_iv=float(round(100 * v, 2)),
                        underlying_price=fwd,
                        bid_price=float(round(max(c - h, 0.0), 4)) if c - h > 0.0001 else None,
                        ask_price=float(round(c + h, 4)), open_interest=float(o),
                        volume=float(round(o * rng.uniform(0.05, 0.3), 1))))
    return MarketSnapshot.from_rows(rows, valuation_time=valuation_time, index_prices=index_prices,
                                    source="synthetic")


def make_book(market: MarketSnapshot, n_structures: int = 14, seed: int = 11) -> Portfolio:
    """A desk's book: short strangles, calendar and vertical spreads, risk reversals, and
    perpetual/future hedges, sized in each underlying's option lots."""
    rng = np.random.default_rng(seed)
    names = market.instrument_names
    options = [parse_instrument(n) for n in names if parse_instrument(n).is_option]
    by_u: dict[str, list] = {}
    for o in options:
        by_u.setdefault(o.underlying, []).append(o)
    positions: dict[str, float] = {}

    def add(name: str, q: float) -> None:
        positions[name] = round(positions.get(name, 0.0) + q, 8)

    underlyings = sorted(by_u)
    for i in range(n_structures):
        u = underlyings[i % len(underlyings)]
        lot = _UNDERLYINGS[u]["lot"]
        fwd_of = {o.expiry: market.rows.loc[o.name, "underlying_price"] for o in by_u[u]}
        expiries = sorted(fwd_of)
        exp = expiries[rng.integers(0, len(expiries))]
        f = fwd_of[exp]
        chain = [o for o in by_u[u] if o.expiry == exp]
        calls = sorted((o for o in chain if o.is_call), key=lambda o: o.strike)
        puts = sorted((o for o in chain if not o.is_call), key=lambda o: o.strike)
        size = lot * int(rng.integers(5, 40))
        otm_c = [o for o in calls if o.strike > f] or calls[-1:]
        otm_p = [o for o in puts if o.strike < f] or puts[:1]
        kind = i % 5
        if kind == 0:  # short strangle
            add(otm_c[min(2, len(otm_c) - 1)].name, -size)
            add(otm_p[-min(3, len(otm_p))].name, -size)
        elif kind == 1:  # call calendar: short near, long far at the same strike
            later = [e for e in expiries if e > exp] or [exp]
            far = later[min(1, len(later) - 1)]
            k = otm_c[0].strike
            far_chain = [o for o in by_u[u] if o.expiry == far and o.is_call]
            far_opt = min(far_chain, key=lambda o: abs(o.strike - k))
            add(otm_c[0].name, -size)
            add(far_opt.name, size)
        elif kind == 2:  # put vertical: long higher strike, short lower
            if len(otm_p) >= 3:
                add(otm_p[-1].name, size)
                add(otm_p[-3].name, -size)
        elif kind == 3:  # risk reversal: short put, long call
            add(otm_p[-2 if len(otm_p) > 1 else -1].name, -size)
            add(otm_c[1 if len(otm_c) > 1 else 0].name, size)
        else:  # call vertical, short the body
            if len(otm_c) >= 2:
                add(otm_c[0].name, -size)
                add(otm_c[1].name, size)
    for u in underlyings:  # hedges: perpetual and the nearest month-end future
        add(_name(u, Kind.PERPETUAL), round(float(rng.normal(0, 3 * _UNDERLYINGS[u]["lot"] * 10)), 3))
        futs = [n for n in names if n.startswith(f"{u}-") and parse_instrument(n).kind.value == "future"]
        if futs:
            add(futs[0], round(float(rng.normal(0, 2 * _UNDERLYINGS[u]["lot"] * 10)), 3))
    return Portfolio({k: v for k, v in positions.items() if v != 0.0}, source="synthetic")


def write_sample_data(folder) -> None:
    """Regenerate the embedded sample data (market snapshot, book, spec) from fixed seeds."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    market = make_market()
    book = make_book(market, n_structures=28)
    (folder / "sample_market.json").write_text(json.dumps(market.to_dict(), indent=1) + "\n")
    book.to_frame().to_csv(folder / "sample_portfolio.csv", index=False)
