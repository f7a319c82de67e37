"""``optimize(portfolio, market, model, spec) -> Proposal``: build, solve, verify, explain.

Every answer a solver gives is a claim. The Rebalancer collects candidate trade sets (each
solver's stage-1 and tie-break answers, their exact repairs, lot roundings, whole-lot searches,
sequential-convex steps), runs the one ``Verifier`` on each, and ships the best one that passes.
A verdict of "infeasible" is confirmed (trading nothing, then the elastic problem) before it is
reported; "unbounded" is never believed (margin and cost are bounded below). If no answer passes,
the failure is typed and lists what every attempt did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import Infeasible, OptimizationError, SolverFailed, SpecError, VerificationFailed
from ..margins import MarginModel, MarginResult, load_model
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ..venues import registry_generation
from ._data import (Universe, UniverseCache, build_universe, greeks_summary, limit_rows,
                    open_interest_coin)
from ._active_set import ScenarioGeneration
from ._native import SOLVER as NATIVE, NativeAnswers, NativeModels
from ._problem import ProblemData, RawSolution, RebalanceProblem
from ._scp import TrustRegionRules, rebalance_scp, scp_note
from ._proposal import BoundCheck, LimitCheck, Proposal, Status, Trade
from ._solvers import ProblemClass, SolveReport, chain, installed_solvers
from ._spec import SOLVER_PATHS, RebalanceSpec, load_spec
from ._verify import LIMIT_TOLERANCE, Verification, Verifier

__all__ = ["LIMIT_TOLERANCE", "Rebalancer", "optimize"]

#: the trust-region SCP of non-convex models (shared with the desk allocation)
SCP_RULES = TrustRegionRules()
#: a linearised problem infeasible in its trust region is retried this many times, each in a
#: region 100 times wider, before the claim of infeasibility is examined
_TRUST_WIDENINGS = 4


@dataclass
class _Search:
    """Every answer tried, what the verifier said of it, and the answers that passed."""

    verifier: Verifier
    problem_class: str = ""
    passed: list[tuple[Verification, RawSolution | None]] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    reports: list[SolveReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: mixed-integer searches that stopped at their time limit (with gap and bound), in words
    stopped_early: list[str] = field(default_factory=list)

    def consider(self, trades: np.ndarray, label: str, raw: RawSolution | None = None,
                 solver_margin_usd: float | None = None) -> None:
        """Verify an answer and, unless the solver's own margin disagrees with the calculator's
        (an inaccurate answer: its repairs would be too), its exact repairs."""
        v = self.verifier.check(trades, solver_margin_usd=solver_margin_usd, source=label)
        self._record(v, raw)
        if any(x.rule == "agreement" for x in v.violations):
            return
        # repairs are checked against the solver's margin too: what ships agrees with it
        for how, repaired in self.verifier.repairs(trades):
            if v.ok and how != "dust dropped":
                continue  # a passing answer is only simplified, never otherwise changed
            self._record(self.verifier.check(repaired, solver_margin_usd=solver_margin_usd,
                                             source=f"{label}, {how}"), raw)

    def add_reports(self, reports: tuple[SolveReport, ...]) -> None:
        for r in reports:
            if r.status == "tie-break failed":
                continue
            self.reports.append(r)
            if r.stopped_early:
                self.stopped_early.append(
                    f"{r.solver}'s mixed-integer search stopped at its time limit with a relative gap "
                    f"of {r.mip_gap if r.mip_gap is not None else float('nan'):.3g} (best bound "
                    f"{r.mip_bound if r.mip_bound is not None else float('nan'):,.2f} USD)")

    def _record(self, v: Verification, raw: RawSolution | None) -> None:
        self.log.append((v.source, v.summary()))
        if v.ok:
            self.passed.append((v, raw))

    def attempts(self) -> list[tuple[str, str]]:
        solver_attempts = [a for r in self.reports for a in r.attempts]
        return solver_attempts + self.log


class Rebalancer:
    """A model and a spec, with compiled problems kept by structure: a new snapshot of the same
    universe re-solves by updating Parameters only."""

    def __init__(self, model: MarginModel | str | Path = "deribit-pm",
                 spec: RebalanceSpec | str | Path | Mapping[str, Any] | None = None,
                 solver: str | None = None) -> None:
        self.model = load_model(model)
        self.spec = load_spec(spec)
        choice = solver or self.spec.solver
        # "native" / "cvxpy" choose a path; any other name is a cvxpy solver (the cvxpy path)
        self.path = choice.lower() if choice and choice.lower() in SOLVER_PATHS else None
        self.solver = None if self.path else choice
        self._problems: dict[tuple, RebalanceProblem] = {}
        self.native = NativeModels()  # persistent HiGHS models (linear problems), by structure
        self.scenarios = ScenarioGeneration()  # large scenario sets (``_active_set.py``)
        self.builds = 0
        self._universes = UniverseCache()  # the universe's structure, across snapshots
        self._lot_terms: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ data
    def problem_data(self, book: Portfolio, market: MarketSnapshot) -> ProblemData:
        universe, bound, inputs = build_universe(book, market, self.model, self.spec, self._universes)
        insts = list(universe.instruments)
        half = np.nan_to_num(market.half_spread_usd(insts, inputs), nan=0.0) if self.spec.costs.spread \
            else np.zeros(len(insts))
        impact = np.zeros(len(insts))
        place = self.model.trading_venue  # its lots and open-interest units
        if self.spec.costs.impact > 0:
            oi = np.nan_to_num(open_interest_coin(insts, market, place), nan=0.0)
            impact = self.spec.costs.impact * half / np.sqrt(np.maximum(oi, 1.0))
        contract, coin_lot = self._contracts(universe)
        # contracts the venue trades in USD: a lot is contract / forward coin
        lots = np.where(contract > 0, contract / inputs.forward, coin_lot)
        return ProblemData(
            universe=universe, bound=bound, inputs=inputs, limits=limit_rows(self.spec, inputs, universe.x0),
            half_spread_usd=np.maximum(half, 0.0), impact_usd=impact, notional_usd=inputs.index.copy(),
            lot=lots, margin_before_usd=bound.initial_margin_usd(universe.x0))

    def _contracts(self, universe: Universe) -> tuple[np.ndarray, np.ndarray]:
        """Per instrument: USD per contract where it trades in the venue's USD contracts (else
        0), and the lot in coin (terms of the spec and venue: computed once per universe)."""
        key = (registry_generation(), tuple(universe.names))
        known = self._lot_terms.get(key)
        if known is None:
            place = self.model.trading_venue
            insts = universe.instruments
            known = (np.array([self.spec.contract_usd(i, place) for i in insts], dtype=float),
                     np.array([self.spec.lot_size(i, place) for i in insts], dtype=float))
            self._lot_terms = {key: known}  # the universe of the latest snapshot
        return known

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
        verifier = Verifier(data, self.spec)
        timings["data"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        # a large scenario set is solved by scenario generation, never whole (``_active_set.py``)
        generated = self.scenarios.applies(data)
        # the cvxpy problem is built (or updated) only if the native path does not answer
        prob = None if generated else (lambda: self.problem(data, self._continuous_spec()))
        timings["build"] = time.perf_counter() - t1
        u = data.universe
        notes: list[str] = [f"{k} is not traded: {v}" for k, v in u.frozen.items()]
        notes += [f"limit {k} skipped: {v}" for k, v in getattr(data.limits, "skipped", {}).items()]

        t2 = time.perf_counter()
        search = _Search(verifier)
        if prob is None:
            self.scenarios.run(self, data, search)
        else:
            self._search(prob, data, search)
        timings["solve"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        chosen, raw, after = self._choose(search, book, snap, before, u.names)
        status, reason, trades, after = self._decide(chosen, data, verifier, before, after, search)
        timings["verify"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0
        notes += search.notes + search.stopped_early + self._placement_notes(trades, data)
        if self.solver and raw is not None and raw.solver and raw.solver != self.solver.upper():
            notes.append(f"{self.solver.upper()} (the solver asked for) gave no answer that passed "
                         f"verification; {raw.solver}'s did (see attempts)")
        return self._proposal(status, reason, trades, after, before, data, verifier, raw, chosen,
                              search, snap, timings, notes)

    # ------------------------------------------------------------------ the search
    def _search(self, prob: RebalanceProblem | Callable[[], RebalanceProblem], data: ProblemData,
                search: _Search) -> None:
        """Answers from each solver of the chain in turn, until one gives an answer that passes
        (the native HiGHS path first, where the problem is linear and the spec allows it). The
        cvxpy problem may be given as a function that builds it, called only if it is needed."""
        if self._native(data, search):
            return
        if callable(prob):
            prob = prob()
            search.problem_class = search.problem_class or prob.problem_class.value
        claims: list[str] = []
        for name in self._chain(prob):
            try:
                stage1, stage2 = self._first_solve(prob, data, name)
            except Infeasible as exc:
                claims.append(name)
                search.log += [a for a in exc.attempts if a not in search.log] or [(name, "infeasible")]
                continue
            except OptimizationError as exc:  # unbounded (not believed), failed
                search.log += getattr(exc, "attempts", []) or [(name, str(exc))]
                continue
            search.add_reports(stage1.reports)
            search.notes += [w for r in stage1.reports for w in r.warnings]
            answers = [a for a in (stage2, stage1) if a is not None]
            if stage2 is not None:
                search.notes += list(stage2.reports[-1].warnings)
            if prob.nonconvex:
                answers = [self._sequential_convex(prob, answers[0], data, search, name)]
            exact_margin = not prob.nonconvex  # the solver's margin is the model's, not a tangent
            if self.spec.lots.mode == "none":
                for a in answers:
                    search.consider(self._clean(a.trades, data.universe), f"{name} {a.stage}", a,
                                    a.objective_margin_usd if exact_margin else None)
            elif self._rounded(answers, data, search, name):
                return
            else:  # whole lots by mixed-integer search, seeded by this continuous optimum
                exact_prob, lot_claims = self._exact_lots(self._clean(answers[-1].trades, data.universe),
                                                          data, search)
                if not search.passed and lot_claims:
                    self._confirm_no_answer(exact_prob, data, search, lot_claims, "whole-lot ")
                return
            if search.passed:
                return
        if prob.nonconvex and self.spec.objective == "free_margin" and not claims:
            self._free_margin_by_least_margin(data, search)
            if search.passed:
                return
        if prob.has_impact and not claims and self.spec.lots.mode == "none":
            self._without_impact(data, search)
            if search.passed:
                return
        self._confirm_no_answer(prob, data, search, claims)

    def _native(self, data: ProblemData, search: _Search) -> bool:
        """The persistent HiGHS model (``_native.py``) unless the spec names cvxpy or a solver:
        whether an answer of it passed verification (if not, the cvxpy path runs; the log says why)."""
        if self.path == "cvxpy" or self.solver:
            return False
        try:
            model = self.native.get(data, self.spec)
            if not isinstance(model, str):
                search.problem_class = search.problem_class or ProblemClass.LP.value
            if isinstance(model, str):
                if self.path == "native":
                    raise SpecError(f"solver native cannot solve this problem: {model} (use cvxpy)",
                                    field="solver")
                return False
            answers = model.solve()
            self._offer(answers.offered, answers, data, search)
            if not search.passed and answers.hot:
                # a fresh model may end at other optima: answer exactly as it would
                search.log.append((NATIVE, "no answer from the previous basis passed: solved afresh"))
                answers = model.solve(fresh=True)
                self._offer(answers.offered, answers, data, search)
            if not search.passed and answers.withheld:
                self._offer(answers.withheld, None, data, search)
        except OptimizationError as exc:
            search.log += getattr(exc, "attempts", []) or [(NATIVE, str(exc))]
            search.log.append((NATIVE, "no answer: the cvxpy problem is solved instead"))
            return False
        if not search.passed:
            search.log.append((NATIVE, "no answer passed verification: the cvxpy problem is solved instead"))
        return bool(search.passed)

    def _offer(self, offered: tuple[RawSolution, ...], answers: NativeAnswers | None, data: ProblemData,
               search: _Search) -> None:
        if answers is not None:
            search.add_reports(answers.reports)
        for a in offered:
            search.consider(self._clean(a.trades, data.universe), f"{NATIVE} {a.stage}", a,
                            a.objective_margin_usd)

    def _without_impact(self, data: ProblemData, search: _Search) -> None:
        """Every cone solver failed on the impact-cost problem (its power cones can be badly
        conditioned when caps are tiny): the same problem without the impact term is linear and
        solved exactly; its answer is verified with the impact cost charged in full."""
        plain = self.spec.model_copy(update={"costs": self.spec.costs.model_copy(update={"impact": 0.0})})
        prob = self.problem(data, plain)
        for name in chain(prob.problem_class):
            try:
                stage1, stage2 = prob.solve(name)
            except OptimizationError as exc:
                search.log += getattr(exc, "attempts", []) or [(name, str(exc))]
                continue
            search.add_reports(stage1.reports)
            for a in (stage2, stage1):
                if a is not None:
                    search.consider(self._clean(a.trades, data.universe),
                                    f"{name} {a.stage} without the impact term", a, a.objective_margin_usd)
            if search.passed:
                search.notes.append("no cone solver answered the impact-cost problem accurately; the "
                                    "trades are the optimum without the impact term, verified with the "
                                    "impact cost charged (not the least-cost answer)")
                return

    def _free_margin_by_least_margin(self, data: ProblemData, search: _Search) -> None:
        """Non-convex free_margin: the linearised margin target can be met where the true margin
        is not. Search for the least margin instead; if that frees the amount asked it is a
        verified (if not least-cost) answer, else the amount cannot be freed by this search."""
        least = self.spec.model_copy(update={"objective": "min_margin", "free_margin_usd": None})
        prob = self.problem(data, least)
        inner = _Search(Verifier(data, least))
        name = chain(prob.problem_class, self.solver)[0]
        try:
            stage1, stage2 = self._first_solve(prob, data, name)
        except OptimizationError as exc:
            search.log.append(("least-margin search", str(exc).splitlines()[0]))
            return
        found = self._sequential_convex(prob, stage2 or stage1, data, inner, name)
        search.notes.append("the linearised search for the least-cost trades did not free the amount "
                            "asked; the least-margin trades are proposed if they do (not least cost)")
        search.consider(self._clean(found.trades, data.universe), "least-margin sequential convex programming")
        if not search.passed:
            freed = data.margin_before_usd - data.bound.initial_margin_usd(data.universe.x0 + found.trades)
            asked = self.spec.free_margin_usd or 0.0
            raise Infeasible(f"Sequential convex programming (a local search) found no trade set that "
                             f"frees {asked:,.2f} USD; the most it freed is {freed:,.2f} USD.",
                             {"free_margin_usd": freed - asked}, attempts=search.attempts())

    def _chain(self, prob: RebalanceProblem) -> tuple[str, ...]:
        """The solvers to try: a named one first (alone if it is not installed: that is a
        configuration error), then the rest of the class's chain should its answer not pass."""
        if not self.solver:
            return chain(prob.problem_class)
        named = self.solver.upper()
        if named not in installed_solvers():
            return (named,)
        return (named, *(n for n in chain(prob.problem_class) if n != named))

    @staticmethod
    def _first_solve(prob: RebalanceProblem, data: ProblemData, name: str
                     ) -> tuple[RawSolution, RawSolution | None]:
        """Stage 1 and the tie-break. A linearised (non-convex) problem is solved in a trust
        region around the book: infeasible there says nothing of the problem (a book outside its
        limits may need a longer step), so the region is widened before the claim stands."""
        if not prob.nonconvex:
            return prob.solve(name)
        x0 = data.universe.x0
        radius = np.maximum(np.abs(x0), 1.0)
        for _ in range(_TRUST_WIDENINGS):
            try:
                return prob.solve(name)
            except Infeasible:
                radius = radius * 100.0
                prob.set_trust_region(x0, radius)
        return prob.solve(name)

    def _confirm_no_answer(self, prob: RebalanceProblem, data: ProblemData, search: _Search,
                           claims: list[str], kind: str = "") -> None:
        """No answer passed. A claim of infeasibility is checked: by trading nothing, then by the
        elastic problem (its point is verified like any answer; the constraints it must break are
        recomputed in numpy). What cannot be confirmed is a typed failure with every attempt."""
        zero = np.zeros_like(data.universe.x0)
        if not claims and not search.reports:
            raise SolverFailed("No solver produced an answer.", search.attempts())
        if not claims:
            raise VerificationFailed("No answer of any solver passed verification, and no repair "
                                     "of one did.", search.attempts())
        if search.verifier.check(zero, source="no trade").ok:
            # every rule holds with no trade: the claims are false; trading nothing is verified
            search.notes.append(f"{', '.join(claims)} reported the problem infeasible, but trading "
                                "nothing meets every limit and rule: that claim is not believed")
            search.consider(zero, "no trade (infeasibility claim refuted)")
            return
        diagnosis = prob.diagnose(self.solver)
        search.log += list(diagnosis.attempts)
        if diagnosis.trades is not None and not diagnosis.moves:
            search.notes.append(f"{', '.join(claims)} reported the problem infeasible, but the "
                                "elastic problem found trades that break no limit")
            search.consider(self._clean(diagnosis.trades, data.universe), "elastic point")
            if search.passed:
                return
        if diagnosis.moves:
            raise Infeasible(f"No {kind}trade set satisfies every limit of the spec.", diagnosis.moves,
                             attempts=search.attempts())
        raise SolverFailed(f"{', '.join(claims)} reported the problem infeasible and the elastic "
                           "problem could not confirm it.", search.attempts())

    def _rounded(self, answers: list[RawSolution], data: ProblemData, search: _Search,
                 name: str) -> bool:
        """``round`` mode: the continuous answers rounded to lots (nearest, toward zero); whether
        one passed. ``exact`` mode goes straight to the mixed-integer search."""
        if self.spec.lots.mode != "round":
            return False
        lot = data.lot
        step = np.where(lot > 0, lot, 1.0)
        for a in answers:
            t = self._clean(a.trades, data.universe)
            for how, f in (("rounded to lots", np.round), ("rounded toward zero", np.trunc)):
                search.consider(np.where(lot > 0, f(t / step) * step, t), f"{name} {a.stage}, {how}", a)
        if search.passed:
            search.notes.append("trades rounded to lot sizes and re-verified")
            return True
        search.notes.append("rounding to lots broke a limit or bound; repaired by the whole-lot search")
        return False

    def _exact_lots(self, trades: np.ndarray, data: ProblemData, search: _Search
                    ) -> tuple[RebalanceProblem, list[str]]:
        """Whole-lot trades by mixed-integer search in the box of lots around the continuous
        optimum, widened if the box holds no feasible point; the continuous optimum bounds the
        true one from below, so the gap to it is reported."""
        exact_spec = self.spec.model_copy(update={"lots": self.spec.lots.model_copy(update={"mode": "exact"})})
        prob = self.problem(data, exact_spec)
        if "(lots)" not in search.problem_class:
            search.problem_class += f" + {prob.problem_class.value} (lots)"
        lot = np.where(data.lot > 0, data.lot, 1.0)
        max_buy, max_sell = prob.max_lots(data)
        buy_lots, sell_lots = np.maximum(trades, 0) / lot, np.maximum(-trades, 0) / lot
        continuous = data.bound.initial_margin_usd(data.universe.x0 + trades)
        claims: list[str] = []
        deadline = time.perf_counter() + self.spec.time_limit_s  # one budget for every width
        for width in (1.0, 3.0, None):
            left = deadline - time.perf_counter()
            if left <= 0.0:
                search.log.append(("whole-lot search", f"the {self.spec.time_limit_s:g} s time limit "
                                   "was spent before every box was searched"))
                break
            if width is None:
                prob.set_lot_box(np.zeros_like(max_buy), max_buy, np.zeros_like(max_sell), max_sell)
            else:
                prob.set_lot_box(np.maximum(np.floor(buy_lots) - width + 1, 0), np.minimum(np.ceil(buy_lots) + width - 1, max_buy),
                                 np.maximum(np.floor(sell_lots) - width + 1, 0), np.minimum(np.ceil(sell_lots) + width - 1, max_sell))
            where = "the whole universe" if width is None else f"within {int(width)} lot(s) of the continuous optimum"
            try:
                stage1, stage2 = prob.solve(self.solver, time_limit_s=left)
            except OptimizationError as exc:
                search.log.append((f"whole-lot search {where}", str(exc).splitlines()[0]))
                if width is None and isinstance(exc, Infeasible):
                    claims += [s for s, why in exc.attempts if why == "infeasible"]
                continue
            report = stage1.reports[0]
            search.add_reports(stage1.reports)
            for a in (stage2, stage1):
                if a is None:
                    continue
                exact = np.round(a.trades / lot) * lot
                search.consider(exact, f"{report.solver} whole lots {where} ({a.stage})", a,
                                a.objective_margin_usd if not prob.nonconvex else None)
            if search.passed:
                margin = min(v.margin_usd for v, _ in search.passed)
                note = (f"whole-lot trades by mixed-integer search {where}: margin {margin:,.2f} USD, "
                        f"{margin - continuous:,.2f} USD above the continuous optimum (a lower bound)")
                if report.stopped_early:
                    note += (f"; the search stopped at its time limit (relative gap "
                             f"{report.mip_gap if report.mip_gap is not None else float('nan'):.3g}, "
                             f"best bound {report.mip_bound if report.mip_bound is not None else float('nan'):,.2f})")
                search.notes.append(note)
                return prob, claims
        return prob, claims

    def _sequential_convex(self, prob: RebalanceProblem, raw: RawSolution, data: ProblemData,
                           search: _Search, solver: str) -> RawSolution:
        """Sequential convex programming (``_scp.py``: each non-convex margin by a convex model
        exact at the iterate, an adaptive trust region, every step's margin the calculator's and
        the step verified). No step improving the book: trading nothing."""
        found, outcome = rebalance_scp(prob, search.verifier, solver,
                                       lambda t: self._clean(t, data.universe), SCP_RULES)
        search.notes.append(scp_note(outcome, SCP_RULES, "non-convex components", "the calculator"))
        if found is None:
            zero_t = np.zeros_like(data.universe.x0)
            return RawSolution(zero_t, zero_t, data.margin_before_usd, 0.0, raw.lower_duals,
                               raw.upper_duals, raw.reports, "sequential convex programming")
        return found

    @staticmethod
    def _clean(trades: np.ndarray, u: Universe) -> np.ndarray:
        """Drop solver noise: trades below 1e-10 of the position's size (or 1e-10 coin)."""
        size = np.maximum(np.abs(u.x0), 1.0)
        return np.where(np.abs(trades) <= 1e-10 * size, 0.0, trades)

    def _continuous_spec(self) -> RebalanceSpec:
        """The spec without lot integrality: lots are handled after the continuous optimum."""
        if self.spec.lots.mode != "exact":
            return self.spec
        return self.spec.model_copy(update={"lots": self.spec.lots.model_copy(update={"mode": "none"})})

    # ------------------------------------------------------------------ the decision
    def _choose(self, search: _Search, book: Portfolio, market: MarketSnapshot, before: MarginResult,
                names: list[str]) -> tuple[Verification, RawSolution | None, MarginResult]:
        """The best verified answer whose post-trade book the calculator (bound to that book, not
        the universe) also finds no worse than before: the two calculations must agree."""
        verifier = search.verifier
        remaining = list(search.passed)
        while remaining:
            best = verifier.best([v for v, _ in remaining])
            assert best is not None
            raw = next(r for v, r in remaining if v is best)
            after = self._calculate(book, market, names, best.trades)
            gap = abs(after.initial_margin_usd - best.margin_usd)
            if gap <= 1e-9 * max(before.initial_margin_usd, 1.0) + 1e-6:
                return best, raw, after
            search.log.append((best.source, f"the calculator on the post-trade book gives "
                               f"{after.initial_margin_usd:,.6f} USD, the universe's {best.margin_usd:,.6f}"))
            remaining = [(v, r) for v, r in remaining if v is not best]
        raise VerificationFailed("No answer's margin was confirmed by the calculator on the "
                                 "post-trade book.", search.attempts())

    def _calculate(self, book: Portfolio, market: MarketSnapshot, names: list[str],
                   trades: np.ndarray) -> MarginResult:
        post = book.apply({names[j]: trades[j] for j in np.flatnonzero(trades)})
        return self.model.bind(post.instruments, market).evaluate(post.quantities)

    def _decide(self, chosen: Verification, data: ProblemData, verifier: Verifier,
                before: MarginResult, after: MarginResult, search: _Search
                ) -> tuple[Status, str, np.ndarray, MarginResult]:
        """Whether the verified trades are worth proposing, and in what words."""
        trades = chosen.trades
        saved = before.initial_margin_usd - after.initial_margin_usd
        cost = chosen.cost_usd
        lim_names = data.limits.names
        if not trades.any():
            if verifier.restoring:
                return (Status.NO_TRADE, "the book breaks a limit and no allowed trade changes that",
                        trades, after)
            if search.stopped_early:
                return (Status.NO_TRADE, "no trade set better than the book was found before the search "
                        "stopped: " + "; ".join(dict.fromkeys(search.stopped_early)), trades, after)
            if any("infeasible" in n for n in search.notes):
                return (Status.NO_TRADE, "no solver found a trade set that meets every limit, and the "
                        "current book does: no trade", trades, after)
            return (Status.NO_TRADE, "the book is already at the lowest margin its limits and bounds "
                    "allow", trades, after)
        if verifier.restoring:
            names_b = ", ".join(n for n, b in zip(lim_names, verifier.breached_before) if b)
            return (Status.RESTORES_LIMITS, f"the book breaks {names_b}; these trades bring it back inside "
                    f"(margin change {-saved:+,.2f} USD)", trades, after)
        if self.spec.objective == "free_margin":
            return (Status.OPTIMAL, f"frees {saved:,.2f} USD of initial margin at the least cost "
                    f"({cost:,.2f} USD)", trades, after)
        if saved - cost < self.spec.min_saving_usd:
            zero = np.zeros_like(trades)
            return (Status.NO_TRADE, f"the best trades save {saved:,.2f} USD of margin for {cost:,.2f} USD "
                    f"of cost, less than the {self.spec.min_saving_usd:,.2f} USD minimum", zero, before)
        return (Status.OPTIMAL, f"saves {saved:,.2f} USD of initial margin ({100 * saved / before.initial_margin_usd:.2f}%)"
                f" for {cost:,.2f} USD of estimated cost", trades, after)

    def _placement_notes(self, trades: np.ndarray, data: ProblemData) -> list[str]:
        """Continuous trades a venue would not take as shown (below its minimum amount)."""
        if self.spec.lots.mode != "none" or not trades.any():
            return []
        insts = data.universe.instruments
        idx = np.flatnonzero(trades)
        venue = self.spec.model_copy(update={"lots": self.spec.lots.model_copy(update={"mode": "round"})})
        place = self.model.trading_venue
        minimum = np.array([venue.lot_size(insts[j], place)
                            or venue.contract_usd(insts[j], place) / data.inputs.forward[j] for j in idx])
        small = [insts[j].name for j, m in zip(idx, minimum) if abs(trades[j]) < m]
        if not small:
            return []
        return [f"{len(small)} trade(s) are below the venue's minimum amount and cannot be placed as "
                f"shown ({', '.join(small[:5])}{' ...' if len(small) > 5 else ''}); set lots: "
                "{mode: round} for placeable trades"]

    # ------------------------------------------------------------------ the proposal
    def _proposal(self, status: Status, reason: str, trades: np.ndarray, after: MarginResult,
                  before: MarginResult, data: ProblemData, verifier: Verifier, raw: RawSolution | None,
                  chosen: Verification, search: _Search, snap: MarketSnapshot,
                  timings: dict[str, float], notes: list[str]) -> Proposal:
        u, lim = data.universe, data.limits
        g0 = lim.matrix @ u.x0
        x1 = u.x0 + trades
        g1 = lim.matrix @ x1
        shadow = np.zeros(len(lim.names))
        if raw is not None and raw.lower_duals.size:
            shadow[lim.lower_rows] += raw.lower_duals
        if raw is not None and raw.upper_duals.size:
            shadow[lim.upper_rows] += raw.upper_duals
        traded = bool(trades.any())
        binding = ((np.abs(g1 - lim.lower) <= 1e-7 * lim.scale()) |
                   (np.abs(g1 - lim.upper) <= 1e-7 * lim.scale())) & (traded or status is not Status.NO_TRADE)
        checks = tuple(LimitCheck(
            name=n, lower=None if not np.isfinite(lim.lower[r]) else float(lim.lower[r]),
            upper=None if not np.isfinite(lim.upper[r]) else float(lim.upper[r]),
            before=float(g0[r]), after=float(g1[r]), breached_before=bool(verifier.breached_before[r]),
            binding=bool(binding[r]), shadow_price=float(shadow[r]) if binding[r] else 0.0)
            for r, n in enumerate(lim.names))
        first = search.reports[0] if search.reports else None
        solver_margin = raw.objective_margin_usd if raw is not None and chosen.solver_margin_usd is not None \
            else chosen.solver_margin_usd
        return Proposal(
            status=status, reason=reason, model=self.model.name,
            trades=self._trades(trades, u, snap, data),
            margin_before=before, margin_after=after, limits=checks,
            greeks_before=greeks_summary(data.inputs, u.x0), greeks_after=greeks_summary(data.inputs, x1),
            solver=raw.solver if raw is not None else (first.solver if first else None),
            solver_status=(raw.reports[0].status if raw is not None else (first.status if first else None)),
            problem_class=search.problem_class,
            solver_margin_usd=solver_margin, timings=timings,
            attempts=tuple(search.attempts()),
            notes=tuple(dict.fromkeys(notes)),
            excluded=dict(u.excluded),
            bounds=self._bound_checks(trades, data, raw) if traded else (),
            verified_by=chosen.source)

    def _bound_checks(self, trades: np.ndarray, data: ProblemData, raw: RawSolution | None
                      ) -> tuple[BoundCheck, ...]:
        """Trade bounds the proposal sits on: the turnover budget, the instrument count, and each
        instrument's bound (max_quantity, open-interest cap, close_only)."""
        out: list[BoundCheck] = []
        tb = self.spec.trade_bounds
        if tb.turnover_usd is not None:
            used = float(data.notional_usd @ np.abs(trades))
            binding = used >= tb.turnover_usd * (1.0 - 1e-6)
            price = float(raw.turnover_dual) if raw is not None and binding else 0.0
            out.append(BoundCheck("turnover_usd", used, float(tb.turnover_usd), binding, price))
        if tb.max_instruments is not None:
            n = int(np.count_nonzero(trades))
            out.append(BoundCheck("max_instruments", float(n), float(tb.max_instruments),
                                  n >= tb.max_instruments, 0.0))
        u = data.universe
        for side, amount, bound in (("buy", np.maximum(trades, 0), u.buy_max),
                                    ("sell", np.maximum(-trades, 0), u.sell_max)):
            at = (amount > 0) & np.isfinite(bound) & (amount >= bound * (1.0 - 1e-7))
            for j in np.flatnonzero(at):
                out.append(BoundCheck(f"{u.names[j]}.{side}_max", float(amount[j]), float(bound[j]), True, 0.0))
        return tuple(out)

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
        costs = data.trade_costs_usd(trades)
        for k, j in enumerate(idx):
            q = float(trades[j])
            px = ask[k] if q > 0 else bid[k]
            out.append(Trade(names[k], "buy" if q > 0 else "sell", q,
                             float(px if np.isfinite(px) else mark[k]), float(costs[j]),
                             float(data.notional_usd[j] * abs(q))))
        return tuple(out)


def optimize(portfolio: Any, market: Any, model: MarginModel | str | Path = "deribit-pm",
             spec: RebalanceSpec | str | Path | Mapping[str, Any] | None = None,
             solver: str | None = None) -> Proposal:
    """Trades that minimise the model's margin within the spec's limits, verified by the calculator."""
    return Rebalancer(model, spec, solver).optimize(portfolio, market)
