"""The one verifier, and what the Rebalancer does with solver claims it does not believe."""

from __future__ import annotations

import importlib

import cvxpy as cp
import numpy as np
import pytest

import marginopt as mo
from marginopt.errors import Infeasible, SolverFailed, VerificationFailed
from marginopt.rebalance import Rebalancer, Verifier
from marginopt.rebalance import _solvers

from .conftest import assert_sound

SPEC = {"universe": "held+futures", "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-40, 40]}},
        "relative_limits": {"BTC": {"vega": 200}, "ETH": {"vega": 150}},
        "trade_bounds": {"max_quantity": 30.0, "turnover_usd": 2_000_000, "max_instruments": 40},
        "do_not_trade": ["BTC-PERPETUAL"]}


@pytest.fixture(scope="module")
def setup(sample):
    book, market, _ = sample
    spec = mo.load_spec({**SPEC, "close_only": [n for n in book.names if n.startswith("ETH-")][:1]})
    reb = Rebalancer("deribit-pm", spec)
    data = reb.problem_data(book, market)
    return reb, data, Verifier(data, spec), spec


def _rules(v) -> set[str]:
    return {x.rule for x in v.violations}


def test_no_trade_passes_and_each_rule_is_caught(setup):
    reb, data, verifier, spec = setup
    names = data.universe.names
    zero = np.zeros(len(names))
    assert verifier.check(zero).ok

    t = zero.copy()
    t[names.index("BTC-PERPETUAL")] = 0.0018  # do-not-trade
    v = verifier.check(t)
    assert "trade_bound" in _rules(v) and "do_not_trade" in v.summary()

    closing = spec.close_only[0]
    j = names.index(closing)
    t = zero.copy()
    t[j] = -2.0 * data.universe.x0[j]  # crosses through zero: not a close
    assert "close_only" in verifier.check(t).summary()

    t = zero.copy()
    t[names.index("BTC-27NOV26")] = 30.0 * 1.057  # 5.7% over max_quantity
    assert "trade_bound" in _rules(verifier.check(t))

    t = zero.copy()
    t[names.index("ETH-PERPETUAL")] = 29.0  # inside max_quantity, but 29 x 3,420 ... fine on turnover
    t[names.index("BTC-27NOV26")] = 25.0    # 25 x 97,250 = 2.43 M USD: over the 2 M budget
    assert "turnover" in _rules(verifier.check(t))

    t = zero.copy()
    t[names.index("BTC-27NOV26")] = 1000.0
    rules = _rules(verifier.check(t))
    assert {"trade_bound", "limit"} <= rules  # 1,000 BTC of delta is far outside [-5, 5]


def test_margin_rise_free_margin_shortfall_and_disagreement_are_caught(setup, sample):
    reb, data, verifier, spec = setup
    names = data.universe.names
    t = np.zeros(len(names))
    j = names.index("BTC-27NOV26")
    x0 = data.universe.x0
    # a little delta, inside every limit, on the side that adds margin
    sign = max((1.0, -1.0), key=lambda s: data.bound.initial_margin_usd(x0 + s * 0.5 * np.eye(len(x0))[j]))
    t[j] = sign * 0.5
    assert data.bound.initial_margin_usd(x0 + t) > data.margin_before_usd
    v = verifier.check(t)
    assert _rules(v) == {"margin"}
    # the solver's word is checked against the calculator's figure
    v = verifier.check(np.zeros(len(names)), solver_margin_usd=data.margin_before_usd * (1 + 1e-5))
    assert _rules(v) == {"agreement"}
    assert verifier.check(np.zeros(len(names)), solver_margin_usd=data.margin_before_usd * (1 + 1e-9)).ok
    # free_margin is relative: an answer freeing the amount asked to 1e-9 passes
    book, market, _ = sample
    free = mo.load_spec({**SPEC, "objective": "free_margin", "free_margin_usd": 100_000.0})
    fdata = Rebalancer("deribit-pm", free).problem_data(book, market)
    fv = Verifier(fdata, free)
    assert "free_margin" in _rules(fv.check(np.zeros(len(names))))


def test_repairs_are_exact_and_reverified(setup):
    reb, data, verifier, spec = setup
    u = data.universe
    names = u.names
    t = np.zeros(len(names))
    j = names.index("ETH-PERPETUAL")
    t[j] = spec.trade_bounds.max_quantity * (1 + 1e-9)
    clipped = verifier.clip(t)
    assert clipped[j] == spec.trade_bounds.max_quantity
    dusty = t.copy()
    dusty[names.index("ETH-29JAN27")] = 1e-12
    assert verifier.drop_dust(dusty)[names.index("ETH-29JAN27")] == 0.0


def test_lots_are_checked_in_round_mode(sample):
    book, market, _ = sample
    spec = mo.load_spec({**SPEC, "lots": {"mode": "round"}})
    reb = Rebalancer("deribit-pm", spec)
    data = reb.problem_data(book, market)
    v = Verifier(data, spec)
    names = data.universe.names
    t = np.zeros(len(names))
    t[names.index("ETH-PERPETUAL")] = 0.0015  # ETH inverse perpetual: 1 USD contracts
    assert "lot" in _rules(v.check(t))
    # 1 USD / forward coin per lot, as the README says
    j = names.index("ETH-PERPETUAL")
    assert data.lot[j] == pytest.approx(1.0 / data.inputs.forward[j], rel=1e-12)
    assert data.lot[names.index("BTC-PERPETUAL")] == pytest.approx(10.0 / data.inputs.forward[names.index("BTC-PERPETUAL")])


def test_proposals_carry_what_verified_them(sample):
    book, market, spec = sample
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    assert p.verified_by.startswith("HIGHS")
    assert any(why == "passed" for _, why in p.attempts)
    # the demo's turnover budget binds: reported as a binding bound with its price
    turnover = next(b for b in p.bounds if b.name == "turnover_usd")
    assert turnover.value <= 3_000_000 and turnover.binding
    assert turnover.shadow_price > 0
    assert p.to_dict()["binding_bounds"]


# --------------------------------------------------------------------------- claims
def _cvxpy_path(spec: mo.RebalanceSpec) -> mo.RebalanceSpec:
    """These tests make cvxpy's solvers lie: the cvxpy path, not the native HiGHS model."""
    return spec.model_copy(update={"solver": "cvxpy"})


class _Liar:
    """Make one solver (or every one: ``"*"``) answer with a given status and no values."""

    def __init__(self, monkeypatch, name: str, status: str) -> None:
        real = cp.Problem.solve

        def fake(problem, *args, solver=None, **kwargs):
            if solver == name or name == "*":
                problem._status = status
                problem._value = np.inf if status == cp.INFEASIBLE else -np.inf
                return problem._value
            return real(problem, *args, solver=solver, **kwargs)

        monkeypatch.setattr(cp.Problem, "solve", fake)


def test_false_infeasible_claim_is_not_believed(sample, monkeypatch):
    book, market, spec = sample
    spec = _cvxpy_path(spec)
    _Liar(monkeypatch, "HIGHS", cp.INFEASIBLE)
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    # CLARABEL, next in the LP chain, answered; HiGHS's claim is in the attempts
    assert p.status == "optimal" and p.solver == "CLARABEL"
    assert ("HIGHS", "infeasible") in p.attempts


def test_infeasible_claim_refuted_by_trading_nothing(sample, monkeypatch):
    book, market, spec = sample
    spec = _cvxpy_path(spec)
    _Liar(monkeypatch, "*", cp.INFEASIBLE)  # every solver: nothing to fall back to
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert p.status == "no_trade" and not p.trades
    assert any("not believed" in n for n in p.notes)


def test_unbounded_claim_is_a_failed_attempt(sample, monkeypatch):
    book, market, spec = sample
    spec = _cvxpy_path(spec)
    _Liar(monkeypatch, "HIGHS", cp.UNBOUNDED)
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    assert p.solver == "CLARABEL"
    assert any(s == "HIGHS" and "not trusted" in why for s, why in p.attempts)


def test_solver_exceptions_are_typed(sample, monkeypatch):
    book, market, spec = sample
    spec = _cvxpy_path(spec)

    def boom(problem, *args, **kwargs):
        raise cp.error.SolverError("native failure")

    monkeypatch.setattr(cp.Problem, "solve", boom)
    with pytest.raises(SolverFailed) as err:
        mo.optimize(book, market, "deribit-pm", spec)
    assert all("native failure" in why for _, why in err.value.attempts)


def test_inaccurate_answers_that_disagree_are_not_shipped(sample, monkeypatch):
    book, market, spec = sample
    spec = _cvxpy_path(spec)
    real = _solvers.solve

    def skewed(problem, problem_class, solver=None, **kwargs):
        report = real(problem, problem_class, solver, **kwargs)
        if report.solver == "HIGHS":  # the margin HiGHS reports is off by 1%
            for var in problem.variables():
                if var.name() == "x":
                    var.value = var.value * 1.01
        return report

    monkeypatch.setattr(importlib.import_module("marginopt.rebalance._problem"), "solve", skewed)
    p = mo.optimize(book, market, "deribit-pm", spec)
    assert_sound(p)
    assert p.solver == "CLARABEL"
    assert any("differs from the calculator's" in why for _, why in p.attempts)


def test_confirmed_infeasibility_names_only_broken_limits(sample):
    book, market, _ = sample
    spec = {"universe": "held", "do_not_trade": book.names, "limits": {"BTC": {"delta": [10, 12]},
                                                                        "ETH": {"delta": [-1e6, 1e6]}},
            "trade_bounds": {"turnover_usd": 5e6}}
    with pytest.raises(Infeasible) as err:
        mo.optimize(book, market, "deribit-pm", spec)
    assert list(err.value.diagnosis) == ["BTC.delta.lower"]
    assert err.value.attempts


def test_every_failure_to_verify_is_typed_with_attempts(sample, monkeypatch):
    book, market, spec = sample
    # nothing can pass
    monkeypatch.setattr(importlib.import_module("marginopt.rebalance._verify"), "LIMIT_TOLERANCE", -1.0)
    with pytest.raises(VerificationFailed) as err:
        mo.optimize(book, market, "deribit-pm", spec)
    assert err.value.attempts and err.value.exit_code == 4


# --------------------------------------------------------------------------- the cache
def test_cached_problem_follows_a_side_that_closes(sample):
    """A held short call loses its ask: a re-used Rebalancer must not buy it back."""
    book, market, spec = sample
    short_calls = [n for n, q in book.positions.items() if q < 0 and n.endswith("-C")]
    spec2 = {"universe": "held", "limits": {"BTC": {"delta": [-50, 50]}, "ETH": {"delta": [-500, 500]}}}
    reb = Rebalancer("deribit-pm", spec2)
    first = reb.optimize(book, market)
    bought = [t.instrument_name for t in first.trades if t.quantity > 0 and t.instrument_name in short_calls]
    assert bought, "the first snapshot buys back a short call"
    rows = market.rows.copy()
    rows.loc[bought, "ask_price"] = np.nan
    no_ask = mo.MarketSnapshot(market.valuation_time, market.index_prices, rows)
    cached = reb.optimize(book, no_ask)
    fresh = mo.optimize(book, no_ask, "deribit-pm", spec2)
    assert not any(t.instrument_name in bought and t.quantity > 0 for t in cached.trades)
    assert cached.trade_quantities == pytest.approx(fresh.trade_quantities, rel=1e-9, abs=1e-12)


def test_mixed_integer_with_cone_and_quadratic_models(sample):
    book, market, _ = sample
    spec = {**{k: v for k, v in SPEC.items() if k != "trade_bounds"},
            "trade_bounds": {"max_open_interest_fraction": 0.25}, "lots": {"mode": "exact"}}
    for model, cls in (("covariance-var", "MISOCP"), ("deribit-standard", "MIQP")):
        p = mo.optimize(book, market, model, spec)
        assert_sound(p)
        assert p.problem_class.endswith(f"{cls} (lots)") and p.solver == "SCIP"


def test_time_limited_search_reports_its_gap(sample):
    book, market, _ = sample
    spec = {**{k: v for k, v in SPEC.items() if k != "trade_bounds"}, "time_limit_s": 0.05,
            "trade_bounds": {"max_open_interest_fraction": 0.25, "max_instruments": 3}}
    try:
        p = mo.optimize(book, market, "covariance-var", spec)
    except VerificationFailed:  # stopped before any incumbent passed: typed, never a no_trade
        return
    assert_sound(p)
    assert "already at the lowest margin" not in p.reason
    assert any("time limit" in n for n in p.notes)


def test_named_solver_that_fails_falls_back_to_the_chain(sample, monkeypatch):
    book, market, spec = sample
    _Liar(monkeypatch, "CLARABEL", cp.UNBOUNDED)
    p = mo.optimize(book, market, "deribit-pm", spec, solver="CLARABEL")
    assert_sound(p)
    assert p.solver == "HIGHS"
    assert any("the solver asked for" in n for n in p.notes)


def test_covariance_var_at_500_instruments_is_accurate_and_dust_free():
    """The issue's case: stage 2 broke a relative vega limit by 3e-4 and answers carried dust."""
    from marginopt.synthetic import make_book, make_market

    market = make_market(strikes_per_expiry=61)
    book = make_book(market, n_structures=28)
    rng = np.random.default_rng(0)
    others = [n for n in market.instrument_names if n not in book.positions]
    extra = list(rng.choice(others, size=500 - len(book), replace=False))
    spec = {"universe": book.names + extra,
            "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
            "relative_limits": {"BTC": {"vega": 150}, "ETH": {"vega": 100}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    p = mo.optimize(book, market, "covariance-var", spec)
    assert_sound(p)
    assert p.status in ("optimal", "restores_limits") and p.trades
    gap = abs(p.solver_margin_usd - p.margin_after.initial_margin_usd)
    assert gap <= 1e-7 * max(p.margin_before.initial_margin_usd, p.margin_after.initial_margin_usd) + 1e-4
    sizes = np.array([abs(t.quantity) for t in p.trades])
    assert sizes.min() > 1e-6 * sizes.max()  # no dust
