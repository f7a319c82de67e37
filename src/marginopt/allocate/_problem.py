"""The joint problem: the accounts' blocks plus what ties them together.

- moves: per move group and instrument, the accounts' net moves sum to zero (and, with
  ``relocate_only``, the group's gross position in it does not grow); a fee per USD moved;
- transfers: per move group and collateral currency, the accounts' net transfers sum to zero,
  none transfers more than it holds; a fee per USD transferred;
- desk limits: the sum over accounts of each account's greek rows within the desk's bounds;
- equity: each account's margin plus its trading cost at most its equity after transfers less
  its buffer.

Stage 1 minimises the desk's margin plus costs and fees; stage 2 keeps that optimum and moves,
trades and transfers the least (as the rebalancer's tie-break does), so allocations never churn.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cvxpy as cp
import numpy as np

from ..errors import OptimizationError
from ..rebalance._data import RowBounds
from ..rebalance._problem import ProblemData
from ..rebalance._solvers import ProblemClass, SolveReport, solve
from ._accounts import Account, DeskRules
from ._block import INSIDE, AccountBlock, BlockLayout, Params


#: stage 1's weight on churn (USD per USD of notional): far below any tolerance of the checks
CHURN_NUDGE = 1e-9


@dataclass(frozen=True)
class MoveGroup:
    """Accounts that may move positions and collateral between them, the instruments that may
    move, and where each sits in each account's movable columns (-1: not in that account)."""

    accounts: tuple[int, ...]
    instruments: tuple[str, ...]
    where: np.ndarray                 # len(accounts) x len(instruments), index into block.movable
    currencies: tuple[str, ...] = ()  # collateral currencies transfers may use
    #: accounts of the group with equity (the only ones that transfer)
    transferring: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeskRows(RowBounds):
    """Desk limits as rows ``lower <= sum_k M_k x_k <= upper``."""

    names: list[str]
    matrices: list[np.ndarray]        # per account: R x n_k
    lower: np.ndarray
    upper: np.ndarray


    def values(self, xs: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(len(self.names))
        for m, x in zip(self.matrices, xs):
            out += m @ x
        return out


@dataclass(frozen=True)
class JointAnswer:
    """A solver's answer (a claim until every account's verifier and the desk checks pass it)."""

    trades: tuple[np.ndarray, ...]
    moves: tuple[np.ndarray, ...]
    #: per group: accounts x currencies, signed (in > 0)
    transfers: tuple[np.ndarray, ...]
    solver_margins_usd: tuple[float, ...]
    reports: tuple[SolveReport, ...]
    stage: str
    variant: str
    duals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def solver(self) -> str:
        return self.reports[-1].solver if self.reports else ""


class JointProblem:
    """Blocks, ties, objective; built once per structure, re-solved by updating Parameters."""

    def __init__(self, accounts: list[Account], datas: list[ProblemData], blocks_layout: list[BlockLayout],
                 groups: list[MoveGroup], desk: DeskRows, rules: DeskRules) -> None:
        self.p = p = Params()
        self.rules = rules
        self.groups = groups
        self.blocks = [AccountBlock(k, d, a.spec, lay, p)
                       for k, (a, d, lay) in enumerate(zip(accounts, datas, blocks_layout))]
        cons: list[cp.Constraint] = [c for b in self.blocks for c in b.constraints]
        trust = [c for b in self.blocks for c in b.trust]
        fees: list[cp.Expression] = []
        churn: list[cp.Expression] = [b.churn for b in self.blocks]

        # ---- moves: net zero per instrument within a group; relocate only
        self.transfers: list[cp.Variable | None] = []
        for g, grp in enumerate(groups):
            n_i = len(grp.instruments)
            if n_i:
                net = 0
                gross_terms = []
                for r, k in enumerate(grp.accounts):
                    b = self.blocks[k]
                    cols = np.flatnonzero(grp.where[r] >= 0)
                    if not cols.size:
                        continue
                    pick = np.zeros((n_i, b.layout.movable.size))
                    pick[cols, grp.where[r][cols]] = 1.0
                    net = net + pick @ b.move
                    if rules.moves.relocate_only:
                        start = p(f"g{g}/a{k}/x0_moved", (b.layout.movable.size,), signed=True)
                        gross_terms.append(pick @ cp.abs(start + b.move))
                    if rules.moves.fee_rate > 0:  # charged once per move: on the receiving side
                        fees.append(rules.moves.fee_rate * p(f"a{k}/move_notional_usd", (b.layout.movable.size,))
                                    @ cp.pos(b.move))
                cons.append(net == 0)
                if gross_terms:
                    cons.append(cp.sum(gross_terms) <= p(f"g{g}/gross", (n_i,)))
            # ---- transfers: net zero per currency, none beyond what an account holds
            if grp.currencies and grp.transferring:
                shape = (len(grp.transferring), len(grp.currencies))
                tr = cp.Variable(shape, name=f"g{g}/transfer")   # signed: into the account
                cons.append(cp.sum(tr, axis=0) == 0)
                cons.append(p(f"g{g}/collateral", shape) + tr >= 0)
                rate = p(f"g{g}/rate", (len(grp.currencies),))
                churn.append(cp.sum(cp.abs(tr) @ rate))
                if rules.transfers.fee_rate > 0:
                    fees.append(rules.transfers.fee_rate * cp.sum(cp.pos(tr) @ rate))
                self.transfers.append(tr)
            else:
                self.transfers.append(None)

        # ---- desk limits
        self.desk = desk
        self.desk_lower = self.desk_upper = None
        lo, hi = desk.lower_rows, desk.upper_rows
        if lo.size:
            expr = sum(p(f"desk/lower_matrix/a{k}", (lo.size, b.n), signed=True) @ b.x
                       for k, b in enumerate(self.blocks))
            self.desk_lower = expr >= p("desk/lower", (lo.size,), signed=True)
            cons.append(self.desk_lower)
        if hi.size:
            expr = sum(p(f"desk/upper_matrix/a{k}", (hi.size, b.n), signed=True) @ b.x
                       for k, b in enumerate(self.blocks))
            self.desk_upper = expr <= p("desk/upper", (hi.size,), signed=True)
            cons.append(self.desk_upper)

        # ---- equity: margin plus cost within equity after transfers, less the buffer
        self.equity_con: dict[int, cp.Constraint] = {}
        for k, (a, b) in enumerate(zip(accounts, self.blocks)):
            if a.equity is None:
                continue
            room = p(f"a{k}/equity_room_usd", (), signed=True)
            received = 0
            for g, grp in enumerate(groups):
                if k in grp.transferring and self.transfers[g] is not None:
                    r = grp.transferring.index(k)
                    received = received + self.transfers[g][r, :] @ p(f"g{g}/rate", (len(grp.currencies),))
            con = b.margin + b.cost <= room + received
            self.equity_con[k] = con
            cons.append(con)

        self.margin = cp.sum(cp.hstack([b.margin for b in self.blocks]))
        self.cost = cp.sum(cp.hstack([b.cost_weight * b.cost for b in self.blocks]))
        self.fees = cp.sum(cp.hstack(fees)) if fees else cp.Constant(0.0)
        self.objective = self.margin + self.cost + self.fees
        self.constraints = cons + trust
        churn_expr = cp.sum(cp.hstack(churn))
        best = p("stage1_best", (), signed=True)
        no_trades = [c for b in self.blocks for c in (b.buy == 0, b.sell == 0)]
        # a nudge of 1e-9 USD per USD moved, traded or transferred: among allocations of equal
        # margin (a transfer where no equity binds, a move that frees nothing) the least churn
        # wins in stage 1 already, whatever the solver (SCIP's stage 2 can fail at its tolerance)
        nudged = self.objective + CHURN_NUDGE * churn_expr
        self.problems = {
            "full": (cp.Problem(cp.Minimize(nudged), self.constraints),
                     cp.Problem(cp.Minimize(churn_expr), self.constraints + [self.objective <= best])),
            "moves only": (cp.Problem(cp.Minimize(nudged), self.constraints + no_trades),
                           cp.Problem(cp.Minimize(churn_expr),
                                      self.constraints + no_trades + [self.objective <= best])),
        }
        self.nonconvex = any(b.nonconvex for b in self.blocks)
        self.problem_class = self._classify()

    def _classify(self) -> ProblemClass:
        cones = set().union(*(b.cones for b in self.blocks))
        socp = any(b.has_impact for b in self.blocks) or "soc" in cones
        return ProblemClass.SOCP if socp else ProblemClass.QP if "quadratic" in cones else ProblemClass.LP

    # ------------------------------------------------------------------ numbers
    def update(self, accounts: list[Account], datas: list[ProblemData]) -> None:
        p = self.p
        for b, d in zip(self.blocks, datas):
            b.update(d, p)
        for g, grp in enumerate(self.groups):
            if grp.instruments and self.rules.moves.relocate_only:
                gross = np.zeros(len(grp.instruments))
                for r, k in enumerate(grp.accounts):
                    b = self.blocks[k]
                    x0m = datas[k].universe.x0[b.layout.movable]
                    p.set(f"g{g}/a{k}/x0_moved", x0m)
                    cols = np.flatnonzero(grp.where[r] >= 0)
                    gross[cols] += np.abs(x0m[grp.where[r][cols]])
                # a hair of room: the solver's feasibility tolerance must not make the book
                # itself infeasible
                p.set(f"g{g}/gross", gross * (1.0 + 1e-12))
            if self.transfers[g] is not None:
                p.set(f"g{g}/collateral", np.array([[(accounts[k].equity or {}).get(c, 0.0)
                                                      for c in grp.currencies] for k in grp.transferring]))
                p.set(f"g{g}/rate", np.array([accounts[grp.accounts[0]].currency_rate(c)
                                              for c in grp.currencies]))
        lo, hi = self.desk.lower_rows, self.desk.upper_rows
        for k in range(len(self.blocks)):
            if lo.size:
                p.set(f"desk/lower_matrix/a{k}", self.desk.matrices[k][lo])
            if hi.size:
                p.set(f"desk/upper_matrix/a{k}", self.desk.matrices[k][hi])
        if lo.size:
            p.set("desk/lower", self.desk.lower[lo])
        if hi.size:
            p.set("desk/upper", self.desk.upper[hi])
        for k, a in enumerate(accounts):
            if a.equity is not None:
                eq = float(a.equity_usd or 0.0)
                p.set(f"a{k}/equity_room_usd", eq - a.buffer_usd - INSIDE * max(eq, 1.0))

    def linearize_at(self, xs: list[np.ndarray]) -> None:
        for b, x in zip(self.blocks, xs):
            if b.nonconvex:
                b.linearize_at(x, self.p)

    def set_trust_region(self, centres: list[np.ndarray], radii: list[np.ndarray]) -> None:
        for b, c, r in zip(self.blocks, centres, radii):
            if b.nonconvex:
                b.set_trust_region(c, r, self.p)

    # ------------------------------------------------------------------ solving
    def solve(self, variant: str, solver: str, *, least_churn: bool = True
              ) -> tuple[JointAnswer, JointAnswer | None]:
        """Stage 1 with ``solver``, then (``least_churn``) the least-churn stage with the same
        solver. Stage 1 alone already prefers less churn (``CHURN_NUDGE``)."""
        first_prob, second_prob = self.problems[variant]
        first = solve(first_prob, self.problem_class, solver, bounded_below=True)
        one = self._answer("stage 1", variant, (first,), duals=True)
        if not least_churn:
            return one, None
        best = float(self.objective.value)
        self.p.set("stage1_best", best + 1e-9 * abs(best) + 1e-6)
        try:
            second = solve(second_prob, self.problem_class, first.solver, bounded_below=True)
        except OptimizationError as exc:
            failed = SolveReport(first.solver, "tie-break failed", 0.0, (f"stage 2 failed: {exc}",))
            return replace(one, reports=(first, failed)), None
        return one, self._answer("least churn", variant, (first, second), duals=False, like=one)

    def _answer(self, stage: str, variant: str, reports: tuple[SolveReport, ...], *, duals: bool,
                like: JointAnswer | None = None) -> JointAnswer:
        trades = tuple(b.trades() for b in self.blocks)
        moves = tuple(b.moves() for b in self.blocks)
        transfers = []
        for g, tr in zip(self.groups, self.transfers):
            if tr is None:
                transfers.append(np.zeros((len(g.transferring), len(g.currencies))))
            else:
                transfers.append(np.asarray(tr.value, dtype=float))
        margins = tuple(float(b.margin.value) if b.margin.value is not None else float("nan")
                        for b in self.blocks)
        d = like.duals if like is not None else (self._duals() if duals else {})
        return JointAnswer(trades, moves, tuple(transfers), margins, reports, stage, variant, d)

    def _duals(self) -> dict[str, np.ndarray]:
        def dual(con: cp.Constraint | None) -> np.ndarray:
            if con is None or con.dual_value is None:
                return np.zeros(0)
            return np.atleast_1d(np.asarray(con.dual_value, dtype=float))
        out = {"desk/lower": dual(self.desk_lower), "desk/upper": dual(self.desk_upper)}
        for b in self.blocks:
            out[f"a{b.k}/lower"] = dual(b.lower_con)
            out[f"a{b.k}/upper"] = dual(b.upper_con)
        for k, con in self.equity_con.items():
            out[f"a{k}/equity"] = dual(con)
        return out

    @property
    def compiled(self) -> object:
        return getattr(self.problems["full"][0]._cache, "param_prog", None)

