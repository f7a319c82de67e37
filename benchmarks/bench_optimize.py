"""Rebalancer benchmark: deribit-pm, BTC + ETH, 300 candidate instruments.

Cold: a new Rebalancer (build + compile + solve + verify). Warm: the same Rebalancer on a moved
snapshot of the same universe (Parameters updated, no recompilation). Medians over repeats,
measured side by side in one run.

    python benchmarks/bench_optimize.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import marginopt as mo
from marginopt.synthetic import make_book, make_market


def moved(market: mo.MarketSnapshot, k: int) -> mo.MarketSnapshot:
    rows = market.rows.copy()
    f = 1.0 + 0.002 * ((k % 5) - 2)
    rows["underlying_price"] *= f
    rows["mark_iv"] += 0.1 * (k % 3)
    return mo.MarketSnapshot(market.valuation_time, {u: p * f for u, p in market.index_prices.items()}, rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--candidates", type=int, default=300)
    args = ap.parse_args()
    market = make_market(strikes_per_expiry=17)
    book = make_book(market, n_structures=28)
    rng = np.random.default_rng(0)
    others = [n for n in market.instrument_names if n not in book.positions]
    extra = list(rng.choice(others, size=args.candidates - len(book), replace=False))
    spec = {"universe": book.names + extra,
            "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
            "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    cold, cold_solve, warm, warm_solve = [], [], [], []
    for k in range(args.repeats):
        t = time.perf_counter()
        reb = mo.Rebalancer("deribit-pm", spec)
        p = reb.optimize(book, market)
        cold.append(time.perf_counter() - t)
        cold_solve.append(p.timings["build"] + p.timings["solve"])
        t = time.perf_counter()
        q = reb.optimize(book, moved(market, k + 1))
        warm.append(time.perf_counter() - t)
        warm_solve.append(q.timings["build"] + q.timings["solve"])
        assert reb.builds == 1
    ms = lambda xs: f"{1000 * statistics.median(xs):8.1f} ms"  # noqa: E731
    print(f"deribit-pm, {len(p.margin_before.by_underlying)} pools, {args.candidates} candidates, "
          f"{len(p.trades)} trades, saved {p.margin_saved_pct:.1f}%")
    print(f"cold  optimize (build + compile + 2-stage solve + verify): {ms(cold)}   build+solve only: {ms(cold_solve)}")
    print(f"warm  optimize (new snapshot, Parameters only):          {ms(warm)}   build+solve only: {ms(warm_solve)}")
    print(f"warm / cold: {statistics.median(warm) / statistics.median(cold):.2f}")


if __name__ == "__main__":
    main()
