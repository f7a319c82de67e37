"""watch's per-cycle latency, fetching excluded: a 40-position book on a 2,000-instrument snapshot.

Each cycle is what ``marginopt watch --folder`` does with a snapshot that arrived: read
``market.json`` from disk (about 2,000 book-summary rows), then re-optimise the book with the one
warm ``Watcher`` (its Rebalancer keeps the solver models between cycles). The market moves
between cycles (index and forwards by +/-0.2 to 0.4%, implied vols by +0.1 or +0.2 points), as
a live market does between two fetches. Printed side by side: the first (cold) cycle and the
median of the warm ones, split into load and optimise, for two specs:

- ``held+futures``: the demo desk's spec (trade the held options, perpetuals and futures);
- ``listed``: every listed instrument is a candidate (2,000 columns).

    python benchmarks/bench_watch.py [--cycles 12]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import marginopt as mo
from marginopt.live import Watcher, load_snapshot, write_snapshot
from marginopt.live._watch import Tick
from marginopt.synthetic import make_book, make_market

SPECS = {
    "held+futures": {"universe": "held+futures",
                     "relative_limits": {"BTC": {"delta": [-5, 5], "vega": [-150, 150]},
                                         "ETH": {"delta": [-30, 30], "vega": [-100, 100]}},
                     "trade_bounds": {"max_open_interest_fraction": 0.25, "turnover_usd": 3_000_000}},
    "listed": {"universe": "listed",
               "relative_limits": {"BTC": {"delta": [-5, 5], "vega": [-150, 150]},
                                   "ETH": {"delta": [-30, 30], "vega": [-100, 100]}},
               "trade_bounds": {"max_open_interest_fraction": 0.25, "turnover_usd": 3_000_000}},
}


def moved(market: mo.MarketSnapshot, k: int) -> mo.MarketSnapshot:
    rows = market.rows.copy()
    f = 1.0 + 0.002 * ((k % 5) - 2 or 1)
    rows["underlying_price"] *= f
    rows["mark_iv"] += 0.1 * (1 + k % 2)
    return mo.MarketSnapshot(market.valuation_time, {u: p * f for u, p in market.index_prices.items()}, rows)


def snapshots(folder: Path, market: mo.MarketSnapshot, book: mo.Portfolio, n: int) -> list[Path]:
    """``n`` snapshot folders as fetch writes them (market and positions)."""
    positions = [{"instrument_name": k, "size": v, "size_currency": v} for k, v in book.positions.items()]
    out = []
    for k in range(n):
        m = market if k == 0 else moved(market, k)
        data = {"market": m.to_dict(), "account": True, "positions": {"positions": positions},
                "open_orders": {"orders": []},
                "account_summary": {"summaries": {"BTC": {"margin_model": "segregated_pm"}}}}
        out.append(write_snapshot(data, folder, venue="deribit", currencies=["BTC", "ETH"], testnet=True))
    return out


def run(spec: dict, paths: list[Path]) -> dict[str, list[float]]:
    w = Watcher("deribit-pm", spec)
    t: dict[str, list[float]] = {"load": [], "optimise": [], "cycle": []}
    for p in paths:
        t0 = time.perf_counter()
        snap = load_snapshot(p)
        market, book = snap.market, snap.portfolio()
        t1 = time.perf_counter()
        report = w.step(Tick(p.name, market, book, model="deribit-pm"))
        t2 = time.perf_counter()
        t["load"].append(t1 - t0)
        t["optimise"].append(t2 - t1)
        t["cycle"].append(t2 - t0)
        assert report.status is not None, report.why
        t.setdefault("status", []).append(report.status)
        t.setdefault("emitted", []).append(report.emitted)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=12)
    args = ap.parse_args()
    market = make_market(strikes_per_expiry=110)
    full = make_book(market, n_structures=30)
    book = mo.Portfolio(dict(list(full.positions.items())[:40]))
    print(f"snapshot: {len(market.rows)} instruments; book: {len(book)} positions; "
          f"{args.cycles} cycles per spec (the first cold)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = snapshots(Path(tmp), market, book, args.cycles)
        print(f"{'spec':<14} {'cycle':>10} {'load s':>9} {'optimise s':>11} {'total s':>9}")
        for name, spec in SPECS.items():
            t = run(spec, paths)
            for label, pick in (("cold", lambda v: v[0]), ("warm med", lambda v: statistics.median(v[1:]))):
                print(f"{name:<14} {label:>10} {pick(t['load']):>9.3f} {pick(t['optimise']):>11.3f} "
                      f"{pick(t['cycle']):>9.3f}")
            print(f"{name:<14} statuses {sorted(set(t['status']))}, {sum(t['emitted'])} of "
                  f"{len(paths)} cycles emitted a proposal")
            print(f"{name:<14} {'cold/warm':>10} {'':>9} {t['optimise'][0] / statistics.median(t['optimise'][1:]):>10.1f}x "
                  f"{t['cycle'][0] / statistics.median(t['cycle'][1:]):>8.1f}x")


if __name__ == "__main__":
    main()
