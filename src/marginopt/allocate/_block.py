"""One account's part of the joint problem: its trades, its moves in and out, its margin (its own
model's components, compiled by each ``BoundComponent.term`` exactly as the rebalancer compiles
them), its costs, trade bounds and limits. The joint problem is these blocks plus what ties them
(moves netting to zero, transfers, desk limits, equity).

Everything market-dependent is a cvxpy Parameter (names prefixed by the account's position), so a
new snapshot of the same structure re-solves without recompiling."""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ..errors import SpecError
from ..rebalance._problem import ProblemData, margin_expression
from ..rebalance._spec import RebalanceSpec

#: budgets set this fraction inside the spec's figure (as the rebalancer does), so an answer
#: within the solver's tolerance meets the figure itself
INSIDE = 1e-7


class Params:
    """Named Parameters of one joint problem (one namespace for every block)."""

    def __init__(self) -> None:
        self.items: dict[str, cp.Parameter] = {}

    def __call__(self, name: str, shape: tuple, signed: bool = False) -> cp.Parameter:
        if name not in self.items:
            self.items[name] = cp.Parameter(shape, name=name, nonneg=not signed)
        return self.items[name]

    def set(self, name: str, value: np.ndarray | float) -> None:
        par = self.items.get(name)
        if par is None:
            raise KeyError(f"the joint problem has no Parameter '{name}'")
        value = np.asarray(value, dtype=float).reshape(par.shape)
        par.value = np.maximum(value, 0.0) if par.is_nonneg() else value


@dataclass(frozen=True)
class BlockLayout:
    """Which of the account's universe columns may move (and why the others may not)."""

    movable: np.ndarray          # column indices into the account's universe
    tradeable: np.ndarray        # bool per column: the account's own spec lets it trade


class AccountBlock:
    """Variables, margin, cost and constraints of one account."""

    def __init__(self, k: int, data: ProblemData, spec: RebalanceSpec, layout: BlockLayout,
                 p: Params) -> None:
        self.k = k
        self.spec = spec
        self.layout = layout
        pre = f"a{k}"
        self.prefix = pre
        u = data.universe
        n = len(u.instruments)
        self.n = n
        if spec.lots.mode == "exact" or spec.trade_bounds.max_instruments is not None:
            raise SpecError("whole-lot searches (lots: exact, max_instruments) are not part of a "
                            "desk allocation: use lots: {mode: round}", source=spec.source,
                            field="lots.mode" if spec.lots.mode == "exact" else "trade_bounds.max_instruments")
        self.x0 = p(f"{pre}/x0", (n,), signed=True)
        self.buy = cp.Variable(n, nonneg=True, name=f"{pre}/buy")
        self.sell = cp.Variable(n, nonneg=True, name=f"{pre}/sell")
        m = layout.movable.size
        # one signed variable per movable column (net move in): split into in and out parts, a
        # free ray (in = out, both growing) would leave interior-point solvers an unbounded face
        self.move = cp.Variable(m, name=f"{pre}/move")
        self.x = cp.Variable(n, name=f"{pre}/x")
        scatter = np.zeros((n, m))
        scatter[layout.movable, np.arange(m)] = 1.0
        self.scatter = scatter
        moved = scatter @ self.move if m else 0.0
        cons: list[cp.Constraint] = [self.x == self.x0 + self.buy - self.sell + moved]
        buy_max = np.where(layout.tradeable, u.buy_max, 0.0)
        sell_max = np.where(layout.tradeable, u.sell_max, 0.0)
        self.buy_bounded = np.flatnonzero(np.isfinite(buy_max) & (buy_max > 0))
        self.sell_bounded = np.flatnonzero(np.isfinite(sell_max) & (sell_max > 0))
        self.closed_buy = np.flatnonzero(buy_max <= 0)
        self.closed_sell = np.flatnonzero(sell_max <= 0)
        if self.closed_buy.size:
            cons.append(self.buy[self.closed_buy] == 0)
        if self.closed_sell.size:
            cons.append(self.sell[self.closed_sell] == 0)
        if self.buy_bounded.size:
            cons.append(self.buy[self.buy_bounded] <= p(f"{pre}/buy_max", (self.buy_bounded.size,)))
        if self.sell_bounded.size:
            cons.append(self.sell[self.sell_bounded] <= p(f"{pre}/sell_max", (self.sell_bounded.size,)))

        # margin: each pool's initial components, in USD, exactly as the rebalancer compiles them
        self.margin, margin_cons, self.nonconvex = margin_expression(self.x, data.bound, p, f"{pre}/")
        cons += margin_cons
        self.trust: list[cp.Constraint] = []
        if self.nonconvex:
            centre, radius = p(f"{pre}/trust_centre", (n,), signed=True), p(f"{pre}/trust_radius", (n,))
            self.trust = [self.x - centre <= radius, centre - self.x <= radius]

        traded = self.buy + self.sell
        self.impact_idx = np.flatnonzero((buy_max > 0) | (sell_max > 0))
        self.has_impact = bool(spec.costs.impact > 0 and self.impact_idx.size)
        impact = p(f"{pre}/impact_usd", (self.impact_idx.size,)) if self.has_impact else None
        self.cost = ProblemData.cost_term(p(f"{pre}/half_spread_usd", (n,)), traded, impact, self.impact_idx)
        self.cost_weight = spec.cost_weight if spec.objective == "margin_plus_cost" else 1.0

        lim = data.limits
        self.lower_rows, self.upper_rows = lim.lower_rows, lim.upper_rows
        self.lower_con = self.upper_con = None
        if self.lower_rows.size:
            self.lower_con = p(f"{pre}/limit_lower_matrix", (self.lower_rows.size, n), signed=True) @ self.x \
                >= p(f"{pre}/limit_lower", (self.lower_rows.size,), signed=True)
            cons.append(self.lower_con)
        if self.upper_rows.size:
            self.upper_con = p(f"{pre}/limit_upper_matrix", (self.upper_rows.size, n), signed=True) @ self.x \
                <= p(f"{pre}/limit_upper", (self.upper_rows.size,), signed=True)
            cons.append(self.upper_con)
        if spec.trade_bounds.turnover_usd is not None:
            cons.append(p(f"{pre}/notional_usd", (n,)) @ traded
                        <= spec.trade_bounds.turnover_usd * (1.0 - INSIDE))
        self.constraints = cons
        # the least-churn weight of stage 2: trades by notional plus spread, moves by notional
        self.churn = p(f"{pre}/tiebreak_usd", (n,)) @ traded
        if m:
            self.churn = self.churn + p(f"{pre}/move_notional_usd", (m,)) @ cp.abs(self.move)
        self.cones = {c.term_cone() for pool in data.bound.pools for c in pool.initial if c.convex}

    # ------------------------------------------------------------------ numbers
    def update(self, data: ProblemData, p: Params) -> None:
        pre, u = self.prefix, data.universe
        self.data = data
        p.set(f"{pre}/x0", u.x0)
        if self.buy_bounded.size:
            p.set(f"{pre}/buy_max", u.buy_max[self.buy_bounded])
        if self.sell_bounded.size:
            p.set(f"{pre}/sell_max", u.sell_max[self.sell_bounded])
        for pool in data.bound.pools:
            for comp in pool.initial:
                if comp.convex:
                    for name, v in comp.values(pool.usd_rate).items():
                        p.set(f"{pre}/{pool.name}/{comp.name}/{name}", v)
        p.set(f"{pre}/half_spread_usd", data.half_spread_usd)
        if self.has_impact:
            p.set(f"{pre}/impact_usd", data.impact_usd[self.impact_idx])
        lim = data.limits
        if self.lower_rows.size:
            p.set(f"{pre}/limit_lower_matrix", lim.matrix[self.lower_rows])
            p.set(f"{pre}/limit_lower", lim.lower[self.lower_rows])
        if self.upper_rows.size:
            p.set(f"{pre}/limit_upper_matrix", lim.matrix[self.upper_rows])
            p.set(f"{pre}/limit_upper", lim.upper[self.upper_rows])
        if self.spec.trade_bounds.turnover_usd is not None:
            p.set(f"{pre}/notional_usd", data.notional_usd)
        p.set(f"{pre}/tiebreak_usd", data.tiebreak_usd)
        if self.layout.movable.size:
            p.set(f"{pre}/move_notional_usd", data.notional_usd[self.layout.movable])
        if self.nonconvex:
            self.linearize_at(u.x0, p)
            self.set_trust_region(u.x0, np.maximum(np.abs(u.x0), 1.0), p)

    def linearize_at(self, x: np.ndarray, p: Params) -> None:
        """Tangent of the non-convex components at ``x``."""
        for pool in self.data.bound.pools:
            for comp in pool.initial:
                if comp.convex:
                    continue
                xp = x[pool.columns]
                value, grad = comp.linearize(xp, comp.values(pool.usd_rate))
                p.set(f"{self.prefix}/{pool.name}/{comp.name}/lin_const", value - grad @ xp)
                p.set(f"{self.prefix}/{pool.name}/{comp.name}/lin_grad", grad)

    def set_trust_region(self, centre: np.ndarray, radius: np.ndarray, p: Params) -> None:
        p.set(f"{self.prefix}/trust_centre", centre)
        p.set(f"{self.prefix}/trust_radius", radius)

    # ------------------------------------------------------------------ answers
    def trades(self) -> np.ndarray:
        b = np.maximum(np.asarray(self.buy.value, dtype=float), 0.0)
        s = np.maximum(np.asarray(self.sell.value, dtype=float), 0.0)
        return b - s

    def moves(self) -> np.ndarray:
        """Net move into each universe column (coin, signed)."""
        if not self.layout.movable.size:
            return np.zeros(self.n)
        m = np.asarray(self.move.value, dtype=float)
        out = np.zeros(self.n)
        out[self.layout.movable] = m
        return out

    def structure(self) -> tuple:
        return (self.layout.movable.tobytes(), self.layout.tradeable.tobytes())
