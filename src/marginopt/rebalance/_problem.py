"""The cvxpy problem over trades, built once per structure and re-solved by updating Parameters.

Trades are split into buys and sells (``t = buy - sell``, both >= 0 with Parameter upper bounds
passed to the solver as column bounds), two-sided limits are two linear inequalities, and the
post-trade book ``x`` is its own variable tied by ``x == x0 + buy - sell`` so every product of data
and decision is ``Parameter @ Variable`` (DPP). Margin is the sum over pools of each component's
own cvxpy term, built from the same arrays the calculator evaluates, scaled to USD.
"""

from __future__ import annotations

import functools
import time
import zlib
from dataclasses import dataclass, replace
from typing import Callable

import cvxpy as cp
import numpy as np

from ..errors import OptimizationError, SpecError
from ..margins import BoundModel
from ..market import PricingInputs
from ._data import LimitRows, Universe
from ._solvers import ProblemClass, SolveReport, solve
from ._spec import RebalanceSpec

#: budgets and targets are set this fraction inside the spec's own figure, so an answer within a
#: solver's feasibility tolerance (SCIP runs at 1e-9) still meets the figure itself when
#: the verifier checks it
_INSIDE = 1e-7
#: a mixed-integer tie-break is not started with less than this many seconds of the budget left
_MIN_STAGE_S = 0.5
#: Parameters that only some structures have (bounds on some side, impact, turnover, limits on
#: some side, free_margin, exact lots, max_instruments, trust regions)
_OPTIONAL = frozenset({
    "buy_max", "sell_max", "buy_cap", "sell_cap", "impact_usd", "notional_usd",
    "limit_lower_matrix", "limit_lower", "limit_upper_matrix", "limit_upper",
    "margin_target_usd", "lot", "trust_centre", "trust_radius"})


#: the largest relative nudge of an instrument's tie-break weight (see ``ProblemData.tiebreak_usd``)
TIEBREAK_NUDGE = 1e-7


@functools.lru_cache(maxsize=64)
def _nudges(names: tuple[str, ...]) -> np.ndarray:
    """A number in [0, 1) per instrument, fixed by its name (the same in every process)."""
    return np.array([zlib.crc32(n.encode()) for n in names], dtype=float) / 2.0 ** 32


@dataclass(frozen=True)
class ProblemData:
    """Every number the problem needs for one (book, market) under one structure."""

    universe: Universe
    bound: BoundModel
    inputs: PricingInputs
    limits: LimitRows
    half_spread_usd: np.ndarray
    impact_usd: np.ndarray
    notional_usd: np.ndarray
    lot: np.ndarray
    margin_before_usd: float

    # the trading cost, in numpy here and as a cvxpy term in ``cost_term``: one definition
    def trade_costs_usd(self, trades: np.ndarray) -> np.ndarray:
        """Each instrument's estimated cost of ``trades``: half the spread per unit plus the
        impact term ``impact * |t|^1.5`` (zero without ``costs.impact``)."""
        size = np.abs(np.asarray(trades, dtype=float))
        return self.half_spread_usd * size + self.impact_usd * size ** 1.5

    def cost_usd(self, trades: np.ndarray) -> float:
        return float(self.trade_costs_usd(trades).sum())

    @property
    def tiebreak_usd(self) -> np.ndarray:
        """Stage 2's weight per unit traded: notional plus the half spread, so that among equal
        margins the smallest, cheapest trades win; each nudged up by a fraction below
        ``TIEBREAK_NUDGE`` fixed by the instrument's name, so that exactly one trade set is
        least even where instruments tie (same notional, same spread). Which optimum a solver
        returns then does not depend on where it started: a hot start answers as a fresh solve."""
        return (self.notional_usd + self.half_spread_usd) * (1.0 + TIEBREAK_NUDGE * _nudges(tuple(self.universe.names)))

    @staticmethod
    def cost_term(half_spread: cp.Expression, traded: cp.Expression, impact: cp.Expression | None = None,
                  impact_idx: np.ndarray | None = None) -> cp.Expression:
        """``trade_costs_usd`` summed, as a cvxpy expression of ``traded = buy + sell`` (impact
        only on ``impact_idx``: see RebalanceProblem)."""
        cost = half_spread @ traded
        if impact is not None and impact_idx is not None and impact_idx.size:
            cost = cost + impact @ cp.power(traded[impact_idx], 1.5)
        return cost

    def component_values(self) -> dict[str, np.ndarray]:
        """Each convex component's arrays in USD, keyed ``pool/component/value``."""
        out = {}
        for pool in self.bound.pools:
            for comp in pool.initial:
                if comp.convex:
                    for k, v in comp.values(pool.usd_rate).items():
                        out[f"{pool.name}/{comp.name}/{k}"] = np.asarray(v, dtype=float)
        return out

    def structure(self) -> tuple:
        """What must match for a compiled problem to be reused with these numbers."""
        comps = tuple((k, v.shape) for k, v in self.component_values().items())
        forms = tuple((p.name, c.name, c.convex, c.structure_key()) for p in self.bound.pools
                      for c in p.initial)
        u = self.universe
        # each side of each bound apart: a bound that is finite on one side only is a different
        # problem from one finite on the other (the finite side is a constraint row)
        return (tuple(u.names), comps, forms, tuple(self.limits.names),
                tuple(self.limits.lower_rows), tuple(self.limits.upper_rows),
                tuple(p.columns.tobytes() for p in self.bound.pools),
                np.isfinite(u.buy_max).tobytes(), np.isfinite(u.sell_max).tobytes(),
                (u.buy_max <= 0).tobytes(), (u.sell_max <= 0).tobytes(),
                (self.lot > 0).tobytes())


def margin_expression(x: cp.Expression, bound: BoundModel, param: Callable[..., cp.Parameter],
                      prefix: str = "") -> tuple[cp.Expression, list[cp.Constraint], list[tuple[str, str]]]:
    """The initial margin (USD) of the post-trade book ``x`` as cvxpy: each pool's convex
    components by their own ``term`` on Parameters named ``{prefix}{pool}/{component}/{value}``
    (made by ``param(name, shape, signed=)``), each non-convex one as its tangent
    ``lin_const + lin_grad @ x`` (sequential convex programming sets both). Returns the
    expression, the components' constraints, and the (pool, component) names linearised."""
    terms: list[cp.Expression] = []
    constraints: list[cp.Constraint] = []
    nonconvex: list[tuple[str, str]] = []
    for pool in bound.pools:
        xp = x[pool.columns]
        for comp in pool.initial:
            key = f"{prefix}{pool.name}/{comp.name}"
            if comp.convex:
                params = {k: param(f"{key}/{k}", v.shape, signed=k in comp.signed_values)
                          for k, v in comp.values(pool.usd_rate).items()}
                term = comp.term(xp, params)
                terms.append(term.expression)
                constraints += term.constraints
            else:
                nonconvex.append((pool.name, comp.name))
                terms.append(param(f"{key}/lin_const", (), signed=True)
                             + param(f"{key}/lin_grad", (len(pool.columns),), signed=True) @ xp)
    return (cp.sum(cp.hstack(terms)) if terms else cp.Constant(0.0)), constraints, nonconvex


@dataclass(frozen=True)
class RawSolution:
    """A solver's answer (a claim, until the verifier passes it)."""

    buy: np.ndarray
    sell: np.ndarray
    objective_margin_usd: float
    cost_usd: float
    lower_duals: np.ndarray
    upper_duals: np.ndarray
    reports: tuple[SolveReport, ...]
    stage: str = "stage 1"
    turnover_dual: float = 0.0

    @property
    def trades(self) -> np.ndarray:
        return self.buy - self.sell

    @property
    def solver(self) -> str:
        return self.reports[-1].solver if self.reports else ""


@dataclass(frozen=True)
class Diagnosis:
    """What the elastic problem found: each constraint that must move and by how much (signed,
    in its own units), recomputed in numpy at the elastic point; and that point's trades."""

    moves: dict[str, float]
    trades: np.ndarray | None
    attempts: tuple[tuple[str, str], ...] = ()


class RebalanceProblem:
    """Stage 1 minimises the spec's objective; stage 2 keeps that optimum (to 1e-9 relative plus
    1e-6 USD) and minimises the USD notional traded, so proposals never churn."""

    def __init__(self, data: ProblemData, spec: RebalanceSpec) -> None:
        self.spec = spec
        self.structure = data.structure()
        self.bound_structure = data.bound
        n = len(data.universe.instruments)
        self._params: dict[str, cp.Parameter] = {}
        p = self._param

        self.x0 = p("x0", (n,), signed=True)
        exact = spec.lots.mode == "exact"
        self.integer = exact or spec.trade_bounds.max_instruments is not None
        if exact:
            if np.any(data.lot <= 0):
                bad = data.universe.names[int(np.flatnonzero(data.lot <= 0)[0])]
                raise SpecError("exact lots need a lot size for every instrument", row=bad,
                                field="lots.sizes")
            self.buy_lots = cp.Variable(n, integer=True, nonneg=True, name="buy_lots")
            self.sell_lots = cp.Variable(n, integer=True, nonneg=True, name="sell_lots")
            # lot sizes are Parameters: a 10 USD inverse-future lot is 10/F coin and moves with F
            # (trades are their own variables tied to the lots, so every other term stays
            # Parameter @ Variable: DPP)
            lot = p("lot", (n,))
            self.buy = cp.Variable(n, nonneg=True, name="buy")
            self.sell = cp.Variable(n, nonneg=True, name="sell")
            lot_ties = [self.buy == cp.multiply(lot, self.buy_lots),
                        self.sell == cp.multiply(lot, self.sell_lots)]
            # a box of whole lots per instrument (HiGHS takes infinite bounds): the search is
            # narrowed to the lots around the continuous optimum (see Rebalancer._exact_lots)
            lot_box = lot_ties + [self.buy_lots >= p("buy_lots_min", (n,)), self.buy_lots <= p("buy_lots_max", (n,)),
                       self.sell_lots >= p("sell_lots_min", (n,)), self.sell_lots <= p("sell_lots_max", (n,))]
        else:
            self.buy = cp.Variable(n, nonneg=True, name="buy")
            self.sell = cp.Variable(n, nonneg=True, name="sell")
        self.x = cp.Variable(n, name="x")
        traded = self.buy + self.sell
        constraints: list[cp.Constraint] = [self.x == self.x0 + self.buy - self.sell]
        # Upper bounds on the finite entries only (Parameter bounds on a Variable are not DPP,
        # and some solvers reject infinite right-hand sides).
        u = data.universe
        if exact:
            constraints += lot_box
            self.buy_bounded = self.sell_bounded = np.zeros(0, dtype=int)
        else:
            # a side that may not trade at all is fixed at zero by an equality, not squeezed by
            # two inequalities: an empty interior is what interior-point solvers handle worst
            # (Clarabel answered "inaccurate" on such books); a closed side is part of the key
            self.buy_bounded = np.flatnonzero(np.isfinite(u.buy_max) & (u.buy_max > 0))
            self.sell_bounded = np.flatnonzero(np.isfinite(u.sell_max) & (u.sell_max > 0))
            closed_buy, closed_sell = np.flatnonzero(u.buy_max <= 0), np.flatnonzero(u.sell_max <= 0)
            if closed_buy.size:
                constraints.append(self.buy[closed_buy] == 0)
            if closed_sell.size:
                constraints.append(self.sell[closed_sell] == 0)
        if self.buy_bounded.size:
            constraints.append(self.buy[self.buy_bounded] <= p("buy_max", (self.buy_bounded.size,)))
        if self.sell_bounded.size:
            constraints.append(self.sell[self.sell_bounded] <= p("sell_max", (self.sell_bounded.size,)))

        # margin: every pool's components, in USD
        self.margin, margin_constraints, self.nonconvex = margin_expression(self.x, data.bound, p)
        constraints += margin_constraints
        trust: list[cp.Constraint] = []
        if self.nonconvex:
            # a trust region keeps each linearised step where the tangent is a fair model (not a
            # rule of the spec: the infeasibility diagnosis leaves it out)
            centre, radius = p("trust_centre", (n,), signed=True), p("trust_radius", (n,))
            trust = [self.x - centre <= radius, centre - self.x <= radius]

        self.has_impact = bool(spec.costs.impact > 0)
        # impact only where a side is open: a power cone pinned at its apex (a closed instrument)
        # is degenerate for interior-point solvers
        self.impact_idx = np.flatnonzero((data.universe.buy_max > 0) | (data.universe.sell_max > 0))
        impact = p("impact_usd", (self.impact_idx.size,)) if self.has_impact and self.impact_idx.size else None
        self.cost = ProblemData.cost_term(p("half_spread_usd", (n,)), traded, impact, self.impact_idx)

        lim = data.limits
        # everything but the limits, the turnover budget and the margin target: what the
        # infeasibility diagnosis keeps hard while it softens those
        self.hard_constraints = list(constraints)
        constraints += trust
        self.lower_con = self.upper_con = None
        if lim.lower_rows.size:
            self.lower_con = p("limit_lower_matrix", (lim.lower_rows.size, n), signed=True) @ self.x \
                >= p("limit_lower", (lim.lower_rows.size,), signed=True)
            constraints.append(self.lower_con)
        if lim.upper_rows.size:
            self.upper_con = p("limit_upper_matrix", (lim.upper_rows.size, n), signed=True) @ self.x \
                <= p("limit_upper", (lim.upper_rows.size,), signed=True)
            constraints.append(self.upper_con)
        self.turnover_con = None
        if spec.trade_bounds.turnover_usd is not None:
            # a hair inside the budget, so an answer within the solver's feasibility tolerance
            # still passes the verifier's check against the budget itself
            budget = spec.trade_bounds.turnover_usd * (1.0 - _INSIDE)
            self.turnover_con = p("notional_usd", (n,)) @ traded <= budget
            constraints.append(self.turnover_con)
        if spec.trade_bounds.max_instruments is not None:
            if not (np.isfinite(data.universe.buy_max).all() and np.isfinite(data.universe.sell_max).all()):
                raise SpecError("max_instruments needs a finite trade bound per instrument "
                                "(trade_bounds.max_quantity or max_open_interest_fraction)",
                                field="trade_bounds.max_instruments")
            used = cp.Variable(n, boolean=True, name="traded")
            cardinality = [self.buy <= cp.multiply(p("buy_cap", (n,)), used),
                           self.sell <= cp.multiply(p("sell_cap", (n,)), used),
                           cp.sum(used) <= spec.trade_bounds.max_instruments]
            constraints += cardinality
            self.hard_constraints += cardinality
        self.target_con = None
        if spec.objective == "free_margin":
            self.target_con = self.margin <= p("margin_target_usd", (), signed=True)
            constraints.append(self.target_con)

        if spec.objective == "free_margin":
            objective = self.cost
        elif spec.objective == "margin_plus_cost":
            objective = self.margin + spec.cost_weight * self.cost
        else:
            objective = self.margin + self.cost
        self.objective = objective
        self.constraints = constraints
        self.stage1 = cp.Problem(cp.Minimize(objective), constraints)
        self.stage2 = cp.Problem(cp.Minimize(p("notional_usd_tiebreak", (n,)) @ traded),
                                 constraints + [objective <= p("stage1_best", (), signed=True)])
        for prob in (self.stage1, self.stage2):
            if not prob.is_dpp():
                raise AssertionError("rebalance problem is not DPP: re-solves would recompile")
        self.problem_class = self._classify(data)
        self.update(data)

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str, shape: tuple, signed: bool = False) -> cp.Parameter:
        if name not in self._params:
            self._params[name] = cp.Parameter(shape, name=name, nonneg=not signed)
        return self._params[name]

    def _set(self, name: str, value: np.ndarray | float) -> None:
        """Assign a Parameter. Only the names of ``_OPTIONAL`` may be missing (so one ``update``
        serves every structure, with or without impact, lots, cardinality...); any other unknown
        name is a bug that would leave a Parameter stale, and raises."""
        par = self._params.get(name)
        if par is None:
            if name in _OPTIONAL:
                return
            raise KeyError(f"the problem has no Parameter '{name}'")
        value = np.asarray(value, dtype=float).reshape(par.shape)
        par.value = np.maximum(value, 0.0) if par.is_nonneg() else value

    def update(self, data: ProblemData) -> None:
        """Load a new (book, market) with the same structure: Parameters only, no recompile."""
        if data.structure() != self.structure:
            raise ValueError("data has a different structure: build a new RebalanceProblem")
        self.data = data
        u = data.universe
        self._set("x0", u.x0)
        self._set("buy_max", u.buy_max[self.buy_bounded])
        self._set("sell_max", u.sell_max[self.sell_bounded])
        if "buy_lots_max" in self._params:
            self.set_lot_box(np.zeros(len(u.x0)), self.max_lots(data)[0], np.zeros(len(u.x0)),
                             self.max_lots(data)[1])
        self._set("buy_cap", u.buy_max)
        self._set("sell_cap", u.sell_max)
        for k, v in data.component_values().items():
            self._set(k, v)
        self._set("half_spread_usd", data.half_spread_usd)
        self._set("impact_usd", data.impact_usd[self.impact_idx])
        self._set("notional_usd", data.notional_usd)
        self._set("notional_usd_tiebreak", data.tiebreak_usd)
        lim = data.limits
        self._set("limit_lower_matrix", lim.matrix[lim.lower_rows])
        self._set("limit_lower", lim.lower[lim.lower_rows])
        self._set("limit_upper_matrix", lim.matrix[lim.upper_rows])
        self._set("limit_upper", lim.upper[lim.upper_rows])
        if self.spec.free_margin_usd is not None:
            # a hair beyond the amount asked, for the same reason as the turnover budget
            self._set("margin_target_usd", data.margin_before_usd - self.spec.free_margin_usd
                      - _INSIDE * max(data.margin_before_usd, 1.0))
        self._set("lot", np.where(data.lot > 0, data.lot, 1.0))
        if self.nonconvex:
            self.linearize_at(u.x0)
            self.set_trust_region(u.x0, np.maximum(np.abs(u.x0), 1.0))

    @staticmethod
    def max_lots(data: ProblemData) -> tuple[np.ndarray, np.ndarray]:
        """Whole lots that fit inside each instrument's buy and sell bounds."""
        lot = np.where(data.lot > 0, data.lot, 1.0)
        u = data.universe
        return np.floor(u.buy_max / lot + 1e-9), np.floor(u.sell_max / lot + 1e-9)

    def set_lot_box(self, buy_min, buy_max, sell_min, sell_max) -> None:
        """Restrict the whole-lot search to a box per instrument (exact-lot problems)."""
        self._params["buy_lots_min"].value = np.asarray(buy_min, dtype=float)
        self._params["buy_lots_max"].value = np.asarray(buy_max, dtype=float)
        self._params["sell_lots_min"].value = np.asarray(sell_min, dtype=float)
        self._params["sell_lots_max"].value = np.asarray(sell_max, dtype=float)

    def set_trust_region(self, centre: np.ndarray, radius: np.ndarray) -> None:
        self._set("trust_centre", centre)
        self._set("trust_radius", radius)

    def linearize_at(self, x: np.ndarray) -> None:
        """Tangent of the non-convex components at ``x`` (an upper bound where they are concave)."""
        for pool in self.data.bound.pools:
            for comp in pool.initial:
                if comp.convex:
                    continue
                xp = x[pool.columns]
                value, grad = comp.linearize(xp, comp.values(pool.usd_rate))
                self._set(f"{pool.name}/{comp.name}/lin_const", value - grad @ xp)
                self._set(f"{pool.name}/{comp.name}/lin_grad", grad)

    def _classify(self, data: ProblemData) -> ProblemClass:
        """The problem class from what each compiled term declares (its cone); non-convex
        components enter as their tangent (linear), the market-impact cost (traded^1.5) as cones."""
        cones = {c.term_cone() for p in data.bound.pools for c in p.initial if c.convex}
        socp = self.has_impact or "soc" in cones
        quad = "quadratic" in cones
        if self.integer:
            return ProblemClass.MISOCP if socp else ProblemClass.MIQP if quad else ProblemClass.MILP
        return ProblemClass.SOCP if socp else ProblemClass.QP if quad else ProblemClass.LP

    @property
    def compiled(self) -> object:
        """The compiled parametric program of stage 1 (identity shows reuse across re-solves)."""
        return getattr(self.stage1._cache, "param_prog", None)

    # ------------------------------------------------------------------ solving
    def solve(self, solver: str | None = None, time_limit_s: float | None = None
              ) -> tuple[RawSolution, RawSolution | None]:
        """Stage 1, then the tie-break with the solver that answered stage 1, both within one time
        budget (mixed-integer searches). Returns both answers (stage 2 is None when it failed or
        the budget was spent; why is in stage 1's reports): the caller verifies them."""
        budget = self.spec.time_limit_s if time_limit_s is None else time_limit_s
        start = time.perf_counter()
        first = solve(self.stage1, self.problem_class, solver, bounded_below=True, time_limit_s=budget)
        stage1 = self._answer("stage 1", (first,))
        best = float(self.objective.value)
        self._set("stage1_best", best + 1e-9 * abs(best) + 1e-6)
        left = budget - (time.perf_counter() - start)
        if self.problem_class.integer and left < _MIN_STAGE_S:
            skipped = SolveReport(first.solver, "tie-break failed", 0.0,
                                  ("stage 2 skipped: the time limit was spent on stage 1",))
            return replace(stage1, reports=(first, skipped)), None
        try:
            second = solve(self.stage2, self.problem_class, first.solver, bounded_below=True,
                           time_limit_s=max(left, _MIN_STAGE_S))
        except OptimizationError as exc:  # the stage-1 answer stands; say why stage 2 did not
            failed = SolveReport(first.solver, "tie-break failed", 0.0, (f"stage 2 failed: {exc}",))
            return replace(stage1, reports=(first, failed)), None
        return stage1, self._answer("tie-break", (first, second), stage1)

    def _answer(self, stage: str, reports: tuple[SolveReport, ...],
                stage1: RawSolution | None = None) -> RawSolution:
        """Copy the variables' values out (the next solve overwrites them)."""
        buy = np.maximum(np.asarray(self.buy.value, dtype=float), 0.0)
        sell = np.maximum(np.asarray(self.sell.value, dtype=float), 0.0)
        net = buy - sell  # a buy and a sell of one instrument net out: keep only the net trade
        margin = self.margin.value
        duals = (stage1.lower_duals, stage1.upper_duals, stage1.turnover_dual) if stage1 else (
            self._duals(self.lower_con), self._duals(self.upper_con),
            float(np.sum(self._duals(self.turnover_con))))
        return RawSolution(np.maximum(net, 0.0), np.maximum(-net, 0.0),
                           float(margin) if margin is not None else float("nan"),
                           float(self.cost.value) if self.cost.value is not None else float("nan"),
                           duals[0], duals[1], reports, stage, duals[2])

    @staticmethod
    def _duals(con: cp.Constraint | None) -> np.ndarray:
        if con is None or con.dual_value is None:
            return np.zeros(0)
        return np.atleast_1d(np.asarray(con.dual_value, dtype=float))

    def diagnose(self, solver: str | None = None) -> Diagnosis:
        """Re-solve with every limit, the turnover budget and the margin target softened by a
        slack (minimising the slacks, each relative to its scale). The constraints reported are
        those the elastic point actually breaks, recomputed in numpy, by how much (signed: the
        move of the bound that would admit the point). Empty moves with a point mean the point
        breaks nothing: the problem was feasible after all."""
        lim = self.data.limits
        scale = lim.scale()
        slacks, cons = [], list(self.hard_constraints)
        traded = self.buy + self.sell
        if self.lower_con is not None:
            s = cp.Variable(lim.lower_rows.size, nonneg=True)
            cons.append(self._params["limit_lower_matrix"] @ self.x + s >= self._params["limit_lower"])
            slacks.append((s, scale[lim.lower_rows]))
        if self.upper_con is not None:
            s = cp.Variable(lim.upper_rows.size, nonneg=True)
            cons.append(self._params["limit_upper_matrix"] @ self.x - s <= self._params["limit_upper"])
            slacks.append((s, scale[lim.upper_rows]))
        budget = self.spec.trade_bounds.turnover_usd
        if self.turnover_con is not None and budget is not None:
            s = cp.Variable(1, nonneg=True)
            cons.append(self._params["notional_usd"] @ traded - s <= budget * (1.0 - _INSIDE))
            slacks.append((s, np.array([max(budget, 1.0)])))
        if self.target_con is not None:
            s = cp.Variable(1, nonneg=True)
            cons.append(self.margin - s <= self._params["margin_target_usd"])
            slacks.append((s, np.array([max(self.spec.free_margin_usd or 1.0, 1.0)])))
        if not slacks:
            return Diagnosis({}, None, (("elastic", "nothing to soften: only hard bounds"),))
        objective = cp.sum(cp.hstack([cp.sum(cp.multiply(1.0 / sc, s)) for s, sc in slacks]))
        elastic = cp.Problem(cp.Minimize(objective), cons)
        try:
            report = solve(elastic, self.problem_class, solver, bounded_below=True,
                           time_limit_s=self.spec.time_limit_s)
        except OptimizationError as exc:
            return Diagnosis({}, None, tuple(getattr(exc, "attempts", ())) or (("elastic", str(exc)),))
        if self.buy.value is None or self.sell.value is None:
            return Diagnosis({}, None, report.attempts)
        t = np.asarray(self.buy.value, dtype=float) - np.asarray(self.sell.value, dtype=float)
        return Diagnosis(self._breaks(t), t, report.attempts)

    def _breaks(self, t: np.ndarray) -> dict[str, float]:
        """The limits, budget and target that trades ``t`` break (numpy), with the signed move."""
        d = self.data
        lim = d.limits
        x = d.universe.x0 + t
        g = lim.matrix @ x
        tol = 1e-9 * lim.scale()
        out: dict[str, float] = {}
        for r in range(len(lim.names)):
            if g[r] < lim.lower[r] - tol[r]:
                out[f"{lim.names[r]}.lower"] = float(g[r] - lim.lower[r])
            elif g[r] > lim.upper[r] + tol[r]:
                out[f"{lim.names[r]}.upper"] = float(g[r] - lim.upper[r])
        budget = self.spec.trade_bounds.turnover_usd
        if budget is not None:
            used = float(d.notional_usd @ np.abs(t))
            if used > budget * (1.0 + 1e-9) + 1e-9:
                out["turnover_usd"] = used - budget
        if self.spec.free_margin_usd is not None:
            freed = d.margin_before_usd - d.bound.initial_margin_usd(x)
            if freed < self.spec.free_margin_usd * (1.0 - 1e-9):
                out["free_margin_usd"] = freed - self.spec.free_margin_usd
        return out
