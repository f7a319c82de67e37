"""Benchmarks of the margin engine (a script, not a test): prints a table of medians.

    /work/venv/bin/python benchmarks/bench_margin.py [--repeats N]

(a) margin of a 1,000-position BTC+ETH book under deribit-pm: ``BoundModel.evaluate(x)`` once the
    market is loaded and bound, and the full ``margin()`` call (binding = scenario build included);
(b) ``scenarios.revalue`` of 2,000 instruments under 10,000 scenarios.
Targets: (a) < 20 ms, (b) < 2 s. Markets are synthetic but realistic: strikes around spot,
expiries from 1 day to 1 year, a smile, forwards with carry, futures and perpetuals.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np

import marginopt
from marginopt.instruments import parse_instrument
from marginopt.market import MarketSnapshot
from marginopt.pricing import black76
from marginopt.scenarios import ScenarioGrid, VolShock, revalue

VALUATION = datetime(2024, 6, 3, 9, 0, tzinfo=timezone.utc)
INDEX = {"BTC": 67_500.0, "ETH": 3_800.0}
ATM_VOL = {"BTC": 0.55, "ETH": 0.62}
STRIKE_STEP = {"BTC": 1_000.0, "ETH": 50.0}
_MON = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()


def _label(d: datetime) -> str:
    return f"{d.day}{_MON[d.month - 1]}{d:%y}"


def expiries(n: int) -> list[datetime]:
    """``n`` distinct expiries (08:00 UTC) spread from 1 day to 1 year, denser at the front."""
    days = np.unique(np.round(np.geomspace(1, 365, n)).astype(int))
    while days.size < n:  # geomspace rounds short ends together; pad with later days
        days = np.unique(np.append(days, days.max() + 1))
    base = VALUATION.replace(hour=8, minute=0)
    return [base + timedelta(days=int(d)) for d in days[:n]]


def synthetic_market(n_expiries: int, strikes_per_side: int, *, linear: bool = False,
                     seed: int = 0) -> MarketSnapshot:
    """Options (calls and puts around the forward, with a smile), a future per expiry and a
    perpetual, for BTC and ETH; inverse, plus USDC-settled copies if ``linear``."""
    rng = np.random.default_rng(seed)
    rows = []
    for ccy, spot in INDEX.items():
        rows.append({"instrument_name": f"{ccy}-PERPETUAL", "mark_price": spot})
        if linear:
            rows.append({"instrument_name": f"{ccy}_USDC-PERPETUAL", "mark_price": spot})
        for exp in expiries(n_expiries):
            t = (exp - VALUATION).total_seconds() / (365 * 86400)
            fwd = spot * np.exp(0.08 * t)
            lab = _label(exp)
            rows.append({"instrument_name": f"{ccy}-{lab}", "mark_price": fwd, "underlying_price": fwd})
            step = STRIKE_STEP[ccy] * max(1.0, np.sqrt(t * 12))
            atm = round(fwd / step) * step
            strikes = atm + step * np.arange(-strikes_per_side, strikes_per_side + 1)
            strikes = strikes[strikes > 0]
            k = np.log(strikes / fwd) / max(np.sqrt(t), 0.05)
            vol = ATM_VOL[ccy] * (1 + 0.08 * k * k - 0.04 * k) + rng.normal(0, 0.003, k.size)
            for settle, inverse in ((f"{ccy}", True),) + (((f"{ccy}_USDC", False),) if linear else ()):
                for cp, is_call in (("C", True), ("P", False)):
                    g = black76(fwd, strikes, t, vol, is_call, inverse=inverse)
                    for kk, v, px in zip(strikes, vol, g.price):
                        rows.append({"instrument_name": f"{settle}-{lab}-{int(kk)}-{cp}",
                                     "mark_price": float(px), "mark_iv": float(100 * v),
                                     "underlying_price": fwd})
    return MarketSnapshot.from_rows(rows, valuation_time=VALUATION, index_prices=INDEX)


def random_book(market: MarketSnapshot, n: int, seed: int = 1) -> marginopt.Portfolio:
    rng = np.random.default_rng(seed)
    names = market.instrument_names
    pick = rng.choice(len(names), size=n, replace=False)
    qty = {}
    for j in pick:
        inst = parse_instrument(names[j])
        size = 0.1 if inst.underlying == "BTC" else 1.0
        qty[names[j]] = float(np.round(rng.normal(0, 5) * size, 2) or size)
    return marginopt.Portfolio(qty)


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median CPU (process) time of ``fn()`` over ``repeats`` runs after a
    warm-up. CPU time is the figure to read on a shared, busy machine."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    rows = []

    # (a) 1,000-position two-underlying book under deribit-pm
    market = synthetic_market(n_expiries=12, strikes_per_side=12)
    book = random_book(market, 1_000)
    model = marginopt.load_model("deribit-pm")
    bound = model.bind(book.instruments, market)
    x = book.quantities
    n_scen = sum(len(p.initial[0].labels) for p in bound.pools)
    t_eval = median_time(lambda: bound.evaluate(x), args.repeats)
    t_im = median_time(lambda: bound.initial_margin_usd(x), args.repeats)
    t_bind = median_time(lambda: model.bind(book.instruments, market), args.repeats)
    t_full = median_time(lambda: marginopt.margin(book, market, model), args.repeats)
    t_named = median_time(lambda: marginopt.margin(book, market, "deribit-pm"), args.repeats)
    result = marginopt.margin(book, market, model)
    assert np.isfinite(result.initial_margin_usd)
    what = f"{len(book)} positions, {len(bound.pools)} pools, {n_scen} scenarios"
    rows += [
        ("(a) BoundModel.evaluate(x)", what, t_eval, 0.020),
        ("(a) BoundModel.initial_margin_usd(x)", what, t_im, None),
        ("(a) model.bind(instruments, market)", what, t_bind, None),
        ("(a) margin() incl. binding", what, t_full, 0.020),
        ('(a) margin(..., "deribit-pm") by name', what, t_named, 0.020),
    ]

    # (b) revalue 2,000 instruments x 10,000 scenarios
    big = synthetic_market(n_expiries=20, strikes_per_side=12, linear=True, seed=2)
    names = [n for n in big.instrument_names if n.startswith("BTC")][:2_000]
    assert len(names) == 2_000, len(names)
    inputs = big.pricing_inputs([parse_instrument(n) for n in names])
    rng = np.random.default_rng(3)
    moves = np.clip(rng.standard_t(4, 10_000) * 0.06, -0.9, 5.0)
    states = rng.integers(-1, 2, 10_000)
    grid = ScenarioGrid(tuple(f"s{i}" for i in range(10_000)), moves, states,
                        np.ones(10_000), np.zeros(10_000))
    shock = VolShock(0.5, 0.25, 0.3, 0.13, 0.5)
    n_opt = int(inputs.is_option.sum())
    t_rev = median_time(lambda: revalue(inputs, grid, shock), max(3, args.repeats // 4))
    rows.append(("(b) scenarios.revalue", f"2000 instruments ({n_opt} options) x 10000 scenarios",
                 t_rev, 2.0))

    def shown(t: float) -> str:
        return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.3f} s"

    print(f"{'benchmark':40s} {'size':52s} {'wall':>10s} {'cpu':>10s} {'target':>7s}  ok")
    for name, size, (wall, cpu), target in rows:
        tgt = "-" if target is None else (f"{target * 1e3:.0f} ms" if target < 1 else f"{target:.0f} s")
        ok = "" if target is None else ("yes" if min(wall, cpu) < target else "NO")
        print(f"{name:40s} {size:52s} {shown(wall):>10s} {shown(cpu):>10s} {tgt:>7s}  {ok}")


if __name__ == "__main__":
    main()
