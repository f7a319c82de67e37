"""The native LP path: a persistent ``highspy.Highs`` model per problem structure.

For problems whose margin terms are all linear (each component gives its ``linear_rows``), with no
impact cost, continuous trades and no instrument cap, the Rebalancer solves this compact form
first; the cvxpy problem (``_problem.py``) stays the reference formulation and the fallback.

- Columns: buys and sells (``t = buy - sell``) with the trade bounds as column bounds, then each
  component's own columns (epigraphs, splits), pool by pool.
- Rows: each greek limit on the trades, ``lo - G x0 <= G t <= hi - G x0``; the turnover budget;
  the margin target (``free_margin``); each component's rows written on the trades directly,
  with the book's own part in the row bounds (``X x = X x0 + X t``). No post-trade-book block.
- Stage 1 minimises the spec's objective. Stage 2 (least notional traded plus half spread at the
  stage-1 optimum: objective <= best + 1e-9 |best| + 1e-6) is a row added to the same model and
  deleted after, with the costs put back and the stage-1 basis set again.

A new snapshot of the same structure changes numbers only: bounds and costs in place
(``changeColsBounds``, ``changeRowsBounds``, ``changeColsCost``) and the changed coefficients one
by one (``changeCoeff``) while they are few; when most of the matrix moves (a new market moves
every scenario P&L) the numbers are passed whole (``passModel``, one call, 2-3 ms at 2,000
candidates; ``changeCoeff`` costs 2 us a coefficient on a fresh model and about 24 us on a solved
one) and the previous basis is set again. Either
way HiGHS re-solves from the last stage-1 basis.

A hot start must not change the answer (a re-used Rebalancer answers as a fresh one, in-process
or on Dask). The tie-break's answer stands only when it is provably the only optimum of stage 2
(every nonbasic column and row not fixed has a reduced cost clearly away from zero); stage 1's
answer is offered beside it only when it too is the only optimum of stage 1 (a margin LP seldom
is: many trade sets reach the least margin, and which one a hot start ends at is an accident of
the basis, while the least-trading one among them is not). Otherwise, when the hot start fails,
or when no hot answer passes verification, the snapshot is solved exactly as a freshly built
model solves it (a new HiGHS model with the same numbers, from scratch). Answers are
``RawSolution``s like the cvxpy path's, verified by the same ``Verifier``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from ..errors import Infeasible, SolverFailed
from ..margins import BoundPool, LinearRows
from ._problem import _INSIDE, ProblemData, RawSolution
from ._solvers import OPTIONS, SolveReport
from ._spec import RebalanceSpec

__all__ = ["SOLVER", "NativeAnswers", "NativeModels", "NativeProblem", "degenerate", "lp_blocks", "only_optimum"]

#: how the native path names itself in proposals and attempts
SOLVER = "HIGHS (native)"
#: changed coefficients up to this many are set one by one; more, and the model is passed whole
_ONE_BY_ONE = 100
_OPTIMAL = highspy.HighsModelStatus.kOptimal
_INFEASIBLE = highspy.HighsModelStatus.kInfeasible

Block = tuple[BoundPool, LinearRows]


def lp_blocks(data: ProblemData, spec: RebalanceSpec) -> list[Block] | str:
    """Each pool component's LP rows, from the same ``values`` the calculator evaluates; or why
    this problem is not for the native path (the cvxpy problem handles it)."""
    if spec.costs.impact > 0:
        return "the market-impact cost is a power cone (SOCP)"
    if spec.lots.mode != "none":
        return f"lots mode '{spec.lots.mode}' trades whole lots (mixed-integer)"
    if spec.trade_bounds.max_instruments is not None:
        return "max_instruments is a mixed-integer constraint"
    out: list[Block] = []
    for pool in data.bound.pools:
        for comp in pool.initial:
            where = f"component {pool.name}/{comp.name}"
            if not comp.convex:
                return f"{where} is not convex (sequential convex programming)"
            cone = comp.term_cone()
            if cone != "linear":
                return f"{where} is {cone}, not linear"
            rows = comp.linear_rows(comp.values(pool.usd_rate))
            if rows is None:
                return f"{where} ({type(comp).__name__}) has no LP form"
            out.append((pool, rows))
    return out


def _key(data: ProblemData, spec: RebalanceSpec, blocks: list[Block]) -> tuple:
    """What fixes the model's shape and pattern: the instruments, the pools, the limits, the spec
    and each block's shapes and pattern (every other number is changed in place)."""
    form = tuple((p.name, p.columns.tobytes(), b.n_rows, b.n_cols, len(b.x_coo(len(p.columns))[0])
                  if isinstance(b.x_matrix, tuple) else b.x_matrix.shape, b.pattern)
                 for p, b in blocks)
    return (tuple(data.universe.names), tuple(data.limits.names), spec.model_dump_json(), form)


@dataclass
class _Numbers:
    """One (book, market)'s model: column bounds and costs, row bounds, coordinates."""

    col_lower: np.ndarray
    col_upper: np.ndarray
    cost: np.ndarray          # stage 1
    tiebreak: np.ndarray      # stage 2
    margin: np.ndarray        # margin (USD) per unit of each column
    row_lower: np.ndarray
    row_upper: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray


#: the solution, the basis, the degenerate nonbasic columns and rows, all nonbasic columns and rows
Degenerate = tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _nonbasic(h: highspy.Highs, n_cols: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Which columns and rows are nonbasic in ``h``'s factored basis (HiGHS lists the basic
    ones as an array, columns as ``j`` and rows as ``-1 - i``: no Python loop over statuses)."""
    status, basic = h.getBasicVariables()
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS gave no basic variables ({status})")
    basic = np.asarray(basic)
    nb_col, nb_row = np.ones(n_cols, bool), np.ones(n_rows, bool)
    nb_col[basic[basic >= 0]] = False
    nb_row[-1 - basic[basic < 0]] = False
    return nb_col, nb_row


def degenerate(h: highspy.Highs, cost: np.ndarray, col_lower: np.ndarray, col_upper: np.ndarray,
               row_lower: np.ndarray, row_upper: np.ndarray) -> Degenerate | None:
    """At the optimum ``h`` holds (minimising ``cost``): its solution and basis, and the
    nonbasic columns and rows (not fixed) whose reduced cost is not clearly away from zero. None
    when there are none (dual non-degenerate): then the optimum is the only one, and any start,
    hot or cold, ends there."""
    sol, basis = h.getSolution(), h.getBasis()
    nonbasic = _nonbasic(h, col_lower.size, row_lower.size)
    found = []
    for nb, dual, lo, hi, c in (
            (nonbasic[0], sol.col_dual, col_lower, col_upper, cost),
            (nonbasic[1], sol.row_dual, row_lower, row_upper, np.zeros(row_lower.size))):
        d = np.abs(np.asarray(dual, dtype=float))
        found.append(nb & (lo < hi) & (d <= 1e-7 * np.maximum(1.0, np.abs(c))))
    if not (found[0].any() or found[1].any()):
        return None
    return sol, basis, found[0], found[1], nonbasic[0], nonbasic[1]


def only_optimum(h: highspy.Highs, cost: np.ndarray, found: Degenerate | None, time_limit_s: float) -> bool:
    """Whether the optimum ``h`` holds is the only one (``found``: its ``degenerate`` entries).
    Dual non-degenerate: yes. Otherwise the optimal face is searched: every nonbasic column and
    row whose reduced cost is not zero is held where it is (on the face they cannot move), and an
    LP from the current basis pushes the degenerate ones away from their bounds as far as it can.
    The basis fixes the basic values given the nonbasic ones, so if none can move (by more than
    1e-10 of the answer's size), no other optimum exists. The model's bounds and costs are put
    back after; its basis is the caller's to set again."""
    if found is None:
        return True
    sol, basis, cols, rows, nb_col, nb_row = found
    x = np.asarray(sol.col_value, dtype=float)
    act = np.asarray(sol.row_value, dtype=float)
    lp = h.getLp()
    col_lo, col_hi = np.array(lp.col_lower_), np.array(lp.col_upper_)
    row_lo, row_hi = np.array(lp.row_lower_), np.array(lp.row_upper_)
    # which way each degenerate one may move: up from its lower bound, down from its upper
    push = np.where(cols, np.where(np.abs(x - col_lo) <= np.abs(x - col_hi), -1.0, 1.0), 0.0)  # minimised
    if rows.any():
        a = lp.a_matrix_
        matrix = sp.csc_matrix((np.asarray(a.value_), np.asarray(a.index_), np.asarray(a.start_)),
                               shape=(act.size, x.size))
        push = push + matrix.T @ np.where(rows, np.where(np.abs(act - row_lo) <= np.abs(act - row_hi),
                                                         -1.0, 1.0), 0.0)
    hold_c = np.flatnonzero(nb_col & ~cols).astype(np.int32)
    hold_r = np.flatnonzero(nb_row & ~rows).astype(np.int32)
    every = np.arange(x.size, dtype=np.int32)
    old_cost = np.array(lp.col_cost_)
    try:
        h.changeColsBounds(hold_c.size, hold_c, x[hold_c], x[hold_c])
        h.changeRowsBounds(hold_r.size, hold_r, act[hold_r], act[hold_r])
        h.changeColsCost(x.size, every, push)
        h.setOptionValue("time_limit", h.getRunTime() + time_limit_s)
        h.run()
        if h.getModelStatus() != _OPTIMAL:
            return False  # unbounded: a whole ray of optima; anything else: not proven
        y = np.asarray(h.getSolution().col_value, dtype=float)
        size = max(1.0, float(np.max(np.abs(x), initial=0.0)))
        return float(push @ x - push @ y) <= 1e-10 * size
    finally:
        h.changeColsBounds(hold_c.size, hold_c, col_lo[hold_c], col_hi[hold_c])
        h.changeRowsBounds(hold_r.size, hold_r, row_lo[hold_r], row_hi[hold_r])
        h.changeColsCost(x.size, every, old_cost)


@dataclass(frozen=True)
class NativeAnswers:
    """What one solve of the native model offers the verifier."""

    offered: tuple[RawSolution, ...]   # the tie-break's answer first, then stage 1's
    #: stage 1's answer when it is not the only optimum of stage 1 (which of them a solve ends at
    #: depends on its start): offered only should nothing offered pass, and only from a fresh model
    withheld: tuple[RawSolution, ...]
    reports: tuple[SolveReport, ...]   # stage 1's solve (what the search logs)
    hot: bool                          # started from the previous snapshot's basis

    @property
    def stage1(self) -> RawSolution | None:
        return next((a for a in self.offered + self.withheld if a.stage == "stage 1"), None)

    @property
    def tiebreak(self) -> RawSolution | None:
        return next((a for a in self.offered if a.stage == "tie-break"), None)


class NativeModels:
    """The Rebalancer's native models, one per structure."""

    def __init__(self) -> None:
        self._models: dict[tuple, NativeProblem] = {}
        self.builds = 0

    def get(self, data: ProblemData, spec: RebalanceSpec) -> NativeProblem | str:
        """The model for ``data`` loaded with its numbers, or why the native path does not apply."""
        blocks = lp_blocks(data, spec)
        if isinstance(blocks, str):
            return blocks
        key = _key(data, spec, blocks)
        model = self._models.get(key)
        try:
            if model is None:
                model = self._models[key] = NativeProblem(data, spec, blocks)
                self.builds += 1
            else:
                model.update(data, blocks)
        except Exception:
            self._models.pop(key, None)  # a model HiGHS did not take is not kept
            raise
        return model


class NativeProblem:
    """The compact LP of one structure in a persistent HiGHS model."""

    def __init__(self, data: ProblemData, spec: RebalanceSpec, blocks: list[Block]) -> None:
        self.spec = spec
        self.n = len(data.universe.x0)
        h = self.h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        for k, v in OPTIONS["HIGHS"].items():
            h.setOptionValue(k, v)
        self.basis: Any = None       # the last stage-1 basis: where the next solve starts
        self.passes = 0              # models passed whole (build, or most coefficients moved)
        self.fresh_solves = 0        # hot answers that were not provably the only optimum
        num = self._assemble(data, blocks)
        # the column-wise order of the coordinates, fixed for the structure
        self._order = np.lexsort((num.rows, num.cols))
        self._index = num.rows[self._order].astype(np.int32)
        self._col_of = num.cols[self._order].astype(np.int32)
        self._start = np.zeros(num.col_lower.size + 1, dtype=np.int32)
        np.cumsum(np.bincount(num.cols, minlength=num.col_lower.size), out=self._start[1:])
        self._pass(num, self._order_vals(num))

    # ------------------------------------------------------------------ the numbers
    def _assemble(self, data: ProblemData, blocks: list[Block]) -> _Numbers:
        u, lim, spec, n = data.universe, data.limits, self.spec, self.n
        self.limits, self._half = lim, data.half_spread_usd
        x0 = u.x0
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        lo: list[np.ndarray] = []
        hi: list[np.ndarray] = []

        def on_trades(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
            """Coefficients ``v`` of positions ``c``: on buys as they are, on sells negated."""
            rows.extend((r, r))
            cols.extend((c, n + c))
            vals.extend((v, -v))

        # greek limits (every row of LimitRows: a side that is infinite is a free bound)
        r_lim = len(lim.names)
        g = lim.matrix
        on_trades(np.repeat(np.arange(r_lim), n), np.tile(np.arange(n), r_lim), g.ravel())
        gx0 = g @ x0
        lo.append(lim.lower - gx0)
        hi.append(lim.upper - gx0)
        nrow = r_lim
        self.turnover_row = self.target_row = -1
        budget = spec.trade_bounds.turnover_usd
        if budget is not None:
            self.turnover_row = nrow
            idx = np.arange(n)
            rows.extend((np.full(n, nrow), np.full(n, nrow)))
            cols.extend((idx, n + idx))
            vals.extend((data.notional_usd, data.notional_usd))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([budget * (1.0 - _INSIDE)]))
            nrow += 1
        if spec.free_margin_usd is not None and spec.objective == "free_margin":
            self.target_row = nrow
            lo.append(np.array([-np.inf]))
            hi.append(np.array([data.margin_before_usd - spec.free_margin_usd
                                - _INSIDE * max(data.margin_before_usd, 1.0)]))
            nrow += 1

        # each pool component's rows on the trades; the book's part moves to the row bounds
        col = 2 * n
        c_lo, c_hi, margin = [], [], []
        for pool, b in blocks:
            pc = pool.columns
            xr, xc, xv = b.x_coo(len(pc))
            on_trades(nrow + xr, pc[xc], xv)
            ar, ac, av = b.a_matrix
            rows.append(nrow + ar)
            cols.append(col + ac)
            vals.append(av)
            shift = b.x_times(x0[pc])
            lo.append(b.row_lower - shift)
            hi.append(b.row_upper - shift)
            c_lo.append(b.col_lower)
            c_hi.append(b.col_upper)
            margin.append(b.cost)
            nrow += b.n_rows
            col += b.n_cols
        m = np.concatenate([np.zeros(2 * n), *margin])
        if self.target_row >= 0:
            aux = np.arange(2 * n, col)
            rows.append(np.full(aux.size, self.target_row))
            cols.append(aux)
            vals.append(m[2 * n:])

        side = lambda b: np.where(np.isfinite(b), np.maximum(b, 0.0), np.inf)  # noqa: E731
        weight = spec.cost_weight if spec.objective == "margin_plus_cost" else 1.0
        half = data.half_spread_usd
        traded_cost = np.concatenate([weight * half, weight * half])
        aux_cost = m[2 * n:] if spec.objective != "free_margin" else np.zeros(col - 2 * n)
        tie = data.tiebreak_usd
        return _Numbers(
            col_lower=np.concatenate([np.zeros(2 * n), *c_lo]),
            col_upper=np.concatenate([side(u.buy_max), side(u.sell_max), *c_hi]),
            cost=np.concatenate([traded_cost, aux_cost]),
            tiebreak=np.concatenate([tie, tie, np.zeros(col - 2 * n)]),
            margin=m, row_lower=np.concatenate(lo), row_upper=np.concatenate(hi),
            rows=np.concatenate(rows), cols=np.concatenate(cols), vals=np.concatenate(vals))

    def _order_vals(self, num: _Numbers) -> np.ndarray:
        if num.vals.size != self._order.size:
            raise ValueError("the native model's pattern changed under the same structure key")
        return num.vals[self._order]

    def _pass(self, num: _Numbers, vals: np.ndarray) -> None:
        """The whole model in one call; the last stage-1 basis (if any) set again."""
        ncol = num.col_lower.size
        # the array form: HighsLp's attribute setters copy element by element (10 ms at 2,000
        # candidates, this call about 2 ms); every column continuous
        status = self.h.passModel(ncol, num.row_lower.size, vals.size, 1, 1, 0.0, num.cost,
                                  num.col_lower, num.col_upper, num.row_lower, num.row_upper,
                                  self._start[:-1], self._index, vals, np.zeros(ncol, dtype=np.int32))
        if status == highspy.HighsStatus.kError:
            raise SolverFailed(f"{SOLVER} did not accept the model.", [(SOLVER, "passModel failed")])
        if self.basis is not None:
            self.h.setBasis(self.basis)
        self.passes += 1
        self.num, self.vals = num, vals

    def update(self, data: ProblemData, blocks: list[Block]) -> None:
        """Load a new (book, market) of the same structure: numbers only, the basis kept."""
        num = self._assemble(data, blocks)
        vals = self._order_vals(num)
        changed = np.flatnonzero(vals != self.vals)
        if changed.size > _ONE_BY_ONE:
            self._pass(num, vals)
            return
        h, old = self.h, self.num
        for k in changed:
            h.changeCoeff(int(self._index[k]), int(self._col_of[k]), float(vals[k]))
        c = np.flatnonzero((num.col_lower != old.col_lower) | (num.col_upper != old.col_upper))
        if c.size:
            h.changeColsBounds(c.size, c.astype(np.int32), num.col_lower[c], num.col_upper[c])
        c = np.flatnonzero(num.cost != old.cost)
        if c.size:
            h.changeColsCost(c.size, c.astype(np.int32), num.cost[c])
        r = np.flatnonzero((num.row_lower != old.row_lower) | (num.row_upper != old.row_upper))
        if r.size:
            h.changeRowsBounds(r.size, r.astype(np.int32), num.row_lower[r], num.row_upper[r])
        self.num, self.vals = num, vals

    # ------------------------------------------------------------------ solving
    def _run(self, attempts: list[tuple[str, str]], stage: str, tries: tuple[str, ...]) -> bool:
        """Solve each way of ``tries`` in turn until one is optimal: ``hot`` from the current
        basis, ``cold`` from scratch, ``loose`` from scratch at 1e-9 tolerances (still inside the
        verifier's). False when none was; "infeasible" is believed from scratch only."""
        h = self.h
        for how in tries:
            if how != "hot":
                h.clearSolver()
            if how == "loose":
                for k in OPTIONS["HIGHS"]:
                    h.setOptionValue(k, 1e-9)
            # HiGHS's clock runs on over the model's life: the limit is set per solve
            h.setOptionValue("time_limit", h.getRunTime() + float(self.spec.time_limit_s))
            try:
                h.run()
            finally:
                if how == "loose":
                    for k, v in OPTIONS["HIGHS"].items():
                        h.setOptionValue(k, v)
            status = h.getModelStatus()
            said = {"hot": "from the previous basis", "cold": "from scratch",
                    "loose": "from scratch at 1e-9 tolerances"}[how]
            if status == _OPTIMAL:
                if how != tries[0]:
                    attempts.append((SOLVER, f"{stage} optimal {said}"))
                return True
            attempts.append((SOLVER, f"{stage} {said}: {h.modelStatusToString(status)}"))
            if status == _INFEASIBLE and how != "hot":
                raise Infeasible(f"{SOLVER} reports the problem infeasible.", attempts=attempts)
        return False

    def _degenerate(self, cost: np.ndarray) -> Degenerate | None:
        num = self.num
        extra = self.h.getNumRow() - num.row_lower.size  # the tie-break row, while it is there
        return degenerate(self.h, cost, num.col_lower, num.col_upper,
                          np.concatenate([num.row_lower, np.full(extra, -np.inf)]),
                          np.concatenate([num.row_upper, np.full(extra, np.inf)]))

    def _only_optimum(self, cost: np.ndarray) -> bool:
        return only_optimum(self.h, cost, self._degenerate(cost), float(self.spec.time_limit_s))

    def solve(self, fresh: bool = False) -> NativeAnswers:
        """Stage 1, then the tie-break in the same model. From the last basis when the answers
        it gives are the only optima (see the module's notes); otherwise, when the hot start
        fails, or when asked (``fresh``: no hot answer passed verification), solved as a freshly
        built model would be, so a re-used model answers exactly as a new one does whatever it
        solved before."""
        if self.basis is not None and not fresh:
            answers = self._stages(hot=True)
            if answers is not None:
                return answers
        if self.basis is not None:
            self._fresh()
        answers = self._stages(hot=False)
        assert answers is not None
        return answers

    def stage1_point(self) -> tuple[np.ndarray, float] | None:
        """Stage 1 alone, from the current basis (scenario generation's search for its active
        set: these trades are never offered, only where the relaxation misses is learnt from
        them): the trades and the model's margin there, or None when no optimum was found. The
        basis is kept for the next solve."""
        if not self._run([], "stage 1", ("hot", "cold")):
            return None
        x = np.asarray(self.h.getSolution().col_value, dtype=float)
        self.basis = self.h.getBasis()
        return x[: self.n] - x[self.n: 2 * self.n], float(self.num.margin @ x)

    def _fresh(self) -> None:
        """A new HiGHS model with the current numbers, as a fresh build makes it."""
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        for k, v in OPTIONS["HIGHS"].items():
            self.h.setOptionValue(k, v)
        self.basis = None
        self._pass(self.num, self.vals)
        self.passes -= 1
        self.fresh_solves += 1

    def _stages(self, hot: bool) -> NativeAnswers | None:
        """Both stages; None when ``hot`` and the tie-break's answer is not provably the only
        optimum (or the hot start failed): then the caller solves a fresh model."""
        h, num = self.h, self.num
        attempts: list[tuple[str, str]] = []
        start = time.perf_counter()
        if not self._run(attempts, "stage 1", ("hot",) if hot else ("cold", "loose")):
            if hot:
                return None
            raise SolverFailed(f"{SOLVER} gave no optimal answer.", attempts)
        # stage 1's answer is offered only when no other trade set reaches its optimum
        offer_stage1 = self._degenerate(num.cost) is None
        first = SolveReport(SOLVER, "optimal", time.perf_counter() - start, (),
                            tuple(attempts + [(SOLVER, "optimal")]))
        sol = h.getSolution()
        x1 = np.asarray(sol.col_value, dtype=float)
        y = np.asarray(sol.row_dual, dtype=float)
        lim = self.limits
        # HiGHS: a row at its lower bound has a dual >= 0, at its upper bound <= 0 (minimising);
        # the cvxpy path's duals are >= 0 on either side: USD saved per unit relaxed
        lower = np.maximum(y[lim.lower_rows], 0.0)
        upper = np.maximum(-y[lim.upper_rows], 0.0)
        turnover = float(max(-y[self.turnover_row], 0.0)) if self.turnover_row >= 0 else 0.0
        stage1 = self._answer("stage 1", x1, (first,), lower, upper, turnover)

        basis = h.getBasis()
        best = float(num.cost @ x1)
        nz = np.flatnonzero(num.cost).astype(np.int32)
        nrow, ncol = num.row_lower.size, num.col_lower.size
        every = np.arange(ncol, dtype=np.int32)
        h.addRow(-np.inf, best + 1e-9 * abs(best) + 1e-6, nz.size, nz, num.cost[nz])
        h.changeColsCost(ncol, every, num.tiebreak)
        second: RawSolution | None = None
        attempts2: list[tuple[str, str]] = []
        start = time.perf_counter()
        redo = False
        try:
            if not self._run(attempts2, "tie-break", ("hot",) if hot else ("hot", "cold", "loose")):
                raise SolverFailed(f"{SOLVER} gave no optimal tie-break.", attempts2)
            x2 = np.asarray(h.getSolution().col_value, dtype=float)
            report = SolveReport(SOLVER, "optimal", time.perf_counter() - start, (),
                                 tuple(attempts2 + [(SOLVER, "optimal")]))
            if hot and not self._only_optimum(num.tiebreak):
                redo = True
            else:
                second = self._answer("tie-break", x2, (first, report), lower, upper, turnover)
        except (Infeasible, SolverFailed) as exc:
            if hot:
                redo = True
            else:
                failed = SolveReport(SOLVER, "tie-break failed", 0.0, (f"stage 2 failed: {exc}",))
                stage1 = RawSolution(stage1.buy, stage1.sell, stage1.objective_margin_usd,
                                     stage1.cost_usd, lower, upper, (first, failed), "stage 1", turnover)
        finally:  # the model as it was: no tie-break row, stage-1 costs, stage-1 basis
            h.deleteRows(1, np.array([nrow], dtype=np.int32))
            h.changeColsCost(ncol, every, num.cost)
            h.setBasis(basis)
        if redo or (hot and second is None):
            return None
        self.basis = basis
        if second is None or offer_stage1:
            return NativeAnswers(tuple(a for a in (second, stage1) if a is not None), (), stage1.reports, hot)
        return NativeAnswers((second,), (stage1,), stage1.reports, hot)

    def _answer(self, stage: str, x: np.ndarray, reports: tuple[SolveReport, ...], lower: np.ndarray,
                upper: np.ndarray, turnover: float) -> RawSolution:
        n, num = self.n, self.num
        buy, sell = np.maximum(x[:n], 0.0), np.maximum(x[n:2 * n], 0.0)
        net = buy - sell  # a buy and a sell of one instrument net out: keep only the net trade
        return RawSolution(np.maximum(net, 0.0), np.maximum(-net, 0.0), float(num.margin @ x),
                           float(self._half @ (buy + sell)), lower, upper, reports, stage, turnover)
