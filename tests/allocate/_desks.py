"""Random desks for the allocation tests and ``benchmarks/bench_allocate.py``: small books on the
sample snapshot, Deribit PM and standard subaccounts under one or two main accounts, with and
without desk limits and equity; and an independent checker of an allocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import marginopt as mo
from marginopt.allocate import Account, Allocation
from marginopt.cli import sample_paths

LIMIT_TOL = 1e-9


def sample_market() -> mo.MarketSnapshot:
    return mo.load_market(sample_paths()["market"])


def _pool(market: mo.MarketSnapshot) -> list[str]:
    """Coin-settled BTC and ETH options, futures and perpetuals of the snapshot."""
    out = []
    for name in market.instrument_names:
        inst = mo.parse_instrument(name)
        if inst.settlement.value == "inverse" and inst.underlying in ("BTC", "ETH"):
            out.append(name)
    return sorted(out)


@dataclass
class Desk:
    accounts: list[Account]
    rules: dict[str, Any]
    #: what each account's spec is, for optimising it alone
    specs: list[dict[str, Any]] = field(default_factory=list)


def random_desk(rng: np.random.Generator, market: mo.MarketSnapshot, *, constrained: bool,
                standard: bool) -> Desk:
    """2-3 accounts of 2-5 positions each. ``constrained``: desk limits around today's aggregate
    delta and equity for every account; ``standard``: one account on deribit-standard."""
    pool = _pool(market)
    n_accounts = int(rng.integers(2, 4))
    mains = ["m1"] * n_accounts
    if n_accounts == 3 and rng.random() < 0.4:
        mains[2] = "m2"  # a subaccount of another main account: nothing moves to or from it
    accounts, specs = [], []
    for k in range(n_accounts):
        und = str(rng.choice(["BTC", "ETH"]))
        names = [n for n in pool if n.startswith(und)]
        held = rng.choice(names, size=int(rng.integers(2, 6)), replace=False)
        scale = 1.0 if und == "BTC" else 15.0
        book = {str(n): float(np.round(rng.normal(0, scale), 3)) or 0.5 for n in held}
        model = "deribit-standard" if standard and k == 0 else "deribit-pm"
        spec: dict[str, Any] = {"universe": str(rng.choice(["held", "held+futures"])),
                                "trade_bounds": {"max_quantity": float(rng.choice([2.0, 20.0]) * scale)}}
        if rng.random() < 0.5:
            spec["limits"] = {und: {"delta": float(rng.choice([3.0, 30.0])) * scale}}
        specs.append(spec)
        acct = Account.build(f"acct{k}", model=model, portfolio=book, market=market, spec=spec,
                             main_account=mains[k])
        accounts.append(acct)
    rules: dict[str, Any] = {"min_saving_usd": 0.0, "split_savings": False}
    if constrained:
        # desk limits around today's aggregate delta, equity above today's margin
        net = {"BTC": 0.0, "ETH": 0.0}
        for a in accounts:
            inputs = market.pricing_inputs(a.portfolio.instruments)
            for inst, d, q in zip(a.portfolio.instruments, inputs.coin_delta(), a.portfolio.quantities):
                net[inst.underlying] += d * q
        rules["limits"] = {u: {"delta": [v - float(rng.uniform(0.2, 3.0)) * (1 if u == "BTC" else 15),
                                         v + float(rng.uniform(0.2, 3.0)) * (1 if u == "BTC" else 15)]}
                           for u, v in net.items()}
        rules["transfers"] = {"allowed": True}
        rebuilt = []
        for a in accounts:
            m0 = mo.margin(a.portfolio, market, a.model).initial_margin_usd
            equity = {"USDC": float(m0 * rng.uniform(1.05, 3.0) + 1000.0)}
            rebuilt.append(Account.build(a.name, model=a.model, portfolio=a.portfolio, market=market,
                                         spec=a.spec, main_account=a.main_account, equity=equity,
                                         buffer_usd=float(0.01 * m0)))
        accounts = rebuilt
    return Desk(accounts, rules, specs)


def check_allocation(al: Allocation, desk: Desk, market: mo.MarketSnapshot) -> None:
    """Independent checks: margins recomputed by the calculator, moves net to zero within a main
    account and never leave it, equity less buffer respected, desk limits to 1e-9 of scale."""
    by_name = {a.name: a for a in desk.accounts}
    agg = {"BTC": 0.0, "ETH": 0.0}
    total = 0.0
    for res in al.accounts:
        acct = by_name[res.name]
        change: dict[str, float] = {}
        for t in res.trades:
            change[t.instrument_name] = change.get(t.instrument_name, 0.0) + t.quantity
        for n, q in res.moves.items():
            change[n] = change.get(n, 0.0) + q
        post = acct.portfolio.apply(change)
        m = mo.margin(post, market, acct.model).initial_margin_usd
        assert m == res.margin_after.initial_margin_usd or abs(m - res.margin_after.initial_margin_usd) <= \
            1e-9 * max(m, 1.0), (res.name, m, res.margin_after.initial_margin_usd)
        total += m
        if acct.equity is not None:
            room = res.equity_after_usd - acct.buffer_usd - res.cost_usd
            assert m <= room + 1e-9 * max(abs(room), 1.0), (res.name, m, room)
        if post.positions:
            inputs = market.pricing_inputs(post.instruments)
            for inst, d, q in zip(post.instruments, inputs.coin_delta(), post.quantities):
                agg[inst.underlying] += d * q
    assert abs(al.margin_after_usd - total) <= 1e-9 * max(total, 1.0)
    if al.solver_margin_usd is not None:
        tol = sum(1e-7 * max(a.margin_before.initial_margin_usd, a.margin_after.initial_margin_usd) + 1e-4
                  for a in al.accounts)
        assert abs(al.solver_margin_usd - total) <= tol
    if al.status != "restores_limits":
        assert total <= al.margin_before_usd * (1 + 1e-12) + 1e-9
    # moves: net zero per instrument within a main account, none between main accounts
    per_main: dict[tuple[str, str], list[float]] = {}
    for res in al.accounts:
        acct = by_name[res.name]
        for n, q in res.moves.items():
            per_main.setdefault((acct.main_account, n), []).append(q)
    for (main, n), qs in per_main.items():
        assert abs(sum(qs)) <= 1e-12 * max(sum(abs(q) for q in qs), 1.0), (main, n, qs)
        holders = [a for a in desk.accounts if a.main_account == main]
        assert len(holders) >= 2 or not any(qs)
    for mv in al.moves:
        assert by_name[mv.from_account].main_account == by_name[mv.to_account].main_account
        assert by_name[mv.from_account].venue == by_name[mv.to_account].venue
    # desk limits, recomputed from the post-allocation books
    for und, lim in (desk.rules.get("limits") or {}).items():
        lo, hi = lim["delta"]
        scale = max(abs(lo), abs(hi), 1.0)
        assert lo - LIMIT_TOL * scale <= agg[und] <= hi + LIMIT_TOL * scale, (und, agg[und], lo, hi)
