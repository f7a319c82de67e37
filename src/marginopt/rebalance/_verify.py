"""One verifier for every answer: a trade set becomes a proposal only if it passes every check.

Whatever produced the trades (a stage-1 or tie-break solve, a repair, lot rounding, a
mixed-integer search, sequential convex programming), the same checks run on them, in numpy, on
the numbers of the problem:

- every trade bound of the spec: do_not_trade, close_only, no_new_instruments, sides frozen by a
  missing bid or ask, max_quantity overall and per instrument, the open-interest cap (all folded
  into each instrument's buy and sell bound by the universe);
- the turnover budget, max_instruments, whole lots (``round`` and ``exact`` modes);
- every greek limit, to ``LIMIT_TOLERANCE`` of its scale;
- margin: the calculator's margin of the post-trade book never above the margin before (unless
  the book broke a limit and the trades restore it); ``free_margin`` frees at least what was
  asked; the solver's own margin of its answer equals the calculator's to
  ``AGREEMENT_RTOL`` x max(margin before, margin after) + ``AGREEMENT_ATOL_USD`` (under
  ``free_margin``, where margin is a constraint, the solver's figure is an upper bound of it).

A failing answer is repaired only where the repair is exact and itself re-verified (clip to the
bounds, drop dust, re-round to lots); otherwise the caller moves on to the next stage or solver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._problem import ProblemData
from ._spec import RebalanceSpec

#: limits must hold to this fraction of their scale (the larger finite bound, at least 1)
LIMIT_TOLERANCE = 1e-9
#: trade bounds and the turnover budget hold to this fraction of the bound (at least 1 unit)
BOUND_TOLERANCE = 1e-12
#: a trade is a whole number of lots when within this fraction of a lot of one
LOT_TOLERANCE = 1e-9
#: the solver's margin and the calculator's agree to this, relative to the larger of the margins
#: before and after, plus ``AGREEMENT_ATOL_USD``
AGREEMENT_RTOL = 1e-7
AGREEMENT_ATOL_USD = 1e-4
#: margin after may exceed margin before by this fraction only (floating-point noise)
MARGIN_RTOL = 1e-12
#: free_margin frees at least the amount asked, to this fraction of it
FREE_MARGIN_RTOL = 1e-9
#: a trade is dust when below this fraction of the largest trade of the answer (or 1e-12 coin)
DUST_RTOL = 1e-7
#: a simpler answer (the tie-break's, a dust-free one) is preferred while its objective is within
#: this of the best verified one (relative to the larger of it and the margin before, plus
#: ``PREFERENCE_ATOL_USD``): just above the slack the tie-break stage is given
PREFERENCE_RTOL = 2e-9
PREFERENCE_ATOL_USD = 2e-6


@dataclass(frozen=True)
class Violation:
    """One broken rule: which (``rule``), of what (``subject``), by how much (``excess``, in the
    rule's own units) and in words."""

    rule: str
    subject: str
    excess: float
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Verification:
    """The verifier's finding on one trade vector."""

    trades: np.ndarray
    violations: tuple[Violation, ...]
    margin_usd: float
    cost_usd: float
    objective_usd: float
    turnover_usd: float
    solver_margin_usd: float | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def traded(self) -> int:
        return int(np.count_nonzero(self.trades))

    def summary(self) -> str:
        if self.ok:
            return "passed"
        head = "; ".join(str(v) for v in self.violations[:3])
        more = len(self.violations) - 3
        return head + (f"; and {more} more" if more > 0 else "")


class Verifier:
    """Checks trade vectors against one problem's data and spec."""

    def __init__(self, data: ProblemData, spec: RebalanceSpec) -> None:
        self.data = data
        self.spec = spec
        u = data.universe
        lim = data.limits
        self.x0 = u.x0
        self.names = u.names
        self._scale = lim.scale()
        g0 = lim.matrix @ u.x0
        tol = LIMIT_TOLERANCE * self._scale
        self.breached_before = (g0 < lim.lower - tol) | (g0 > lim.upper + tol)
        self.margin_before_usd = float(data.margin_before_usd)

    # ------------------------------------------------------------------ pieces
    def _bound_rule(self, j: int) -> str:
        """Why instrument ``j``'s bounds are what they are (only for a violation's message)."""
        spec, u, name = self.spec, self.data.universe, self.names[j]
        if name in spec.do_not_trade:
            return "do_not_trade"
        if name in spec.close_only:
            return "close_only"
        if spec.no_new_instruments and u.x0[j] == 0.0:
            return "no_new_instruments"
        return u.frozen.get(name, "trade bound")

    def cost_usd(self, t: np.ndarray) -> float:
        return self.data.cost_usd(t)

    def objective_usd(self, margin: float, cost: float) -> float:
        """The spec's objective, with the calculator's margin."""
        if self.spec.objective == "free_margin":
            return cost
        weight = self.spec.cost_weight if self.spec.objective == "margin_plus_cost" else 1.0
        return margin + weight * cost

    def within_limits(self, x: np.ndarray) -> np.ndarray:
        lim = self.data.limits
        g = lim.matrix @ x
        tol = LIMIT_TOLERANCE * self._scale
        return (g >= lim.lower - tol) & (g <= lim.upper + tol)

    def agreement_tolerance(self, margin_after: float) -> float:
        return AGREEMENT_RTOL * max(abs(self.margin_before_usd), abs(margin_after)) + AGREEMENT_ATOL_USD

    @property
    def restoring(self) -> bool:
        """The book breaks a limit before any trade: margin may rise to restore it."""
        return bool(self.breached_before.any())

    # ------------------------------------------------------------------ the check
    def check(self, trades: np.ndarray, *, solver_margin_usd: float | None = None,
              source: str = "") -> Verification:
        """Every rule of the spec on ``trades``; nothing here trusts the solver."""
        t = np.asarray(trades, dtype=float)
        d, u, spec = self.data, self.data.universe, self.spec
        found: list[Violation] = []
        if t.shape != u.x0.shape or not np.all(np.isfinite(t)):
            bad = "wrong shape" if t.shape != u.x0.shape else "non-finite trade"
            v = Violation("finite", "trades", np.inf, f"the answer has a {bad}")
            return Verification(t, (v,), np.inf, np.inf, np.inf, np.inf, solver_margin_usd, source)

        # trade bounds (every per-instrument rule of the spec is folded into these)
        for side, amount, bound in (("buy", np.maximum(t, 0.0), u.buy_max),
                                    ("sell", np.maximum(-t, 0.0), u.sell_max)):
            over = amount - bound
            tol = BOUND_TOLERANCE * np.maximum(np.where(np.isfinite(bound), bound, 0.0), 1.0)
            for j in np.flatnonzero(over > tol):
                found.append(Violation(
                    "trade_bound", self.names[j], float(over[j]),
                    f"{side} {amount[j]:.6g} of {self.names[j]} exceeds its bound {bound[j]:.6g} "
                    f"({self._bound_rule(j)})"))

        turnover = float(d.notional_usd @ np.abs(t))
        budget = spec.trade_bounds.turnover_usd
        if budget is not None and turnover > budget + BOUND_TOLERANCE * max(budget, 1.0):
            found.append(Violation("turnover", "turnover_usd", turnover - budget,
                                   f"turnover {turnover:,.2f} USD exceeds the budget {budget:,.2f} USD"))
        cap = spec.trade_bounds.max_instruments
        traded = int(np.count_nonzero(t))
        if cap is not None and traded > cap:
            found.append(Violation("max_instruments", "max_instruments", float(traded - cap),
                                   f"{traded} instruments traded, more than the {cap} allowed"))
        if spec.lots.mode != "none":
            lot = d.lot
            has = lot > 0
            frac = np.zeros_like(t)
            frac[has] = np.abs(t[has] / lot[has] - np.round(t[has] / lot[has]))
            for j in np.flatnonzero(frac > LOT_TOLERANCE):
                found.append(Violation("lot", self.names[j], float(frac[j] * lot[j]),
                                       f"{t[j]:.6g} of {self.names[j]} is not a whole number of "
                                       f"{lot[j]:.6g} lots"))

        # greek limits
        lim = d.limits
        inside = self.within_limits(u.x0 + t)
        g = lim.matrix @ (u.x0 + t)
        for r in np.flatnonzero(~inside):
            excess = max(lim.lower[r] - g[r], g[r] - lim.upper[r])
            found.append(Violation("limit", lim.names[r], float(excess),
                                   f"{lim.names[r]} is {g[r]:.6g}, outside [{lim.lower[r]:.6g}, "
                                   f"{lim.upper[r]:.6g}] by {excess:.3g}"))

        # margin, from the same arrays the problem was built from
        margin = float(d.bound.initial_margin_usd(u.x0 + t))
        cost = self.cost_usd(t)
        before = self.margin_before_usd
        if not np.isfinite(margin):
            found.append(Violation("margin", "initial_margin", np.inf, "the margin after is not finite"))
        elif not self.restoring and traded and margin > before + MARGIN_RTOL * max(before, 1.0):
            found.append(Violation("margin", "initial_margin", margin - before,
                                   f"margin after {margin:,.6f} USD is above margin before {before:,.6f} USD"))
        if spec.objective == "free_margin" and not self.restoring:
            asked = spec.free_margin_usd or 0.0
            freed = before - margin
            if freed < asked * (1.0 - FREE_MARGIN_RTOL):
                found.append(Violation("free_margin", "free_margin_usd", asked - freed,
                                       f"frees {freed:,.6f} USD, less than the {asked:,.2f} USD asked"))
        if solver_margin_usd is not None and np.isfinite(margin):
            gap = abs(solver_margin_usd - margin)
            if spec.objective == "free_margin":
                # margin is a constraint there, not minimised: the epigraph variables of a term
                # (expected shortfall's threshold, a worst case's bound) may sit above it, so the
                # solver's figure is an upper bound of the margin, and that is what it claims
                gap = max(margin - solver_margin_usd, 0.0)
            if not np.isfinite(gap) or gap > self.agreement_tolerance(margin):
                found.append(Violation(
                    "agreement", "solver_margin", float(gap),
                    f"the solver's margin {solver_margin_usd:,.6f} USD differs from the calculator's "
                    f"{margin:,.6f} USD by {gap:.3g} (tolerance {self.agreement_tolerance(margin):.3g})"))
        return Verification(t, tuple(found), margin, cost, self.objective_usd(margin, cost), turnover,
                            solver_margin_usd, source)

    # ------------------------------------------------------------------ repairs
    def clip(self, t: np.ndarray) -> np.ndarray:
        """Trades clipped into their bounds (exact: the bounds are the spec's)."""
        u = self.data.universe
        return np.clip(t, -u.sell_max, u.buy_max)

    def drop_dust(self, t: np.ndarray) -> np.ndarray:
        """Trades below ``DUST_RTOL`` of the answer's largest trade (or 1e-12 coin) set to zero."""
        if not t.any():
            return t
        threshold = max(DUST_RTOL * float(np.abs(t).max()), 1e-12)
        return np.where(np.abs(t) <= threshold, 0.0, t)

    def repairs(self, t: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Exact repairs of an answer, each to be verified like any answer."""
        out: list[tuple[str, np.ndarray]] = []
        clipped = self.clip(t)
        if not np.array_equal(clipped, t):
            out.append(("clipped to bounds", clipped))
        cleaned = self.drop_dust(clipped)
        if not np.array_equal(cleaned, clipped):
            out.append(("dust dropped", cleaned))
        if self.spec.lots.mode != "none":
            lot = self.data.lot
            step = np.where(lot > 0, lot, 1.0)
            rounded = np.where(lot > 0, np.round(cleaned / step) * step, cleaned)
            if not np.array_equal(rounded, cleaned):
                out.append(("re-rounded to lots", rounded))
        return out

    def best(self, passed: list[Verification]) -> Verification | None:
        """The verified answer to ship: the lowest objective; among answers within
        ``PREFERENCE_RTOL`` of it, the fewest instruments, then the least turnover."""
        if not passed:
            return None
        top = min(v.objective_usd for v in passed)
        slack = PREFERENCE_RTOL * max(abs(top), self.margin_before_usd, 1.0) + PREFERENCE_ATOL_USD
        near = [v for v in passed if v.objective_usd <= top + slack]
        return min(near, key=lambda v: (v.traded, v.turnover_usd))
