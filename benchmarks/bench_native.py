"""The native LP path against the cvxpy path: deribit-pm, BTC + ETH, 300 and 2,000 candidates.

Per size, in one run and side by side (medians over repeats):

- cold: a new Rebalancer (build, solve both stages, verify) on the base snapshot;
- warm: the same Rebalancer on a moved snapshot of the same universe (index +/- 0.2 to 0.4%,
  implied vols +0.1 or +0.2 points): the native model's numbers change in place (or are passed
  whole) and HiGHS starts from the last basis; the cvxpy problem updates its Parameters;
- raw: the persistent HiGHS model alone on the same LPs: loading a moved snapshot's numbers
  (``NativeProblem.update``), both stages as the Rebalancer runs them, the HiGHS ``run`` time
  of each, and a bare hot stage-1 run from the previous snapshot's basis (no uniqueness check);
  how many hot answers were not provably the only optimum and were solved as a fresh model.

    python benchmarks/bench_native.py [--repeats 5] [--sizes 300 2000 4000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import marginopt as mo
from marginopt.rebalance._native import NativeProblem, lp_blocks
from marginopt.synthetic import make_book, make_market


def moved(market: mo.MarketSnapshot, k: int) -> mo.MarketSnapshot:
    rows = market.rows.copy()
    f = 1.0 + 0.002 * ((k % 5) - 2 or 1)
    rows["underlying_price"] *= f
    rows["mark_iv"] += 0.1 * (1 + k % 2)
    return mo.MarketSnapshot(market.valuation_time, {u: p * f for u, p in market.index_prices.items()}, rows)


def case(candidates: int) -> tuple[mo.Portfolio, mo.MarketSnapshot, dict]:
    if candidates <= 480:
        market = make_market(strikes_per_expiry=17)
    elif candidates <= 2032:
        market = make_market(strikes_per_expiry=111)  # Deribit's BTC + ETH listing, ~2,000
    else:
        market = make_market(strikes_per_expiry=222, strike_step=0.5)  # ~4,000 instruments
    book = make_book(market, n_structures=28)
    rng = np.random.default_rng(0)
    others = [n for n in market.instrument_names if n not in book.positions]
    extra = list(rng.choice(others, size=min(candidates - len(book), len(others)), replace=False))
    spec = {"universe": book.names + extra,
            "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
            "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    return book, market, spec


def run_path(book, market, spec, path: str, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"cold": [], "warm": [], "warm data": [], "warm solve": [],
                                   "warm verify": []}
    for k in range(repeats):
        t = time.perf_counter()
        reb = mo.Rebalancer("deribit-pm", {**spec, "solver": path})
        p = reb.optimize(book, market)
        out["cold"].append(time.perf_counter() - t)
        for j in range(2):  # the second warm solve starts from a moved snapshot's basis
            snap = moved(market, 2 * k + j + 1)
            t = time.perf_counter()
            q = reb.optimize(book, snap)
            if j:
                out["warm"].append(time.perf_counter() - t)
                out["warm data"].append(q.timings["data"])
                out["warm solve"].append(q.timings["build"] + q.timings["solve"])
                out["warm verify"].append(q.timings["verify"])
        assert q.solver == ("HIGHS (native)" if path == "native" else "HIGHS"), q.solver
        out.setdefault("margin", []).append(q.margin_after.initial_margin_usd)
        out.setdefault("trades", []).append(len(q.trades))
    out["proposal"] = [p]  # type: ignore[list-item]
    return out


def raw(book, market, spec, repeats: int) -> dict[str, list[float]]:
    reb = mo.Rebalancer("deribit-pm", spec)
    snaps = [reb.problem_data(book, moved(market, k)) for k in range(1, 2 * repeats + 2)]
    blocks = [lp_blocks(d, reb.spec) for d in snaps]
    model = NativeProblem(snaps[0], reb.spec, blocks[0])
    model.solve()
    bare = NativeProblem(snaps[0], reb.spec, blocks[0])  # stage 1 alone, hot, nothing else
    bare.solve()
    out: dict[str, list[float]] = {"load": [], "solve": [], "stage 1 run": [], "stage 2 run": [],
                                   "bare hot run": []}
    for d, b in zip(snaps[1:], blocks[1:]):
        t = time.perf_counter()
        model.update(d, b)
        out["load"].append(time.perf_counter() - t)
        t = time.perf_counter()
        answers = model.solve()
        out["solve"].append(time.perf_counter() - t)
        out["stage 1 run"].append(answers.reports[0].seconds)
        s2 = answers.tiebreak
        out["stage 2 run"].append(s2.reports[-1].seconds if s2 is not None else float("nan"))
        bare.update(d, b)
        t = time.perf_counter()
        bare.h.run()
        out["bare hot run"].append(time.perf_counter() - t)
    out["shape"] = [(model.num.row_lower.size, model.num.col_lower.size, model.vals.size,  # type: ignore[list-item]
                     model.fresh_solves, len(snaps) - 1)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 2000, 4000])
    args = ap.parse_args()
    ms = lambda xs: f"{1000 * statistics.median(xs):9.1f}"  # noqa: E731
    print(f"deribit-pm, BTC + ETH; medians over {args.repeats} repeats, milliseconds\n")
    head = (f"{'candidates':>10} {'path':>7} {'cold':>9} {'warm':>9} {'  data':>9} {' solve':>9} "
            f"{'verify':>9}")
    print(head)
    print("-" * len(head))
    raws = {}
    for n in args.sizes:
        book, market, spec = case(n)
        warm = {}
        for path in ("native", "cvxpy"):
            r = run_path(book, market, spec, path, args.repeats)
            warm[path] = statistics.median(r["warm"])
            print(f"{len(spec['universe']):>10} {path:>7} {ms(r['cold'])} {ms(r['warm'])} "
                  f"{ms(r['warm data'])} {ms(r['warm solve'])} {ms(r['warm verify'])}")
        raws[n] = raw(book, market, spec, args.repeats)
        raws[n]["ratio"] = [warm["native"] / (statistics.median(raws[n]["load"])  # type: ignore[list-item]
                                              + statistics.median(raws[n]["solve"]))]
    print("\nraw persistent HiGHS model on the same LPs (moved snapshots, hot start from the previous one)")
    head = (f"{'candidates':>10} {'rows x cols (nonzeros)':>26} {'load':>7} {'solve':>7} {'stage 1':>8} "
            f"{'stage 2':>8} {'hot stage-1 run':>16} {'fresh re-solves':>16}")
    print(head)
    print("-" * len(head))
    for n, r in raws.items():
        rows, cols, nz, fresh, total = r["shape"][0]  # type: ignore[misc]
        print(f"{n:>10} {f'{rows} x {cols} ({nz:,})':>26} {ms(r['load'])[2:]} {ms(r['solve'])[2:]} "
              f"{ms(r['stage 1 run'])[1:]} {ms(r['stage 2 run'])[1:]} {ms(r['bare hot run']):>16} "
              f"{f'{fresh} of {total}':>16}")
    print("\nwarm native re-optimise (data, solve, verify, proposal) over the raw model's load + solve, "
          "same run: " + ", ".join(f"{n}: {r['ratio'][0]:.2f}x" for n, r in raws.items()))
    print("\nwarm = data + solve (load numbers, both stages) + verify + the proposal. solve = both "
          "stages as the Rebalancer runs them (answers copied out; a hot answer that is not the only "
          "optimum is solved again as a fresh model would: 'fresh re-solves'); stage 1/2 = HiGHS "
          "run time of each stage inside it; hot stage-1 run = HiGHS alone from the previous basis, "
          "no check")


if __name__ == "__main__":
    main()
