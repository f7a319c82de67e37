"""Benchmark of capacity (a script, not a test): 2,000 instruments, each side, one book.

    python benchmarks/bench_capacity.py [--repeats N] [--instruments 2000]

Rows (median wall-clock and CPU seconds over the repeats, after a warm-up):

(a) ``marginopt.capacity`` under deribit-pm for every instrument (binding the model to the book
    plus the instruments included): the closed form over the scenario matrix, one vectorised pass.
    Target: under 1 s for 2,000 instruments. Also with a fresh snapshot each run (a snapshot
    memoises its pricing inputs, so the first call on a snapshot also pays for them).
(b) the same under deribit-standard (options in closed form; futures under the quadratic size
    charge by the vectorised root-find) and covariance-var (root-find for every instrument).
(c) the baseline the closed form replaces: bisection of full margin calls (the bound model's
    ``initial_margin_usd`` on the post-trade book, 60 steps per side) timed on a sample of
    instruments and scaled to all of them; the ratio is (c) / (a).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_margin import random_book, synthetic_market  # noqa: E402

import marginopt  # noqa: E402
from marginopt.market import MarketSnapshot  # noqa: E402


def median_time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def bisection_baseline(book, market, names, budget, sample: int) -> float:
    """Seconds per instrument (both sides) of capacity by bisection on full margin calls."""
    rules = marginopt.load_model("deribit-pm")
    universe = list(dict.fromkeys([*book.names, *names[:sample]]))
    bound = rules.bind([marginopt.parse_instrument(n) for n in universe], market)
    x0 = np.array([book.quantity(n) for n in universe])
    t0 = time.perf_counter()
    for j in range(len(book.names), len(universe)):
        for side in (1.0, -1.0):
            lo, hi = 0.0, 1e6
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                x = x0.copy()
                x[j] += side * mid
                if bound.initial_margin_usd(x) > budget:
                    hi = mid
                else:
                    lo = mid
    return (time.perf_counter() - t0) / max(len(universe) - len(book.names), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--instruments", type=int, default=2000)
    args = ap.parse_args()
    market = synthetic_market(n_expiries=22, strikes_per_side=12)
    book = random_book(market, 60)
    names = [n for n in market.instrument_names if n not in book.positions][: args.instruments]
    if len(names) < args.instruments:
        raise SystemExit(f"the synthetic market lists only {len(names)} instruments besides the book")
    pm = marginopt.margin(book, market, "deribit-pm").initial_margin_usd
    budget = 1.5 * pm + 1e5
    rows = []
    for model in ("deribit-pm", "deribit-standard", "covariance-var"):
        im = marginopt.margin(book, market, model).initial_margin_usd
        b = 1.5 * im + 1e5
        res = marginopt.capacity(book, market, model, budget=b, instruments=names)
        wall, cpu = median_time(lambda: marginopt.capacity(book, market, model, budget=b,
                                                           instruments=names), args.repeats)
        methods = {m: sum(1 for x in res.method if x == m) for m in dict.fromkeys(res.method)}
        rows.append((f"capacity, {model}", len(res.instruments), wall, cpu,
                     "; ".join(f"{v} {k.split(' (')[0]}" for k, v in methods.items())))
    # a snapshot memoises its pricing inputs per instrument list: a fresh one pays for them too
    fresh = lambda: MarketSnapshot(market.valuation_time, market.index_prices, market.rows,  # noqa: E731
                                   market.source)
    b = 1.5 * pm + 1e5
    wall, cpu = median_time(lambda: marginopt.capacity(book, fresh(), "deribit-pm", budget=b,
                                                       instruments=names), args.repeats)
    rows.insert(1, ("capacity, deribit-pm, fresh snapshot", len(names) + len(book), wall, cpu, ""))
    per = bisection_baseline(book, market, names, budget, sample=20)
    base = per * len(names)
    print(f"capacity of {len(names)} instruments (plus the book's {len(book)}), both sides; "
          f"median of {args.repeats} runs")
    print(f"{'case':<34} {'instruments':>11} {'wall s':>9} {'cpu s':>9}  methods")
    for name, n, wall, cpu, methods in rows:
        print(f"{name:<34} {n:>11} {wall:>9.3f} {cpu:>9.3f}  {methods}")
    print(f"{'bisection of full margin calls':<34} {len(names):>11} {base:>9.3f} {'':>9}  "
          f"(20 instruments timed, scaled)")
    pm_wall = rows[0][2]
    print(f"closed form (deribit-pm) vs bisection: {base / pm_wall:,.0f}x faster; "
          f"target under 1 s: {'met' if pm_wall < 1.0 else 'NOT met'} ({pm_wall:.3f} s)")


if __name__ == "__main__":
    main()
