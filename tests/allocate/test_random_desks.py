"""On random desks: optimising each account alone is feasible for the joint problem (when it meets
the desk's limits and equity), so the joint total never exceeds the sum of the separate optima;
and every allocation passes the independent checks of ``_desks.check_allocation``."""

from __future__ import annotations

import numpy as np
import pytest

import marginopt as mo
from marginopt.allocate import allocate

from ._desks import check_allocation, random_desk, sample_market

N_FREE = 50          # desks with no desk limits and no equity: the inequality always applies
N_CONSTRAINED = 12   # desks with desk limits and equity: it applies where the separate optima fit


@pytest.fixture(scope="module")
def market():
    return sample_market()


def _separate(desk, market):
    """Each account optimised alone (``marginopt.optimize``, its own spec): the post-trade books,
    and the objective the joint problem minimises (margin plus cost, summed)."""
    books, objective = [], 0.0
    for acct, spec in zip(desk.accounts, desk.specs):
        p = mo.optimize(acct.portfolio, market, acct.model, {**spec, "min_saving_usd": 0.0})
        books.append((acct, acct.portfolio.apply(p.trade_quantities), p))
        objective += p.margin_after.initial_margin_usd + p.cost_usd
    return books, objective


def _fits(desk, market, books) -> bool:
    """Whether the separate optima meet the desk's limits and every account's equity."""
    agg = {"BTC": 0.0, "ETH": 0.0}
    for acct, post, p in books:
        if acct.equity is not None and p.margin_after.initial_margin_usd + p.cost_usd > \
                acct.equity_usd - acct.buffer_usd:
            return False
        if post.positions:
            inputs = market.pricing_inputs(post.instruments)
            for inst, d, q in zip(post.instruments, inputs.coin_delta(), post.quantities):
                agg[inst.underlying] += d * q
    for und, lim in (desk.rules.get("limits") or {}).items():
        lo, hi = lim["delta"]
        if not lo <= agg[und] <= hi:
            return False
    return True


def _run(seed: int, market, *, constrained: bool) -> tuple[bool, float, float]:
    rng = np.random.default_rng(seed)
    desk = random_desk(rng, market, constrained=constrained, standard=seed % 10 == 3)
    al = allocate(desk.accounts, desk.rules)
    check_allocation(al, desk, market)
    books, separate = _separate(desk, market)
    joint = al.margin_after_usd + al.cost_usd + al.fees_usd
    fits = _fits(desk, market, books)
    if fits:
        tol = 1e-7 * max(al.margin_before_usd, 1.0) + 1e-4 * len(desk.accounts)
        assert joint <= separate + tol, (seed, joint, separate)
    return fits, joint, separate


def test_joint_never_above_separate_optima(market):
    compared = 0
    for seed in range(N_FREE):
        fits, _, _ = _run(seed, market, constrained=False)
        assert fits  # no desk limit, no equity: the separate optima are always feasible jointly
        compared += 1
    assert compared >= 50


def test_constrained_desks_keep_desk_limits_and_equity(market):
    fitted = 0
    for seed in range(1000, 1000 + N_CONSTRAINED):
        fits, _, _ = _run(seed, market, constrained=True)
        fitted += fits
    assert fitted >= 1  # the inequality was exercised under desk limits and equity too
