"""Sequential convex programming (SCP) for non-convex margin components, one implementation for
the rebalancer and the desk allocation.

The model at an iterate ``x_k``: every convex term exact (as compiled), each non-convex
component's margin replaced by a convex model exact at ``x_k`` (``ComponentModel``). For Derive
PM2 (``derive._convex.requirement_model``) that is the max over its near-worst scenario rows at
``x_k`` (by default every row; a regular or tail row exact in its convex static-discount kink
form, a skew row as the sum of its expiries' absolute P&Ls with each P&L linearised at ``x_k``)
and the forward contingency, plus the contingencies exact with the options' oracle charge frozen
at ``x_k``'s side of perp = 0. Where the
worst scenario changes within a step the model already knows the next one, and the kinks of the
contingencies (a naked short closed, the perp through zero) are not mistaken for slopes: golden
case 63 converges in 2 solves where one tangent per step crept to the 20-solve cap. Any other
non-convex component enters by its tangent.

The step is a standard **trust-region** iteration in a box ``|x - x_k| <= r * scale``:

* the model's minimiser in the box is checked by the caller's verifier, whose margin is the
  calculator's (never the model's);
* ``rho = actual decrease / predicted decrease`` of the objective (margin plus cost, as the spec
  weighs them); the step is accepted when it passes every check and ``rho >= accept_ratio``;
* the radius grows when ``rho >= grow_ratio`` and the step reached the box's edge, shrinks to a
  fraction of the step taken when rejected or ``rho < shrink_ratio``;
* it stops when the model predicts no decrease at the iterate (a stationary point of the
  model), the radius is negligible, or after ``max_iterations`` solves.

A book with no acceptable value yet (it breaks a limit, or ``free_margin`` asks more than the
book frees) accepts its first step that passes every check. A model infeasible in the box before
any step is accepted is retried in a box ``widen`` times wider (a book outside its limits may
need a longer step), ``widenings`` times.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

import cvxpy as cp
import numpy as np

from ..errors import Infeasible, OptimizationError
from ..margins import BoundModel
from ._problem import RawSolution, RebalanceProblem
from ._solvers import solve


@dataclass(frozen=True)
class TrustRegionRules:
    """The trust-region SCP's settings (radius in units of ``scale``, the box's half-width)."""

    max_iterations: int = 20
    #: scenario rows per non-convex component (the near-worst at the iterate); None: every one.
    #: Fewer stalled where scenarios tie (a book of collateral and a zero perp: every row alike)
    pieces: int | None = None
    accept_ratio: float = 0.1
    shrink_ratio: float = 0.25
    grow_ratio: float = 0.75
    shrink: float = 0.25
    grow: float = 2.0
    initial_radius: float = 1.0
    max_radius: float = 10.0
    min_radius: float = 1e-6
    widenings: int = 4
    widen: float = 100.0
    #: a predicted decrease at most this fraction of the objective is none: x_k is stationary
    tolerance: float = 1e-9


@dataclass(frozen=True)
class Trial:
    """A model step, judged by the caller's checks: ``objective`` is the calculator's."""

    point: np.ndarray
    predicted: float
    ok: bool
    objective: float
    payload: Any = None


@dataclass(frozen=True)
class StepRecord:
    radius: float
    predicted_decrease: float
    actual_decrease: float
    ratio: float
    accepted: bool


@dataclass(frozen=True)
class SCPOutcome:
    """The best accepted step (None: none improved the start), the solves made and why it stopped."""

    best: Trial | None
    iterations: int
    stopped: str
    steps: tuple[StepRecord, ...] = field(default=())


class ConvexModel(Protocol):
    """What the trust-region loop needs of a problem."""

    def relinearise(self, x: np.ndarray) -> None:
        """Set the pieces at ``x`` (flat point)."""

    def step(self, centre: np.ndarray, radius: np.ndarray) -> Trial:
        """Solve the model in the box ``centre +/- radius`` and check its answer; raises
        ``Infeasible`` or another ``OptimizationError`` when the solver gives no answer."""


def trust_region_scp(model: ConvexModel, x0: np.ndarray, scale: np.ndarray, start_objective: float,
                     start_ok: bool, rules: TrustRegionRules = TrustRegionRules()) -> SCPOutcome:
    """Minimise by trust-region steps from ``x0`` (whose checked objective is ``start_objective``,
    acceptable if ``start_ok``). See the module docstring."""
    x = np.asarray(x0, dtype=float)
    f = float(start_objective) if start_ok else np.inf
    r = rules.initial_radius
    best: Trial | None = None
    steps: list[StepRecord] = []
    iterations = widened = 0
    stopped = "iteration cap"
    model.relinearise(x)
    while True:
        if iterations >= rules.max_iterations:
            break
        if r < rules.min_radius:
            stopped = "trust region negligible"
            break
        iterations += 1
        try:
            trial = model.step(x, r * scale)
        except Infeasible:
            if best is None and widened < rules.widenings:
                widened += 1
                r *= rules.widen
                continue
            stopped = "model infeasible"
            break
        except OptimizationError:
            stopped = "solver failed"
            break
        length = float(np.max(np.abs(trial.point - x) / scale, initial=0.0))
        if np.isfinite(f):
            predicted = f - trial.predicted
            if predicted <= rules.tolerance * max(abs(f), 1.0):
                steps.append(StepRecord(r, predicted, np.nan, np.nan, False))
                stopped = "converged"
                break
            actual = f - trial.objective
            ratio = actual / predicted
            accept = trial.ok and ratio >= rules.accept_ratio
        else:  # nothing acceptable yet: any step that passes every check is progress
            predicted = actual = ratio = np.nan
            accept = trial.ok
        steps.append(StepRecord(r, predicted, actual, ratio, accept))
        if accept:
            if not np.isfinite(ratio) or (ratio >= rules.grow_ratio and length >= 0.999 * r):
                r = min(r * rules.grow, rules.max_radius)
            elif ratio < rules.shrink_ratio:
                r = rules.shrink * r
            x, f, best = trial.point, trial.objective, trial
            model.relinearise(x)
        else:
            # the model was not to be trusted as far as it went
            r = rules.shrink * min(r, length) if length > 0 else rules.shrink * r
    return SCPOutcome(best, iterations, stopped, tuple(steps))


# --------------------------------------------------------------------------- pieces
@dataclass(frozen=True)
class ComponentModel:
    """A non-convex component's convex model around pool positions ``x``, exact at ``x``::

        model(y) = max(max_j row_j(y), fwd(y)) + abs_weight @ |y| + sum pos(-(short_groups @ y)) + offset
        row_j(y) = consts_j + grads_j @ y + sum_e pos(kinks[j, e] @ y)
        fwd(y)   = sum_e max(0, fwd_up[e] @ y, fwd_down[e] @ y)

    (a plain tangent: one row, no kinks, no other part)."""

    consts: np.ndarray        # (k,)
    grads: np.ndarray         # (k, n)
    kinks: np.ndarray         # (k, E, n)
    fwd_up: np.ndarray        # (E, n)
    fwd_down: np.ndarray      # (E, n)
    abs_weight: np.ndarray    # (n,) >= 0
    short_groups: np.ndarray  # (G, n)
    offset: float

    def __call__(self, y: np.ndarray) -> float:
        rows = self.consts + self.grads @ y + np.maximum(self.kinks @ y, 0.0).sum(axis=1)
        fwd = np.maximum(0.0, np.maximum(self.fwd_up @ y, self.fwd_down @ y)).sum()
        return float(max(rows.max(), fwd) + self.abs_weight @ np.abs(y)
                     + np.maximum(0.0, -(self.short_groups @ y)).sum() + self.offset)


def component_model(comp: Any, x: np.ndarray, values: dict[str, np.ndarray] | None, k: int | None
                    ) -> ComponentModel:
    """The model of a non-convex component at pool positions ``x``: its own
    (``BoundComponent.convex_model``; Derive PM2's near-worst scenarios, forward contingency and
    contingencies); else its tangent (``linearize``): one row."""
    arrays = comp.convex_model(x, values, k)
    if arrays is not None:
        return ComponentModel(**arrays)
    value, grad = comp.linearize(x, values)
    grad = np.asarray(grad, dtype=float)
    n = grad.size
    none = np.zeros((0, n))
    return ComponentModel(np.array([float(value - grad @ x)]), grad[None, :], np.zeros((1, 0, n)),
                          none, none, np.zeros(n), none, 0.0)


class PieceEpigraph:
    """Each non-convex component of a bound model as its ``ComponentModel`` in cvxpy (an epigraph
    variable above the rows and the forward contingency, plus the convex parts), all on
    Parameters: a new iterate, or a new snapshot of the same structure, re-solves without
    recompiling."""

    def __init__(self, x: cp.Expression, bound: BoundModel, at: np.ndarray, k: int | None,
                 prefix: str = "") -> None:
        self.k = k
        self.where: list[tuple[int, int]] = []  # (pool, component) index in the bound model
        self.params: list[dict[str, cp.Parameter]] = []
        self.shapes: list[dict[str, tuple]] = []
        self.terms: list[cp.Expression] = []
        self.constraints: list[cp.Constraint] = []
        for p, pool in enumerate(bound.pools):
            for c, comp in enumerate(pool.initial):
                if comp.convex:
                    continue
                key = f"{prefix}{pool.name}/{comp.name}"
                xp = x[pool.columns]
                m = component_model(comp, at[pool.columns], comp.values(pool.usd_rate), k)
                arrays = self._arrays(m)
                par = {name: cp.Parameter(a.shape, name=f"{key}/model_{name}",
                                          nonneg=name == "abs_weight")
                       for name, a in arrays.items() if a.size or name in ("consts", "offset")}
                top = cp.Variable(name=f"{key}/model_max")
                row = par["consts"] + par["grads"] @ xp
                rows, E = m.kinks.shape[:2]
                if E:  # each row's kinks summed: a constant pick of the (row, expiry) pairs
                    pick = np.kron(np.eye(rows), np.ones((1, E)))
                    row = row + pick @ cp.pos(par["kinks"] @ xp)
                self.constraints.append(top >= row)
                if m.fwd_up.shape[0]:
                    self.constraints.append(top >= cp.sum(cp.maximum(0.0, par["fwd_up"] @ xp,
                                                                     par["fwd_down"] @ xp)))
                term = top + par["offset"]
                if "abs_weight" in par:
                    term = term + par["abs_weight"] @ cp.abs(xp)
                if "short_groups" in par:
                    term = term + cp.sum(cp.pos(-(par["short_groups"] @ xp)))
                self.where.append((p, c))
                self.params.append(par)
                self.shapes.append({name: a.shape for name, a in arrays.items()})
                self.terms.append(term)
        self.total: cp.Expression = cp.sum(cp.hstack(self.terms)) if self.terms else cp.Constant(0.0)

    @staticmethod
    def _arrays(m: ComponentModel) -> dict[str, np.ndarray]:
        return {"consts": m.consts, "grads": m.grads, "kinks": m.kinks.reshape(-1, m.kinks.shape[2]),
                "fwd_up": m.fwd_up, "fwd_down": m.fwd_down, "abs_weight": m.abs_weight,
                "short_groups": m.short_groups, "offset": np.array(m.offset)}

    def set_at(self, x: np.ndarray, bound: BoundModel) -> None:
        for (p, c), par, shapes in zip(self.where, self.params, self.shapes):
            pool = bound.pools[p]
            comp = pool.initial[c]
            m = component_model(comp, x[pool.columns], comp.values(pool.usd_rate), self.k)
            for name, a in self._arrays(m).items():
                if a.shape != shapes[name]:
                    raise ValueError(f"{comp.name}'s model changed shape ({name}): rebuild the problem")
                if name in par:
                    par[name].value = a

    def value(self) -> float:
        return float(self.total.value) if self.terms else 0.0


def zero_tangents(bound: BoundModel, set_param: Callable[[str, Any], None], prefix: str = "") -> None:
    """Silence the problem's own single-tangent terms (``margin_expression``): the pieces'
    epigraph carries the non-convex margin while SCP runs."""
    for pool in bound.pools:
        for comp in pool.initial:
            if not comp.convex:
                set_param(f"{prefix}{pool.name}/{comp.name}/lin_const", 0.0)
                set_param(f"{prefix}{pool.name}/{comp.name}/lin_grad", np.zeros(len(pool.columns)))


def with_pieces(con: cp.Constraint, top: cp.Expression) -> cp.Constraint:
    """``lhs + top <= rhs`` for a constraint ``lhs <= rhs`` whose left side holds a margin."""
    lhs, rhs = con.args
    return lhs + top <= rhs


# --------------------------------------------------------------------------- the rebalancer's
class _RebalanceModel:
    """The rebalance problem with the pieces' epigraph: compiled once per problem (kept while the
    problem lives), re-solved by Parameters."""

    def __init__(self, prob: RebalanceProblem, k: int | None) -> None:
        self.prob = prob
        self.epi = PieceEpigraph(prob.x, prob.data.bound, prob.data.universe.x0, k)
        margin_minimised = prob.spec.objective != "free_margin"
        objective = prob.objective + self.epi.total if margin_minimised else prob.objective
        cons = [c for c in prob.constraints if c is not prob.target_con] + self.epi.constraints
        if prob.target_con is not None:
            cons.append(with_pieces(prob.target_con, self.epi.total))
        self.problem = cp.Problem(cp.Minimize(objective), cons)
        self.margin_minimised = margin_minimised


_MODELS: "weakref.WeakKeyDictionary[RebalanceProblem, _RebalanceModel]" = weakref.WeakKeyDictionary()


class RebalanceSCP:
    """``ConvexModel`` of one rebalance problem, its trades checked by the verifier."""

    def __init__(self, prob: RebalanceProblem, verifier: Any, solver: str,
                 clean: Callable[[np.ndarray], np.ndarray], rules: TrustRegionRules) -> None:
        model = _MODELS.get(prob)
        if model is None or model.epi.k != rules.pieces:
            model = _RebalanceModel(prob, rules.pieces)
            _MODELS[prob] = model
        self.model, self.prob, self.verifier, self.solver, self.clean = model, prob, verifier, solver, clean
        self.x0 = prob.data.universe.x0
        zero_tangents(prob.data.bound, prob._set)

    def relinearise(self, x: np.ndarray) -> None:
        self.model.epi.set_at(x, self.prob.data.bound)

    def step(self, centre: np.ndarray, radius: np.ndarray) -> Trial:
        prob, model = self.prob, self.model
        prob.set_trust_region(centre, radius)
        report = solve(model.problem, prob.problem_class, self.solver, bounded_below=True,
                       time_limit_s=prob.spec.time_limit_s)
        raw = prob._answer("sequential convex programming", (report,))
        pieces = model.epi.value()
        raw = replace(raw, objective_margin_usd=raw.objective_margin_usd + pieces)
        predicted = float(prob.objective.value) + (pieces if model.margin_minimised else 0.0)
        trades = self.clean(raw.trades)
        v = self.verifier.check(trades, source="sequential convex step")
        return Trial(self.x0 + trades, predicted, v.ok, v.objective_usd, raw)


def rebalance_scp(prob: RebalanceProblem, verifier: Any, solver: str,
                  clean: Callable[[np.ndarray], np.ndarray],
                  rules: TrustRegionRules = TrustRegionRules()) -> tuple[RawSolution | None, SCPOutcome]:
    """The best verified step of the trust-region SCP from the book (None: none improved it).
    The problem's own tangents are restored at the final iterate afterwards."""
    x0 = prob.data.universe.x0
    scale = np.maximum(np.abs(x0), 1.0)
    zero = verifier.check(np.zeros_like(x0))
    start_ok = zero.ok and not verifier.restoring
    scp = RebalanceSCP(prob, verifier, solver, clean, rules)
    outcome: SCPOutcome | None = None
    try:
        outcome = trust_region_scp(scp, x0, scale, zero.objective_usd, start_ok, rules)
    finally:  # the problem's own tangents back, at the last accepted iterate
        prob.linearize_at(outcome.best.point if outcome is not None and outcome.best is not None else x0)
    return (outcome.best.payload if outcome.best is not None else None), outcome


def scp_note(outcome: SCPOutcome, rules: TrustRegionRules, what: str, checked_by: str,
             start: str = "book") -> str:
    """The note on the SCP (its iteration count is what ``benchmarks/bench_scp.py`` reads)."""
    note = (f"{what} handled by sequential convex programming: {outcome.iterations} linearised "
            f"solve(s) in an adaptive trust region (each non-convex margin modelled by "
            f"{'its' if rules.pieces is None else f'its {rules.pieces} near-worst'} scenario rows at the "
            f"iterate; stopped: {outcome.stopped}), "
            f"each step checked by {checked_by}")
    return note + ("" if outcome.best is not None else f"; none improved the {start}")
