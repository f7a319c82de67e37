"""The trust-region SCP (``rebalance._scp``): its accept/reject logic on small non-convex functions
whose answer is known, Derive PM2's convex model (exact at the iterate), and the SCP on every
golden case at hand (chosen by property, not by name: ``MARGINOPT_DERIVE_CASES`` may point at any
subset)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import marginopt
from marginopt.allocate import Account, allocate
from marginopt.derive import (build_risk_arrays, initial_margin, load_case, load_case_as_book,
                              maintenance_margin, term_is_convex)
from marginopt.derive._convex import requirement_model
from marginopt.errors import Infeasible
from marginopt.rebalance._scp import TrustRegionRules, Trial, component_model, trust_region_scp

from ..derive._cases import CASE_FILES, CASE_PARAMS, close, require_cases

RULES = TrustRegionRules()


class Box1D:
    """A 1-D model: ``model(x_k)`` is a convex function of y (minimised over the box in closed
    form by ``argmin``), ``f`` the true function, ``ok`` the caller's other checks."""

    def __init__(self, f, model, argmin, ok=lambda y: True, infeasible_below=0.0):
        self.f, self.model, self.argmin, self.ok = f, model, argmin, ok
        self.infeasible_below = infeasible_below
        self.at = None
        self.solves = 0

    def relinearise(self, x):
        self.at = float(x[0])

    def step(self, centre, radius):
        self.solves += 1
        if radius[0] < self.infeasible_below:
            raise Infeasible("no point of the box meets the constraints", {})
        lo, hi = centre[0] - radius[0], centre[0] + radius[0]
        y = float(np.clip(self.argmin(self.at), lo, hi))
        m = self.model(self.at)
        return Trial(np.array([y]), m(y), self.ok(y), self.f(y))


def run(box, x0, rules=RULES):
    x0 = np.array([float(x0)])
    return trust_region_scp(box, x0, np.ones(1), box.f(x0[0]), True, rules)


def test_exact_branch_model_converges_to_the_local_minimum():
    """f = min(|x - 2|, |x + 3| + 0.5): not convex. From 0.5 the active branch is |x - 2|, and the
    model (that branch, exact) reaches its minimum x = 2 in two steps: the first stops at the
    box's edge (1.5) with rho = 1 and the radius doubles; the third solve predicts no decrease."""
    f = lambda y: min(abs(y - 2.0), abs(y + 3.0) + 0.5)
    branch = lambda x: (lambda y: abs(y - 2.0)) if abs(x - 2.0) <= abs(x + 3.0) + 0.5 \
        else (lambda y: abs(y + 3.0) + 0.5)
    centre = lambda x: 2.0 if abs(x - 2.0) <= abs(x + 3.0) + 0.5 else -3.0
    out = run(Box1D(f, branch, centre), 0.5)
    assert out.best is not None and out.best.point[0] == 2.0 and out.best.objective == 0.0
    assert out.iterations == 3 and out.stopped == "converged"
    assert [s.accepted for s in out.steps] == [True, True, False]
    assert [s.radius for s in out.steps] == [1.0, 2.0, 2.0]
    assert out.steps[0].ratio == 1.0 and out.steps[1].ratio == 1.0


def test_a_tangent_past_a_kink_is_rejected_and_the_region_shrinks():
    """f = |x| modelled by its tangent at x_k (slope 1 at 0.5): the full step to -0.5 predicts a
    decrease of 1 and gets none (rho = 0): rejected, the radius becomes a quarter of the step;
    the step to 0.25 is exact (rho = 1) at the edge: accepted, the radius doubles; and so on.
    Accepted objectives fall strictly and the iterate approaches the minimum 0 from above."""
    f = abs
    tangent = lambda x: (lambda y: abs(x) + np.sign(x) * (y - x))
    far = lambda x: -np.sign(x) * 1e9
    rules = TrustRegionRules(max_iterations=8)
    out = run(Box1D(f, tangent, far), 0.5, rules)
    assert out.stopped == "iteration cap" and out.iterations == 8
    assert [s.accepted for s in out.steps] == [False, True] * 4
    assert [s.radius for s in out.steps] == [1.0, 0.25, 0.5, 0.125, 0.25, 0.0625, 0.125, 0.03125]
    assert [s.ratio for s in out.steps] == [0.0, 1.0] * 4
    assert out.best.point[0] == pytest.approx(0.5 - 0.25 - 0.125 - 0.0625 - 0.03125, abs=0)
    accepted = [0.5] + [0.25, 0.125, 0.0625, 0.03125]
    assert out.best.objective == accepted[-1]


def test_a_step_failing_the_checks_is_rejected_whatever_its_ratio():
    """The same exact branch model, but the caller's checks refuse y > 1.2 (a rule the model does
    not know): the step to 1.5 is rejected although rho = 1; the shorter ones are taken."""
    f = lambda y: abs(y - 2.0)
    out = run(Box1D(f, lambda x: f, lambda x: 2.0, ok=lambda y: y <= 1.2), 0.5,
              TrustRegionRules(max_iterations=6))
    first = out.steps[0]
    assert not first.accepted and first.ratio == 1.0
    assert out.steps[1].accepted and out.steps[1].radius == 0.25
    assert all(out.best.point <= 1.2) and out.best.objective == f(out.best.point[0])
    # never a rise: every accepted step lowered the objective
    assert all(s.actual_decrease > 0 for s in out.steps if s.accepted)
    assert out.best.objective < f(0.5)


def test_an_infeasible_box_is_widened_before_any_step_is_taken():
    f = lambda y: abs(y - 2.0)
    box = Box1D(f, lambda x: f, lambda x: 2.0, infeasible_below=50.0)
    out = run(box, 0.5)
    assert out.best is not None and out.best.point[0] == 2.0
    assert out.steps[0].radius == 100.0   # widened once, 100 times
    box = Box1D(f, lambda x: f, lambda x: 2.0, infeasible_below=1e12)
    out = run(box, 0.5)
    assert out.best is None and out.stopped == "model infeasible"
    assert box.solves == RULES.widenings + 1


def test_no_acceptable_start_takes_the_first_step_that_passes():
    f = lambda y: abs(y - 2.0)
    box = Box1D(f, lambda x: f, lambda x: 2.0)
    out = trust_region_scp(box, np.array([0.5]), np.ones(1), f(0.5), False, RULES)
    assert out.steps[0].accepted and np.isnan(out.steps[0].ratio)
    assert out.best.point[0] == 2.0


# --------------------------------------------------------------------------- Derive's model
@pytest.mark.parametrize("path", CASE_PARAMS)
def test_derive_model_is_exact_at_the_iterate(path):
    """The model of every golden case, at the case's book and at a moved one, equals the
    requirement (``mtm - IM`` and ``mtm - MM``) there to the exchange's tolerance, for every
    number of rows; with every row and convex regular/tail losses it is exact along a short
    move as well (the only linearised rows are the skew ones, exact while their signs hold)."""
    arrays = build_risk_arrays(load_case(path))
    rng = np.random.default_rng(7)
    x0 = np.asarray(arrays.x0, dtype=float)
    moved = x0.copy()
    n = arrays.n_options
    moved[:n] += rng.normal(0.0, 1.0, n) * np.maximum(np.abs(x0[:n]), 1.0)
    moved[arrays.perp_col] += 0.5
    for v in (x0, moved):
        for initial, rule in ((True, initial_margin), (False, maintenance_margin)):
            want = rule(v, arrays).requirement
            for k in (None, 1, 3):
                assert close(requirement_model(v, arrays, k, initial=initial)(v), want), (k, initial)


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_component_model_in_pool_coordinates_is_the_calculators_margin(path):
    book, market, model = load_case_as_book(path)
    bound = model.bind(book.instruments, market)
    (pool,) = bound.pools
    (comp,) = pool.initial
    x = np.asarray(book.quantities, dtype=float)
    m = component_model(comp, x, comp.values(pool.usd_rate), None)
    assert close(m(x), comp.evaluate(x, comp.values(pool.usd_rate)))
    assert close(m(x), bound.initial_margin_usd(x))


# --------------------------------------------------------------------------- the SCP on cases
ITERATIONS = re.compile(r"(\d+) linearised solve")


@pytest.mark.parametrize("path", CASE_PARAMS)
def test_scp_on_every_golden_case(path):
    """As ``tests/derive/test_engine.py`` optimises a Derive book: the margin never rises, the
    proposal's margin is the calculator's on the post-trade book (1e-8), and the SCP converges
    (the model predicts no further decrease) within 4 solves (one tangent per step crept to the
    20-solve cap on case 63 and on 30 others)."""
    book, market, model = load_case_as_book(path)
    (und,) = market.index_prices
    spec = {"universe": "held", "costs": {"spread": False},
            "limits": {und: {"delta": 0.5, "vega": 200.0, "relative": True}},
            "trade_bounds": {"max_quantity": 1.0}}
    p = marginopt.optimize(book, market, model, spec=spec)
    before = marginopt.margin(book, market, model).initial_margin_usd
    after = marginopt.margin(book.apply(p.trade_quantities), market, model).initial_margin_usd
    assert close(p.margin_after.initial_margin_usd, after)
    assert close(p.margin_before.initial_margin_usd, before)
    assert after <= before + 1e-12 * max(before, 1.0)
    notes = [n for n in p.notes if "sequential convex programming" in n]
    assert len(notes) == 1, p.notes
    solves = int(ITERATIONS.search(notes[0]).group(1))
    # every published case, the non-convex ones too (test_97: regular and tail losses with
    # concave discount kinks; the skew rows' absolute values), converges in at most 2
    assert solves <= 4 and "stopped: converged" in notes[0], notes[0]
    if p.trades:
        assert p.status == "optimal" and p.margin_saved_usd > 0.0


def _spec(und):
    return {"universe": "held", "costs": {"spread": False},
            "limits": {und: {"delta": 0.5, "vega": 200.0, "relative": True}},
            "trade_bounds": {"max_quantity": 1.0}}


def test_the_allocation_runs_the_same_scp_as_the_rebalancer():
    """A desk of one Derive account (the golden case with the most options and convex regular and
    tail losses, whichever cases are at hand) is allocated by the rebalancer's SCP: the same
    margin after as ``optimize`` (to 1e-8 of it), each the calculator's, in as few solves."""
    require_cases()
    def convex_options(path):
        a = build_risk_arrays(load_case(path))
        ok = term_is_convex("worst_regular_loss", a) and term_is_convex("worst_tail_loss", a)
        return a.n_options if ok else -1
    path = max(CASE_FILES, key=convex_options)
    if convex_options(path) < 1:
        pytest.skip("no golden case at hand holds options with convex regular and tail losses")
    book, market, model = load_case_as_book(path)
    (und,) = market.index_prices
    p = marginopt.optimize(book, market, model, spec=_spec(und))
    al = allocate([Account.build("D", model=model, portfolio=book, market=market, venue="derive",
                                 spec=_spec(und))], {"split_savings": False})
    traded = {t.instrument_name: t.quantity for t in al.account("D").trades}
    after = marginopt.margin(book.apply(traded), market, model).initial_margin_usd
    assert close(al.margin_after_usd, after)
    assert abs(al.margin_after_usd - p.margin_after.initial_margin_usd) <= 1e-8 * p.margin_after.initial_margin_usd
    solves = [int(ITERATIONS.search(n).group(1)) for n in al.notes if ITERATIONS.search(n)]
    assert solves and max(solves) <= 4
