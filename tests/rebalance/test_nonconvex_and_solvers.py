"""Non-convex components by sequential convex programming; the solver boundary."""

from __future__ import annotations

import cvxpy as cp
import pytest
import yaml

import marginopt as mo
from marginopt.errors import SolverFailed
from marginopt.rebalance import Verdict, verdict
from marginopt.rebalance._solvers import ProblemClass, solve

from .conftest import assert_sound, recompute_after


@pytest.fixture(scope="module")
def calendar_model():
    from marginopt.margins._model import _models_dir
    data = yaml.safe_load((_models_dir() / "deribit-pm.yaml").read_text())
    for rules in data["currencies"].values():
        rules["initial"].append({"type": "calendar_spread", "name": "calendar_spread", "convex": False,
                                 "rate": 0.02})
    data["name"] = "deribit-pm+calendar"
    return mo.load_model(data)


def test_model_declares_non_convexity(calendar_model):
    assert not calendar_model.convex
    assert mo.load_model("deribit-pm").convex


def test_sequential_convex_programming_is_sound(sample, calendar_model):
    book, market, spec = sample
    before = mo.margin(book, market, calendar_model)
    assert before.by_underlying["BTC"].components["calendar_spread"] > 0
    p = mo.optimize(book, market, calendar_model, spec)
    assert_sound(p, before)
    assert p.status == "optimal" and p.margin_saved_usd > 0
    assert any("sequential convex programming" in n for n in p.notes)
    after = recompute_after(book, market, calendar_model, p)
    assert p.margin_after.initial_margin_usd == pytest.approx(after.initial_margin_usd, rel=1e-12)


def test_declared_convexity_must_match_the_component():
    with pytest.raises(mo.ModelError):
        mo.load_model({"name": "bad", "currencies": {"BTC": {"initial": [
            {"type": "calendar_spread", "name": "c", "rate": 0.1, "convex": True}], "maintenance_factor": 1.0}}})


@pytest.mark.parametrize("status, expected", [
    (cp.OPTIMAL, Verdict.ACCEPT), (cp.OPTIMAL_INACCURATE, Verdict.WARN),
    (cp.INFEASIBLE, Verdict.INFEASIBLE), (cp.UNBOUNDED, Verdict.UNBOUNDED),
    (cp.INFEASIBLE_INACCURATE, Verdict.FAIL), (cp.UNBOUNDED_INACCURATE, Verdict.FAIL),
    (cp.SOLVER_ERROR, Verdict.FAIL), (None, Verdict.FAIL)])
def test_status_verdicts(status, expected):
    assert verdict(status) is expected


def test_unknown_solver_fails_with_every_attempt_recorded(sample):
    book, market, spec = sample
    with pytest.raises(SolverFailed) as err:
        mo.optimize(book, market, "deribit-pm", spec, solver="NOT_A_SOLVER")
    assert err.value.attempts == [("NOT_A_SOLVER", "not installed")]
    assert err.value.exit_code == 4


def test_unbounded_problem_is_typed():
    x = cp.Variable()
    with pytest.raises(mo.Unbounded):
        solve(cp.Problem(cp.Minimize(x), [x <= 1]), ProblemClass.LP)


def test_infeasible_problem_is_typed():
    x = cp.Variable()
    with pytest.raises(mo.Infeasible):
        solve(cp.Problem(cp.Minimize(x), [x >= 1, x <= 0]), ProblemClass.LP)
