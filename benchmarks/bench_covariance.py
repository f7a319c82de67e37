"""covariance-var at scale: 500 and 2,000 candidate instruments (BTC + ETH options, futures).

Reports per size: time, solver, the solver's margin against the calculator's (relative gap),
how many trades, how many of them are dust (below 1e-6 of the largest), and the verifier's path.

    python benchmarks/bench_covariance.py [--sizes 500 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import marginopt as mo
from marginopt.synthetic import make_book, make_market


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="covariance-var")
    args = ap.parse_args()
    market = make_market(strikes_per_expiry=111)
    book = make_book(market, n_structures=28)
    names = market.instrument_names
    print(f"{len(names)} listed instruments")
    rng = np.random.default_rng(0)
    others = [n for n in names if n not in book.positions]
    for size in args.sizes:
        extra = list(rng.choice(others, size=min(size - len(book), len(others)), replace=False))
        spec = {"universe": book.names + extra,
                "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
                "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
                "trade_bounds": {"max_open_interest_fraction": 0.25}}
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            try:
                p = mo.optimize(book, market, args.model, spec)
            except mo.MarginoptError as exc:
                print(f"{size}: {type(exc).__name__}: {str(exc)[:400]}")
                break
            times.append(time.perf_counter() - t)
        else:
            q = np.array([abs(t.quantity) for t in p.trades]) if p.trades else np.zeros(1)
            dust = int(np.sum(q < 1e-6 * q.max()))
            gap = abs((p.solver_margin_usd or np.nan) - p.margin_after.initial_margin_usd) / max(
                p.margin_after.initial_margin_usd, 1.0)
            print(f"{size}: {statistics.median(times):.2f} s, {p.status}, {p.solver} ({p.solver_status}), "
                  f"saved {p.margin_saved_pct:.2f}%, {len(p.trades)} trades ({dust} dust), "
                  f"solver/calculator rel gap {gap:.2e}, verified: {p.verified_by}")


if __name__ == "__main__":
    main()
