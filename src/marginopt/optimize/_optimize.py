"""``optimize(portfolio, market, model, spec) -> Proposal``: build, solve, verify, explain."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import Infeasible, OptimizationError, SolverFailed
from ..margin import MarginModel, MarginResult, load_model
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ._data import Universe, build_universe, greeks_summary, limit_rows, open_interest_coin
from ._problem import ProblemData, RawSolution, RebalanceProblem
from ._proposal import LimitCheck, Proposal, Trade
from ._spec import RebalanceSpec, load_spec

#: limits must hold to this fraction of their scale (the larger bound, at least 1)
LIMIT_TOLERANCE = 1e-9
#: the solver's margin and the calculator's must agree to this (relative, plus 1e-6 USD)
AGREEMENT_TOLERANCE = 1e-6
_SCP_MAX_ITERATIONS = 20


class Rebalancer:
    """A model and a spec, with compiled problems kept by structure: a new snapshot of the same
    universe re-solves by updating Parameters only."""

    def __init__(self, model: MarginModel | str | Path = "deribit-pm",
                 spec: RebalanceSpec | str | Path | Mapping[str, Any] | None = None,
                 solver: str | None = None) -> None:
        self.model = load_model(model)
        self.spec = load_spec(spec)
        self.solver = solver or self.spec.solver
        self._problems: dict[tuple, RebalanceProblem] = {}
        self.builds = 0

    # ------------------------------------------------------------------ data
    def problem_data(self, book: Portfolio, market: MarketSnapshot) -> ProblemData:
        universe, bound, inputs = build_universe(book, market, self.model, self.spec)
        insts = list(universe.instruments)
        half = np.nan_to_num(market.half_spread_usd(insts, inputs), nan=0.0) if self.spec.costs.spread \
            else np.zeros(len(insts))
        impact = np.zeros(len(insts))
        if self.spec.costs.impact > 0:
            oi = np.nan_to_num(open_interest_coin(insts, market), nan=0.0)
            impact = self.spec.costs.impact * half / np.sqrt(np.maximum(oi, 1.0))
        lots = np.array([self._lot(i, inputs.forward[j]) for j, i in enumerate(insts)])
        return ProblemData(
            universe=universe, bound=bound, inputs=inputs, limits=limit_rows(self.spec, inputs, universe.x0),
            half_spread_usd=np.maximum(half, 0.0), impact_usd=impact, notional_usd=inputs.index.copy(),
            lot=lots, margin_before_usd=bound.initial_margin_usd(universe.x0))

    def _lot(self, inst, forward: float) -> float:
        lot = self.spec.lot_size(inst)
        if lot == 0.0 and self.spec.lots.mode != "none" and not inst.is_option \
                and inst.settlement.value == "inverse":
            return 10.0 / forward  # Deribit inverse futures trade in 10 USD contracts
        return lot

    def problem(self, data: ProblemData, spec: RebalanceSpec | None = None) -> RebalanceProblem:
        spec = spec or self.spec
        key = (data.structure(), spec.model_dump_json())
        prob = self._problems.get(key)
        if prob is None:
            prob = RebalanceProblem(data, spec)
            self._problems[key] = prob
            self.builds += 1
        else:
            prob.update(data)
        return prob

    # ------------------------------------------------------------------ main
    def optimize(self, portfolio: Any, market: Any) -> Proposal:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        book = load_portfolio(portfolio)
        snap = load_market(market)
        before = self.model.bind(book.instruments, snap).evaluate(book.quantities)
        data = self.problem_data(book, snap)
        u = data.universe
        inputs = data.inputs
        timings["data"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        prob = self.problem(data, self._continuous_spec())
        timings["build"] = time.perf_counter() - t1
        notes: list[str] = [f"{k} is not traded: {v}" for k, v in u.frozen.items()]
        lim = data.limits
        g0 = lim.matrix @ u.x0
        tol = LIMIT_TOLERANCE * lim.scale()
        breached = (g0 < lim.lower - tol) | (g0 > lim.upper + tol)

        t2 = time.perf_counter()
        try:
            raw = prob.solve(self.solver)
        except Infeasible as exc:
            diagnosis = prob.diagnose(self.solver)
            raise Infeasible("No trade set satisfies every limit of the spec.", diagnosis) from exc
        if prob.nonconvex:
            raw, scp_notes = self._sequential_convex(prob, raw, data)
            notes += scp_notes
        timings["solve"] = time.perf_counter() - t2

        trades = self._clean(raw.buy - raw.sell, u)
        problem_class = prob.problem_class.value
        if self.spec.lots.mode == "round":
            trades, lot_notes = self._round_to_lots(trades, data)
            notes += lot_notes
            if len(lot_notes) > 1:
                problem_class += " + MILP (lots)"
        elif self.spec.lots.mode == "exact":
            trades, lot_notes = self._exact_lots(trades, data)
            notes += lot_notes
            problem_class += " + MILP (lots)"

        t3 = time.perf_counter()
        status, reason, trades, after = self._decide(trades, data, book, snap, before, breached)
        if trades.any() and self.spec.lots.mode == "none" and not prob.nonconvex:
            # the solver's margin of its own (unrounded) answer must be the calculator's
            gap = abs(raw.objective_margin_usd - after.initial_margin_usd)
            if gap > AGREEMENT_TOLERANCE * max(abs(after.initial_margin_usd), 1.0):
                notes.append(f"the solver's margin ({raw.objective_margin_usd:,.6f} USD) differs from "
                             f"the calculator's ({after.initial_margin_usd:,.6f} USD); the calculator's "
                             "figure is the one reported")
        timings["verify"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        x1 = u.x0 + trades
        g1 = lim.matrix @ x1
        shadow = np.zeros(len(lim.names))
        if raw.lower_duals.size:
            shadow[lim.lower_rows] += raw.lower_duals
        if raw.upper_duals.size:
            shadow[lim.upper_rows] += raw.upper_duals
        binding = ((np.abs(g1 - lim.lower) <= 1e-7 * lim.scale()) |
                   (np.abs(g1 - lim.upper) <= 1e-7 * lim.scale())) & bool(trades.any() or status != "no_trade")
        checks = tuple(LimitCheck(
            name=n, lower=None if not np.isfinite(lim.lower[r]) else float(lim.lower[r]),
            upper=None if not np.isfinite(lim.upper[r]) else float(lim.upper[r]),
            before=float(g0[r]), after=float(g1[r]), breached_before=bool(breached[r]),
            binding=bool(binding[r]), shadow_price=float(shadow[r]) if binding[r] else 0.0)
            for r, n in enumerate(lim.names))
        first = raw.reports[0]
        return Proposal(
            status=status, reason=reason, model=self.model.name,
            trades=self._trades(trades, u, snap, data),
            margin_before=before, margin_after=after, limits=checks,
            greeks_before=greeks_summary(inputs, u.x0), greeks_after=greeks_summary(inputs, x1),
            solver=first.solver, solver_status=first.status, problem_class=problem_class,
            solver_margin_usd=raw.objective_margin_usd, timings=timings,
            attempts=tuple(a for r in raw.reports for a in r.attempts),
            notes=tuple(notes + [w for r in raw.reports for w in r.warnings]),
            excluded=dict(u.excluded))

    # ------------------------------------------------------------------ steps
    def _sequential_convex(self, prob: RebalanceProblem, raw: RawSolution,
                           data: ProblemData) -> tuple[RawSolution, list[str]]:
        """Sequential convex programming: linearise the non-convex parts at the current book,
        re-solve inside a trust region, keep a step only if the calculator confirms the margin
        fell; shrink the region when it did not; stop when the region is negligible."""
        x0 = data.universe.x0
        scale = np.maximum(np.abs(x0), 1.0)
        best_x, best_raw = x0, None
        # a book outside its limits has no acceptable value yet: any feasible step improves it
        best = self._surrogate_objective(data, x0) if self._within_limits(data, x0).all() else np.inf
        radius = scale.copy()
        candidate, iterations = raw, 0
        while iterations < _SCP_MAX_ITERATIONS and np.all(radius > 1e-6 * scale):
            iterations += 1
            x_new = x0 + candidate.buy - candidate.sell
            if iterations > 1 and np.allclose(x_new, best_x, rtol=0.0, atol=1e-9):
                break  # the linearised problem returns the current point: converged
            value = self._surrogate_objective(data, x_new)
            if value < best - 1e-9 * max(abs(best), 1.0):
                best, best_x, best_raw = value, x_new, candidate
                radius = np.minimum(radius * 2.0, 10.0 * scale)
            else:
                radius = radius / 4.0
            prob.linearize_at(best_x)
            prob.set_trust_region(best_x, radius)
            try:
                candidate = prob.solve(self.solver)
            except SolverFailed:
                break  # keep the best step the calculator confirmed
        note = (f"non-convex components handled by sequential convex programming: {iterations} "
                "linearised solve(s) in a trust region, each step checked by the calculator")
        if best_raw is None:  # no step improved on the book
            zero = np.zeros_like(x0)
            return RawSolution(zero, zero, data.margin_before_usd, 0.0, raw.lower_duals,
                               raw.upper_duals, raw.reports), [note + "; none improved the book"]
        return best_raw, [note]

    def _surrogate_objective(self, data: ProblemData, x: np.ndarray) -> float:
        """The spec's objective with the calculator's margin (what SCP must improve)."""
        t = np.abs(x - data.universe.x0)
        cost = float(data.half_spread_usd @ t + data.impact_usd @ t ** 1.5)
        margin = data.bound.initial_margin_usd(x)
        if self.spec.objective == "free_margin":
            return cost if margin <= data.margin_before_usd - (self.spec.free_margin_usd or 0.0) else np.inf
        return margin + (self.spec.cost_weight if self.spec.objective == "margin_plus_cost" else 1.0) * cost

    @staticmethod
    def _clean(trades: np.ndarray, u: Universe) -> np.ndarray:
        """Drop solver dust: trades below 1e-10 of the position's size (or 1e-10 coin)."""
        size = np.maximum(np.abs(u.x0), 1.0)
        return np.where(np.abs(trades) <= 1e-10 * size, 0.0, trades)

    def _within_limits(self, data: ProblemData, x: np.ndarray) -> np.ndarray:
        lim = data.limits
        g = lim.matrix @ x
        tol = LIMIT_TOLERANCE * lim.scale()
        return (g >= lim.lower - tol) & (g <= lim.upper + tol)

    def _round_to_lots(self, trades: np.ndarray, data: ProblemData) -> tuple[np.ndarray, list[str]]:
        """Round to lots (nearest, then toward zero); if either breaks a limit or a bound,
        repair with the mixed-integer problem; the result is re-verified by the caller."""
        lot = data.lot
        step = np.where(lot > 0, lot, 1.0)
        u = data.universe
        candidates = [np.where(lot > 0, np.round(trades / step) * step, trades),
                      np.where(lot > 0, np.trunc(trades / step) * step, trades)]
        ok = []
        for t in candidates:
            in_bounds = np.all((t <= u.buy_max + 1e-12) & (-t <= u.sell_max + 1e-12))
            if in_bounds and self._within_limits(data, u.x0 + t).all():
                ok.append((data.bound.initial_margin_usd(u.x0 + t), t))
        if ok:
            return min(ok, key=lambda p: p[0])[1], ["trades rounded to lot sizes and re-verified"]
        repaired, notes = self._exact_lots(trades, data)
        return repaired, ["rounding to lots broke a limit or bound; repaired by the whole-lot "
                          "search"] + notes

    def _continuous_spec(self) -> RebalanceSpec:
        """The spec without lot integrality: lots are handled after the continuous optimum."""
        if self.spec.lots.mode != "exact":
            return self.spec
        return self.spec.model_copy(update={"lots": self.spec.lots.model_copy(update={"mode": "none"})})

    def _exact_lots(self, trades: np.ndarray, data: ProblemData) -> tuple[np.ndarray, list[str]]:
        """Whole-lot trades by mixed-integer search (HiGHS) in the box of lots around the
        continuous optimum, widened if the box holds no feasible point; the continuous optimum
        bounds the true one from below, so the gap to it is reported."""
        exact_spec = self.spec.model_copy(update={"lots": self.spec.lots.model_copy(update={"mode": "exact"})})
        prob = self.problem(data, exact_spec)
        lot = np.where(data.lot > 0, data.lot, 1.0)
        max_buy, max_sell = prob.max_lots(data)
        buy_lots, sell_lots = np.maximum(trades, 0) / lot, np.maximum(-trades, 0) / lot
        continuous = data.bound.initial_margin_usd(data.universe.x0 + trades)
        for width in (1.0, 3.0, None):
            if width is None:
                prob.set_lot_box(0 * max_buy, max_buy, 0 * max_sell, max_sell)
            else:
                prob.set_lot_box(np.maximum(np.floor(buy_lots) - width + 1, 0), np.minimum(np.ceil(buy_lots) + width - 1, max_buy),
                                 np.maximum(np.floor(sell_lots) - width + 1, 0), np.minimum(np.ceil(sell_lots) + width - 1, max_sell))
            try:
                raw = prob.solve(self.solver)
            except Infeasible:
                continue
            exact = np.round((raw.buy - raw.sell) / lot) * lot
            margin = data.bound.initial_margin_usd(data.universe.x0 + exact)
            where = "the whole universe" if width is None else f"within {int(width)} lot(s) of the continuous optimum"
            return exact, [f"whole-lot trades by mixed-integer search {where}: margin {margin:,.2f} USD, "
                           f"{margin - continuous:,.2f} USD above the continuous optimum (a lower bound)"]
        raise Infeasible("No whole-lot trade set satisfies every limit of the spec.",
                         prob.diagnose(self.solver))

    def _decide(self, trades: np.ndarray, data: ProblemData, book: Portfolio, market: MarketSnapshot,
                before: MarginResult, breached: np.ndarray) -> tuple[str, str, np.ndarray, MarginResult]:
        """Recompute margin on the post-trade book with the calculator, check every limit, and
        decide whether the trades are worth proposing."""
        u = data.universe
        names = u.names
        post = book.apply({n: q for n, q in zip(names, trades) if q != 0.0})
        after = self.model.bind(post.instruments, market).evaluate(post.quantities)
        cost = float(data.half_spread_usd @ np.abs(trades) + data.impact_usd @ np.abs(trades) ** 1.5)
        saved = before.initial_margin_usd - after.initial_margin_usd
        inside = self._within_limits(data, u.x0 + trades)
        if not inside.all():
            bad = [data.limits.names[r] for r in np.flatnonzero(~inside)]
            raise OptimizationError(f"the solver's trades break limit(s) {', '.join(bad)}; "
                                    "no proposal is made")
        if not trades.any():
            if breached.any():
                return ("no_trade", "the book breaks a limit and no allowed trade changes that",
                        trades, after)
            return ("no_trade", "the book is already at the lowest margin its limits and bounds "
                    "allow", trades, after)
        if breached.any():
            names_b = ", ".join(n for n, b in zip(data.limits.names, breached) if b)
            return ("restores_limits", f"the book breaks {names_b}; these trades bring it back inside "
                    f"(margin change {-saved:+,.2f} USD)", trades, after)
        if self.spec.objective == "free_margin":
            if saved + 1e-6 < (self.spec.free_margin_usd or 0.0):
                raise OptimizationError(f"the proposal frees {saved:,.2f} USD, less than the "
                                        f"{self.spec.free_margin_usd:,.2f} asked")
            return ("optimal", f"frees {saved:,.2f} USD of initial margin at the least cost "
                    f"({cost:,.2f} USD)", trades, after)
        if saved - cost < self.spec.min_saving_usd:
            zero = np.zeros_like(trades)
            return ("no_trade", f"the best trades save {saved:,.2f} USD of margin for {cost:,.2f} USD "
                    f"of cost, less than the {self.spec.min_saving_usd:,.2f} USD minimum", zero, before)
        return ("optimal", f"saves {saved:,.2f} USD of initial margin ({100 * saved / before.initial_margin_usd:.2f}%)"
                f" for {cost:,.2f} USD of estimated cost", trades, after)

    @staticmethod
    def _trades(trades: np.ndarray, u: Universe, market: MarketSnapshot, data: ProblemData) -> tuple[Trade, ...]:
        out = []
        idx = np.flatnonzero(trades)
        if not idx.size:
            return ()
        names = [u.names[j] for j in idx]
        bid = market.column(names, "bid_price")
        ask = market.column(names, "ask_price")
        mark = market.column(names, "mark_price")
        for k, j in enumerate(idx):
            q = float(trades[j])
            px = ask[k] if q > 0 else bid[k]
            cost = float(data.half_spread_usd[j] * abs(q) + data.impact_usd[j] * abs(q) ** 1.5)
            out.append(Trade(names[k], "buy" if q > 0 else "sell", q,
                             float(px if np.isfinite(px) else mark[k]), cost,
                             float(data.notional_usd[j] * abs(q))))
        return tuple(out)


def optimize(portfolio: Any, market: Any, model: MarginModel | str | Path = "deribit-pm",
             spec: RebalanceSpec | str | Path | Mapping[str, Any] | None = None,
             solver: str | None = None) -> Proposal:
    """Trades that minimise the model's margin within the spec's limits, verified by the calculator."""
    return Rebalancer(model, spec, solver).optimize(portfolio, market)
