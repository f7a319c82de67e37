from __future__ import annotations

import pytest

import marginopt as mo
from marginopt.cli import sample_paths
from marginopt.rebalance import Proposal

LIMIT_TOL = 1e-9


@pytest.fixture(scope="session")
def sample():
    paths = sample_paths()
    return (mo.load_portfolio(paths["portfolio"]), mo.load_market(paths["market"]),
            mo.load_spec(paths["spec"]))


def assert_sound(p: Proposal, before: mo.MarginResult | None = None) -> None:
    """What every optimisation must satisfy: the calculator's margin after <= before (unless
    the book broke a limit), every limit holds to 1e-9 x scale, the saving is before - after."""
    if p.status != "restores_limits":
        assert p.margin_after.initial_margin_usd <= p.margin_before.initial_margin_usd + 1e-9
    for lim in p.limits:
        scale = max(abs(lim.lower or 0.0), abs(lim.upper or 0.0), 1.0)
        if lim.lower is not None:
            assert lim.after >= lim.lower - LIMIT_TOL * scale, lim
        if lim.upper is not None:
            assert lim.after <= lim.upper + LIMIT_TOL * scale, lim
    assert p.margin_saved_usd == pytest.approx(
        p.margin_before.initial_margin_usd - p.margin_after.initial_margin_usd, rel=0, abs=1e-12)
    if before is not None:
        assert p.margin_before.initial_margin_usd == pytest.approx(before.initial_margin_usd, rel=1e-12)
    if p.status == "no_trade":
        assert not p.trades
        assert p.reason


def recompute_after(book: mo.Portfolio, market, model, p: Proposal) -> mo.MarginResult:
    return mo.margin(book.apply(p.trade_quantities), market, model)
