"""Desk allocation at scale: 10 accounts of about 40 positions and 300 candidates each, on two
venues, against optimising each account alone.

The desk (a synthetic market, ``marginopt.synthetic``, with USDC-settled BTC options added for
Derive at the same vols and forwards):

- Deribit, main account ``m1``: 4 portfolio-margin subaccounts (BTC and ETH books);
- Deribit, main account ``m2``: 4 portfolio-margin subaccounts (2 with ``--derive``);
- Deribit, main account ``m3``: 2 standard-margin subaccounts of option books with options-only
  universes (a standard account that may hold futures makes the desk a QP: see the note below);
- Derive (``--derive``): 2 accounts of USDC-settled BTC options (PM2, non-convex: sequential
  convex programming), in place of 2 of ``m2``'s.

A desk in which a standard-margin account may hold futures (held, traded or moved in) is a
quadratic program; SCIP solves small ones exactly, but on this desk's size it ran out of memory
(the machine's 24 GB): such desks are left for a later change.

Per repeat: cold (a new Allocator: data, build, solve, verify, moves-only split) and warm (the same
Allocator on a moved snapshot: index and vols shifted, the compiled problem re-used). Then the
saving of the joint allocation against each account optimised alone (``marginopt.optimize``):
the sum of the separate optima's margin plus cost against the joint's.

    python benchmarks/bench_allocate.py [--repeats 3] [--accounts 10] [--positions 40]
                                        [--candidates 300] [--derive]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

import marginopt as mo
from marginopt.allocate import Account, Allocator
from marginopt.synthetic import make_book, make_market


def moved(market: mo.MarketSnapshot, k: int) -> mo.MarketSnapshot:
    rows = market.rows.copy()
    f = 1.0 + 0.002 * ((k % 5) - 2 or 1)
    rows["underlying_price"] *= f
    rows["mark_iv"] += 0.1 * (1 + k % 2)
    return mo.MarketSnapshot(market.valuation_time, {u: p * f for u, p in market.index_prices.items()}, rows)


def with_usdc_options(market: mo.MarketSnapshot) -> mo.MarketSnapshot:
    """The BTC options again as USDC-settled contracts (marks in USD at the forward)."""
    rows = market.rows.reset_index()
    btc = rows[rows["instrument_name"].str.match(r"^BTC-\d")].copy()
    btc = btc[btc["instrument_name"].str.count("-") == 3]
    btc["mark_price"] = btc["mark_price"] * btc["underlying_price"]
    btc["bid_price"] = btc["bid_price"] * btc["underlying_price"]
    btc["ask_price"] = btc["ask_price"] * btc["underlying_price"]
    btc["instrument_name"] = btc["instrument_name"].str.replace("BTC-", "BTC_USDC-", n=1)
    rows = pd.concat([rows, btc], ignore_index=True)
    return mo.MarketSnapshot.from_rows(rows.to_dict(orient="records"), valuation_time=market.valuation_time,
                                       index_prices=dict(market.index_prices), source="synthetic+usdc")


def desk(market: mo.MarketSnapshot, n_accounts: int, positions: int, candidates: int,
         derive: bool, seed: int = 0, futures: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = market.instrument_names
    options = [n for n in names if n.count("-") == 3 and "_USDC" not in n]
    layout = [("deribit-pm", "m1")] * 4 + [("deribit-pm", "m2")] * 2 + [("deribit-standard", "m3")] * 2
    layout += [("derive-pm2", "derive")] * 2 if derive else [("deribit-pm", "m2")] * 2
    out = []
    for k, (model, main) in enumerate(layout[:n_accounts]):
        if model == "derive-pm2":
            pool = [n for n in names if n.startswith("BTC_USDC-") and n.count("-") == 3]
            held = list(rng.choice(pool, size=positions, replace=False))
            book = {n: float(np.round(rng.normal(0, 2.0), 1)) or 0.1 for n in held}
            rest = [n for n in pool if n not in held]   # every USDC BTC option there is, at most
            universe = held + list(rng.choice(rest, size=min(candidates - positions, len(rest)), replace=False))
            spec = {"universe": universe, "trade_bounds": {"max_quantity": 5.0},
                    "relative_limits": {"BTC": {"delta": [-5, 5]}}}
        else:
            base = make_book(market, n_structures=positions // 2 + 1, seed=100 + k)
            every = [n for n in names if "_USDC" not in n]
            pool = options if model == "deribit-standard" and not futures else every
            held = [n for n in base.names if n in pool][:positions]
            book = {n: base.positions[n] for n in held}
            others = [n for n in pool if n not in book]
            universe = held + list(rng.choice(others, size=max(candidates - len(held), 0), replace=False))
            # each account's delta within a band around today's (its book is inside its limits)
            spec = {"universe": universe, "trade_bounds": {"max_open_interest_fraction": 0.25},
                    "relative_limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-75, 75]}}}
        out.append({"name": f"acct{k:02d}", "model": model, "portfolio": book, "spec": spec,
                    "main_account": main})
    return out


def accounts(rows: list[dict], market: mo.MarketSnapshot) -> list[Account]:
    return [Account.build(r["name"], model=r["model"], portfolio=r["portfolio"], market=market,
                          spec=r["spec"], main_account=r["main_account"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--positions", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--derive", action="store_true")
    ap.add_argument("--futures", action="store_true",
                    help="standard-margin accounts may hold and trade futures (a QP desk)")
    ap.add_argument("--solver", default=None, help="the joint problem's solver (default: the chain)")
    args = ap.parse_args()
    market = make_market(strikes_per_expiry=17)
    if args.derive:
        market = with_usdc_options(market)
    rows = desk(market, args.accounts, args.positions, args.candidates, args.derive,
                futures=args.futures)
    rules = {"limits": {"BTC": {"delta": [-10, 10], "relative": True},
                        "ETH": {"delta": [-150, 150], "relative": True}},
             "moves": {"allowed": True}, "min_saving_usd": 1.0,
             **({"solver": args.solver} if args.solver else {})}
    ms = lambda xs: f"{1000 * statistics.median(xs):10.1f}"  # noqa: E731
    cold, warm, parts = [], [], []
    allocation = None
    for k in range(args.repeats):
        t = time.perf_counter()
        allocator = Allocator(rules)
        allocation = allocator.allocate(accounts(rows, market))
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        again = allocator.allocate(accounts(rows, moved(market, k + 1)))
        warm.append(time.perf_counter() - t)
        parts.append(again.timings)
        assert allocator.builds == 1, "the warm allocation recompiled"
    assert allocation is not None
    n_pos = [len(r["portfolio"]) for r in rows]
    n_cand = [len(r["spec"]["universe"]) for r in rows]
    print(f"{len(rows)} accounts ({', '.join(sorted({r['model'] for r in rows}))}), positions "
          f"{min(n_pos)}-{max(n_pos)}, candidates {min(n_cand)}-{max(n_cand)}; problem class "
          f"{allocation.problem_class}, solver {allocation.solver}; medians of {args.repeats}, ms\n")
    print(f"{'cold':>10} {'warm':>10} {'warm data':>10} {'warm solve':>10} {'moves-only':>10}")
    print(f"{ms(cold)} {ms(warm)} {ms([p['data'] for p in parts])} "
          f"{ms([p['build'] + p['solve'] for p in parts])} {ms([p.get('moves_only', 0.0) for p in parts])}")
    # each account alone
    t = time.perf_counter()
    separate = 0.0
    for r in rows:
        p = mo.optimize(r["portfolio"], market, r["model"], {**r["spec"], "min_saving_usd": 0.0})
        separate += p.margin_after.initial_margin_usd + p.cost_usd
    alone_s = time.perf_counter() - t
    joint = allocation.margin_after_usd + allocation.cost_usd + allocation.fees_usd
    print(f"\nmargin before {allocation.margin_before_usd:,.0f} USD; each account alone (margin + cost) "
          f"{separate:,.0f} USD in {alone_s:.1f} s; joint {joint:,.0f} USD "
          f"(moves alone save {allocation.saving_from_moves_usd or 0.0:,.0f}, trades add "
          f"{allocation.saving_from_trades_usd or 0.0:,.0f})")
    print(f"joint saves {separate - joint:,.0f} USD more than optimising each account alone "
          f"({100 * (separate - joint) / separate:.1f}% of the separate optima); {len(allocation.moves)} moves, "
          f"{sum(len(a.trades) for a in allocation.accounts)} trades; status {allocation.status}")


if __name__ == "__main__":
    main()
