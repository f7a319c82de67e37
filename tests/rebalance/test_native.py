"""The native LP path (a persistent HiGHS model, ``rebalance/_native.py``) against the cvxpy
reference problem: each component's LP rows against the calculator, both paths on random books
and models, hot starts against cold solves, and the path choice in the spec."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import linprog

import marginopt as mo
from marginopt.errors import MarginoptError, OptimizationError, SolverFailed, SpecError
from marginopt.margins._components import (AbsExposure, ExpectedShortfall, RiskMatrix, ShortCharge,
                                          SizeCharge)
from marginopt.rebalance._native import SOLVER, NativeProblem, lp_blocks
from marginopt.synthetic import make_book, make_market

from ._audit import make_case

REL = 1e-8


# ----------------------------------------------------------------------------- components
def _block_value(rows: mo.LinearRows, x: np.ndarray) -> float:
    """min cost @ a over the block's rows with the positions fixed at ``x`` (scipy's HiGHS)."""
    shift = rows.x_times(x)
    a = np.zeros((rows.n_rows, rows.n_cols))
    r, c, v = rows.a_matrix
    np.add.at(a, (r, c), v)
    lo, hi = rows.row_lower - shift, rows.row_upper - shift
    up, dn = np.isfinite(hi), np.isfinite(lo)
    res = linprog(rows.cost, A_ub=np.vstack([a[up], -a[dn]]), b_ub=np.concatenate([hi[up], -lo[dn]]),
                  bounds=list(zip(np.where(np.isfinite(rows.col_lower), rows.col_lower, None),
                                  np.where(np.isfinite(rows.col_upper), rows.col_upper, None))),
                  method="highs", options={"primal_feasibility_tolerance": 1e-10})
    assert res.status == 0, res.message
    return float(res.fun)


def _components(rng: np.random.Generator, m: int) -> list:
    s = 40
    pnl = rng.normal(0, 100, (s, m))
    member = rng.integers(0, 4, m)
    exposure = np.zeros((4, m))
    exposure[member, np.arange(m)] = rng.normal(0, 50, m)
    charge = np.where(rng.random(m) < 0.6, rng.uniform(1, 30, m), 0.0)
    return [
        RiskMatrix("rm", tuple(map(str, range(s))), pnl, rng.uniform(0.5, 1, s),
                   rng.uniform(-20, 50, s), 0.0),  # negative dampeners: the gain branch counts
        RiskMatrix("rm_offset", tuple(map(str, range(s))), pnl, np.ones(s), rng.uniform(0, 50, s), 0.6),
        AbsExposure("roll", exposure, ("a", "b", "c", "d")),
        SizeCharge("futures", np.where(rng.random(m) < 0.5, rng.uniform(1, 9, m), 0.0), np.zeros(m)),
        ShortCharge("shorts", charge),
        ExpectedShortfall("es", tuple(map(str, range(s))), pnl, 0.9),
    ]


def test_each_component_lp_rows_give_the_calculators_value():
    rng = np.random.default_rng(3)
    m = 7
    for comp in _components(rng, m):
        for scale in (1.0, 2500.0):
            values = comp.values(scale)
            rows = comp.linear_rows(values)
            for _ in range(5):
                x = rng.normal(0, 3, m) * (rng.random(m) < 0.8)
                want = comp.evaluate(x, values)
                assert _block_value(rows, x) == pytest.approx(want, rel=1e-9, abs=1e-7), comp.name


def test_a_quadratic_size_charge_has_no_lp_form():
    comp = SizeCharge("futures", np.ones(3), np.array([0.0, 1e-5, 0.0]))
    assert comp.term_cone() == "quadratic"
    assert comp.linear_rows(comp.values()) is None


# ----------------------------------------------------------------------------- random cases
def _objective(raw, spec) -> float:
    weight = spec.cost_weight if spec.objective == "margin_plus_cost" else 1.0
    margin = 0.0 if spec.objective == "free_margin" else raw.objective_margin_usd
    return margin + weight * raw.cost_usd


def _run(case, path):
    reb = mo.Rebalancer(case.model, {**case.spec, "solver": path})
    try:
        return reb, reb.optimize(case.book, case.market)
    except OptimizationError as exc:
        return reb, exc


def test_native_and_cvxpy_agree_on_random_books_and_models():
    """On at least 100 native-eligible audit cases: the same stage-1 objective (to 1e-8 of the
    larger of it and the margin before) and a verified proposal from each path (or the same
    verdict); the native path answers them itself."""
    compared = fell_back = errors = 0
    for seed in range(1200):
        case = make_case(seed)
        if case.spec.get("solver"):
            continue
        try:
            reb = mo.Rebalancer(case.model, case.spec)
            data = reb.problem_data(case.book, case.market)
        except MarginoptError:
            continue
        if isinstance(lp_blocks(data, reb.spec), str):
            continue
        reb_n, pn = _run(case, "native")
        reb_c, pc = _run(case, "cvxpy")
        if isinstance(pn, Exception) or isinstance(pc, Exception):
            assert type(pn) is type(pc), (case.describe(), pn, pc)
            compared += 1
            errors += 1
            continue
        assert pc.solver == "HIGHS"
        fell_back += pn.solver != SOLVER
        for p in (pn, pc):  # verified: the verifier named the answer that ships
            assert p.verified_by, case.describe()
        # the stage-1 optima, re-solved on the models each Rebalancer kept
        if pn.solver == SOLVER:
            native = next(iter(reb_n.native._models.values()))
            cvx = next(iter(reb_c._problems.values()))
            a = _objective(native.solve(fresh=True).stage1, reb_n.spec)
            b = _objective(cvx.solve("HIGHS")[0], reb_c.spec)
            scale = max(abs(a), abs(b), data.margin_before_usd, 1.0)
            assert abs(a - b) <= REL * scale, (case.describe(), a, b)
        before = pn.margin_before.initial_margin_usd
        assert pn.margin_after.initial_margin_usd == pytest.approx(
            pc.margin_after.initial_margin_usd, rel=0, abs=REL * max(before, 1.0) + 1e-6) \
            or case.spec.get("objective") != "min_margin", case.describe()
        compared += 1
        if compared >= 100:
            break
    print(f'{compared} cases compared, {errors} raised (both paths alike), {fell_back} fell back to cvxpy')
    assert compared >= 100
    assert fell_back <= 2


# ----------------------------------------------------------------------------- hot starts
def _moved(market: mo.MarketSnapshot, k: int) -> mo.MarketSnapshot:
    rows = market.rows.copy()
    f = 1.0 + 0.002 * ((k % 5) - 2)
    rows["underlying_price"] *= f
    rows["mark_iv"] += 0.1 * (k % 3)
    return mo.MarketSnapshot(market.valuation_time, {u: p * f for u, p in market.index_prices.items()}, rows)


@pytest.fixture(scope="module")
def desk():
    market = make_market(strikes_per_expiry=5, seed=11)
    book = make_book(market, n_structures=8, seed=2)
    rng = np.random.default_rng(1)
    others = [n for n in market.instrument_names if n not in book.positions]
    spec = {"universe": book.names + list(rng.choice(others, size=40, replace=False)),
            "limits": {"BTC": {"delta": [-2, 2]}, "ETH": {"delta": [-20, 20]}},
            "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
            "trade_bounds": {"max_open_interest_fraction": 0.25, "turnover_usd": 2e6},
            "solver": "native"}
    return book, market, spec


def _same(p: mo.optimize.Proposal, q: mo.optimize.Proposal) -> None:
    assert p.solver == q.solver == SOLVER
    before = p.margin_before.initial_margin_usd
    assert p.margin_after.initial_margin_usd == pytest.approx(q.margin_after.initial_margin_usd,
                                                              rel=0, abs=1e-9 * before + 1e-6)
    a, b = p.trade_quantities, q.trade_quantities
    names = set(a) | set(b)
    assert max(abs(a.get(n, 0.0) - b.get(n, 0.0)) for n in names) <= 1e-7


def test_a_warm_resolve_on_a_moved_snapshot_equals_a_cold_solve(desk):
    book, market, spec = desk
    reb = mo.Rebalancer("deribit-pm", spec)
    first = reb.optimize(book, market)
    assert first.trades and first.solver == SOLVER
    model = next(iter(reb.native._models.values()))
    for k in (1, 2, 3):
        snap = _moved(market, k)
        warm = reb.optimize(book, snap)
        assert model.basis is not None
        cold = mo.Rebalancer("deribit-pm", spec).optimize(book, snap)
        _same(warm, cold)
    assert reb.native.builds == 1 and len(reb.native._models) == 1
    assert model.passes == 4  # the build, then each moved market (every P&L moved) passed whole
    assert model.fresh_solves == 0  # each answer the only optimum: the hot starts stood


def test_a_new_book_on_the_same_market_changes_bounds_in_place(desk):
    book, market, spec = desk
    reb = mo.Rebalancer("deribit-pm", spec)
    reb.optimize(book, market)
    model = next(iter(reb.native._models.values()))
    other = mo.Portfolio({n: 1.5 * q for n, q in book.positions.items()})
    warm = reb.optimize(other, market)
    assert model.passes == 1 and model.fresh_solves == 0  # row bounds only: changed in place
    _same(warm, mo.Rebalancer("deribit-pm", spec).optimize(other, market))


def test_a_new_structure_builds_a_new_model(desk):
    book, market, spec = desk
    reb = mo.Rebalancer("deribit-pm", spec)
    reb.optimize(book, market)
    wider = {**spec, "universe": spec["universe"] + ["BTC-PERPETUAL", "ETH-PERPETUAL"]}
    reb.spec = mo.load_spec(wider)
    p = reb.optimize(book, market)
    assert reb.native.builds == 2 and len(reb.native._models) == 2
    _same(p, mo.Rebalancer("deribit-pm", wider).optimize(book, market))


# ----------------------------------------------------------------------------- the choice
def test_the_spec_chooses_the_path(sample):
    book, market, spec = sample
    assert mo.load_spec({"solver": "Native"}).solver == "native"
    assert mo.load_spec({"solver": "CVXPY"}).solver == "cvxpy"
    assert mo.load_spec({"solver": "HIGHS"}).solver == "HIGHS"
    default = mo.Rebalancer("deribit-pm", spec).optimize(book, market)
    cvx = mo.Rebalancer("deribit-pm", spec.model_copy(update={"solver": "cvxpy"})).optimize(book, market)
    named = mo.Rebalancer("deribit-pm", spec, solver="CLARABEL").optimize(book, market)
    assert default.solver == SOLVER and default.verified_by.startswith(SOLVER)
    assert cvx.solver == "HIGHS" and named.solver == "CLARABEL"
    # the same shadow prices, in the same sign convention (USD saved per unit relaxed, >= 0)
    assert default.margin_after.initial_margin_usd == pytest.approx(cvx.margin_after.initial_margin_usd,
                                                                    rel=1e-9)
    binding = [(a.name, a.shadow_price, b.shadow_price) for a, b in zip(default.limits, cvx.limits)
               if a.binding or b.binding]
    assert binding
    for name, a, b in binding:
        assert a >= 0 and a == pytest.approx(b, rel=1e-6, abs=1e-9), name


def test_native_on_a_problem_it_cannot_solve_is_a_spec_error(sample):
    book, market, spec = sample
    rounded = spec.model_copy(update={"solver": "native", "lots": mo.load_spec({"lots": {"mode": "round"}}).lots})
    with pytest.raises(SpecError, match="lots"):
        mo.Rebalancer("deribit-pm", rounded).optimize(book, market)
    # without a choice, the same problem goes to the cvxpy path
    p = mo.Rebalancer("deribit-pm", rounded.model_copy(update={"solver": None})).optimize(book, market)
    assert p.solver == "HIGHS"
    cone = mo.Rebalancer("covariance-var", spec.model_copy(update={"solver": "native"}))
    with pytest.raises(SpecError, match="soc"):
        cone.optimize(book, market)


# ----------------------------------------------------------------------------- claims
def test_a_native_failure_falls_back_to_the_cvxpy_path(sample, monkeypatch):
    book, market, spec = sample

    def boom(self):
        raise SolverFailed("HIGHS (native) gave no optimal answer.", [(SOLVER, "stage 1: Unknown")])

    monkeypatch.setattr(NativeProblem, "solve", boom)
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert p.status == "optimal" and p.solver == "HIGHS"
    assert (SOLVER, "stage 1: Unknown") in p.attempts
    assert any(s == SOLVER and "cvxpy problem is solved instead" in why for s, why in p.attempts)


def test_a_native_margin_that_disagrees_is_not_shipped(sample, monkeypatch):
    book, market, spec = sample
    real = NativeProblem.solve

    def skewed(self, fresh=False):  # the margin the native model reports is off by 1%
        got = real(self, fresh)
        off = lambda answers: tuple(replace(a, objective_margin_usd=1.01 * a.objective_margin_usd)  # noqa: E731
                                    for a in answers)
        return replace(got, offered=off(got.offered), withheld=off(got.withheld))

    monkeypatch.setattr(NativeProblem, "solve", skewed)
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert p.solver == "HIGHS"
    assert any(s.startswith(SOLVER) and "differs from the calculator's" in why for s, why in p.attempts)


def test_the_time_limit_is_per_solve_not_per_model(desk):
    """HiGHS's run clock accumulates over a persistent model's life: a limit set once would
    stop every solve after the first few seconds of its life."""
    book, market, spec = desk
    reb = mo.Rebalancer("deribit-pm", {**spec, "time_limit_s": 0.01})
    data = reb.problem_data(book, market)
    model = NativeProblem(data, reb.spec, lp_blocks(data, reb.spec))
    for _ in range(2000):
        model.h.clearSolver()  # from scratch each time: more clock used
        model.solve()  # raises SolverFailed (time limit) once the clock passes a fixed limit
        if model.h.getRunTime() > 0.03:
            break
    assert model.h.getRunTime() > 0.03


@pytest.mark.parametrize("seq", [79, 99])
def test_a_reused_model_with_many_optima_answers_as_a_fresh_one(seq):
    """free_margin with spread-free instruments: stage 1 has many optima, and a hot start would
    end at another one than a fresh model; such answers are solved as a fresh model would be."""
    from . import _audit as A

    assert A.run_sequence(A.make_sequence(seq)) == []


# ----------------------------------------------------------------------------- the only optimum
def _lp(cost, lower, upper, rows):
    """A small HiGHS model: ``rows`` as (lower, upper, coefficients); solved from scratch."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.addVars(len(cost), np.asarray(lower, float), np.asarray(upper, float))
    h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), np.asarray(cost, float))
    for lo, hi, coef in rows:
        coef = np.asarray(coef, float)
        nz = np.flatnonzero(coef).astype(np.int32)
        h.addRow(lo, hi, nz.size, nz, coef[nz])
    h.run()
    return h


def _only(h, cost):
    from marginopt.rebalance._native import degenerate, only_optimum

    lp = h.getLp()
    cost = np.asarray(cost, float)
    found = degenerate(h, cost, np.array(lp.col_lower_), np.array(lp.col_upper_),
                       np.array(lp.row_lower_), np.array(lp.row_upper_))
    x = np.array(h.getSolution().col_value)
    verdict = only_optimum(h, cost, found, 10.0)
    # the model is as it was: same bounds and costs (the caller sets its basis again)
    after = h.getLp()
    assert np.array_equal(after.col_cost_, cost) and np.array_equal(after.row_lower_, lp.row_lower_)
    assert np.array_equal(after.col_lower_, lp.col_lower_) and np.array_equal(after.col_upper_, lp.col_upper_)
    return found, x, verdict


def test_a_face_of_optima_is_not_the_only_optimum():
    # min x + y with x + y >= 1 in the unit box: every point of the segment is optimal
    h = _lp([1, 1], [0, 0], [1, 1], [(1, np.inf, [1, 1])])
    found, x, verdict = _only(h, [1, 1])
    assert found is not None and verdict is False
    assert x.sum() == pytest.approx(1.0)


def test_a_strict_optimum_is_the_only_one():
    h = _lp([1, 2], [0, 0], [1, 1], [(1, np.inf, [1, 1])])
    found, x, verdict = _only(h, [1, 2])
    assert verdict is True and x == pytest.approx([1, 0])


def test_a_degenerate_vertex_that_cannot_move_is_the_only_optimum():
    # min x with x + y >= 1, x - y >= 1, y >= 0: only (1, 0), a vertex where three constraints
    # meet (the basis may leave a zero reduced cost; the face search must still say unique)
    h = _lp([1, 0], [0, 0], [10, 10], [(1, np.inf, [1, 1]), (1, np.inf, [1, -1])])
    found, x, verdict = _only(h, [1, 0])
    assert verdict is True and x == pytest.approx([1, 0])


def test_a_ray_of_optima_is_not_the_only_optimum():
    # min x with x >= 1 and y free above 0: every (1, y) is optimal, without end
    h = _lp([1, 0], [1, 0], [5, np.inf], [])
    found, x, verdict = _only(h, [1, 0])
    assert verdict is False
