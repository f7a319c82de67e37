"""The optimizer's view of each convex component equals the calculator's: the cvxpy expression
built from Parameters holding ``values(scale)``, evaluated at a fixed x, equals
``evaluate(x, values(scale))``; and every rule is positively homogeneous in its arrays."""

import cvxpy as cp
import numpy as np
import pytest

from .conftest import CASES

SCALES = (1.0, 59_000.0, 0.37)


def parameters(comp, scale):
    return {k: cp.Parameter(v.shape, nonneg=k not in comp.signed_values, value=v, name=k)
            for k, v in comp.values(scale).items()}


def points(case, rng):
    n = case.book.size
    yield case.book
    yield -case.book
    for _ in range(3):
        yield np.where(rng.random(n) < 0.3, rng.normal(0, 20, n), 0.0)


def expression_value(term, x, comp, values, xv):
    """Value of the term's expression at x = xv. Auxiliary variables (the expected shortfall's
    VaR level) are set to their minimising value, so the expression is the rule itself."""
    for var in term.expression.variables():
        if var is x:
            continue
        losses = np.sort(-(values["pnl"] @ xv))[::-1]
        whole = int(np.floor((1.0 - comp.level) * losses.size + 1e-12))
        var.value = np.array(losses[min(whole, losses.size - 1)])  # the VaR: argmin of R-U
    return float(term.expression.value)


@pytest.mark.parametrize("cid", CASES)
@pytest.mark.parametrize("scale", SCALES)
def test_expression_equals_evaluate(convex_cases, cid, scale):
    case = convex_cases[cid]
    comp = case.component
    params = parameters(comp, scale)
    x = cp.Variable(case.book.size, name="x")
    term = comp.term(x, params)
    assert cp.Problem(cp.Minimize(term.expression), term.constraints).is_dcp(dpp=True)
    values = comp.values(scale)
    rng = np.random.default_rng(abs(hash(cid)) % 2**32)
    for xv in points(case, rng):
        x.value = xv
        want = comp.evaluate(xv, values)
        got = expression_value(term, x, comp, values, xv)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * scale), (cid, scale)
        for c in term.constraints:
            assert np.all(c.violation() <= 1e-9)


@pytest.mark.parametrize("cid", CASES)
def test_values_are_homogeneous(convex_cases, cid):
    """evaluate(x, values(s)) == s * evaluate(x, values(1))."""
    case = convex_cases[cid]
    comp = case.component
    rng = np.random.default_rng(3)
    base = comp.values(1.0)
    for xv in points(case, rng):
        one = comp.evaluate(xv, base)
        assert comp.evaluate(xv) == one  # values() defaults to scale 1
        for s in SCALES + (1e-3, 2.5e4):
            assert comp.evaluate(xv, comp.values(s)) == pytest.approx(s * one, rel=1e-12, abs=1e-300)


def test_expected_shortfall_solved_by_cvxpy(convex_cases):
    """With the VaR level left free, the solver's minimum of the Rockafellar-Uryasev form is the
    expected shortfall the calculator sorts out."""
    case = convex_cases["scenario-es/ALL/initial/expected_shortfall"]
    comp = case.component
    params = parameters(comp, 1.0)
    x = cp.Variable(case.book.size)
    term = comp.term(x, params)
    prob = cp.Problem(cp.Minimize(term.expression), [*term.constraints, x == case.book])
    prob.solve(solver=cp.CLARABEL)
    want = comp.evaluate(case.book)
    assert want > 0
    assert prob.value == pytest.approx(want, rel=1e-6)


def test_one_problem_resolves_with_new_parameter_values(convex_cases):
    """The DPP point of Parameters: the same compiled problem gives the margin at another scale.
    HiGHS (an LP): CLARABEL 0.11.1 under cvxpy 1.9.3 answers 'unbounded' when this problem is
    re-solved after its Parameters jump from scale 1 to 59,000 (extended-table dampeners reach
    1.8e11 USD); a fresh CLARABEL solve at either scale is fine."""
    case = convex_cases["deribit-pm/BTC/initial/worst_case"]
    comp = case.component
    params = parameters(comp, 1.0)
    x = cp.Variable(case.book.size)
    term = comp.term(x, params)
    prob = cp.Problem(cp.Minimize(term.expression), [*term.constraints, x == case.book])
    prob.solve(solver=cp.HIGHS)
    assert prob.value == pytest.approx(comp.evaluate(case.book), rel=1e-6)
    for k, v in comp.values(59_000.0).items():
        params[k].value = v
    prob.solve(solver=cp.HIGHS)
    assert prob.value == pytest.approx(59_000.0 * comp.evaluate(case.book), rel=1e-6)
