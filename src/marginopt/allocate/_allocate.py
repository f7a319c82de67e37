"""``allocate(accounts, rules) -> Allocation``: one joint problem over a desk's accounts, every
answer checked account by account by the rebalancer's ``Verifier`` and at desk level (moves net to
zero within a group, desk limits, equity, the desk's total), and every margin recomputed by each
account's calculator on its post-allocation book.

The numbers of each account are the rebalancer's own (``Rebalancer.problem_data``: universe,
bound model, limits, costs, lots, trade bounds); an account's universe is widened only by the
instruments other accounts of its move group hold (they may move in, not trade).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import cvxpy as cp
import numpy as np

from ..errors import Infeasible, InputError, OptimizationError, SolverFailed, VerificationFailed
from ..instruments import parse_instrument
from ..margins import MarginResult
from ..portfolio import Portfolio
from ..rebalance import LimitCheck, RebalanceSpec, Rebalancer, Trade
from ..rebalance._data import _candidates, greeks_summary, limit_rows
from ..rebalance._optimize import SCP_RULES
from ..rebalance._problem import ProblemData
from ..rebalance._scp import PieceEpigraph, Trial, trust_region_scp, scp_note, with_pieces, zero_tangents
from ..rebalance._solvers import ProblemClass, chain, installed_solvers, solve
from ..rebalance._verify import (AGREEMENT_ATOL_USD, AGREEMENT_RTOL, DUST_RTOL, LIMIT_TOLERANCE, MARGIN_RTOL,
                                 Verifier)
from ._accounts import Account, DeskRules, check_desk, load_rules, move_groups
from ._block import BlockLayout
from ._errors import WrongVenueSnapshot
from ._problem import DeskRows, JointAnswer, JointProblem, MoveGroup
from ._result import (AccountAllocation, Allocation, AllocationStatus, BindingLimit, Move, Transfer)

__all__ = ["Allocator", "allocate"]

#: moves and transfers below this fraction of the position (or 1 unit) are solver noise
_DUST = 1e-10
#: moves only relocate positions: the group's gross position may not grow by more than this
#: (relative to it, at least 1 coin), the feasibility tolerance of the solvers used (SCIP: 1e-9)
_MOVE_RTOL = 1e-8


# --------------------------------------------------------------------------- preparation
@dataclass
class _Desk:
    """Everything one allocation needs, built from the accounts and rules."""

    accounts: list[Account]
    datas: list[ProblemData]
    layouts: list[BlockLayout]
    groups: list[MoveGroup]
    desk: DeskRows
    notes: list[str] = field(default_factory=list)
    before: list[MarginResult] = field(default_factory=list)


def _can_margin(account: Account, name: str) -> bool:
    inst = parse_instrument(name)
    m = account.model
    if inst.settlement.value not in m.settlements:
        return False
    return m.pooling == "single" or inst.underlying in m.currencies


def _prepare(accounts: list[Account], rules: DeskRules) -> _Desk:
    check_desk(accounts)
    group_idx = move_groups(accounts, rules)
    notes: list[str] = []
    # the instruments each group may move: held by an account of it, not excluded
    group_names: list[list[str]] = []
    for idx in group_idx:
        if not rules.moves.allowed:
            group_names.append([])
            continue
        held = dict.fromkeys(n for k in idx for n, q in accounts[k].portfolio.positions.items() if q != 0.0)
        if rules.moves.instruments != "held":
            held = {n: None for n in rules.moves.instruments if n in held}
        names = [n for n in held if n not in rules.moves.exclude]
        group_names.append(names)
    extras: list[list[str]] = [[] for _ in accounts]
    movable_names: list[set[str]] = [set() for _ in accounts]
    for idx, names in zip(group_idx, group_names):
        for k in idx:
            a = accounts[k]
            for n in names:
                if n in a.spec.do_not_trade:
                    continue  # a frozen position stays where it is, and nothing joins it
                if not _can_margin(a, n):
                    notes.append(f"{n} cannot move into {a.name}: model {a.model.name} does not margin it")
                    continue
                movable_names[k].add(n)
                if a.portfolio.quantity(n) == 0.0:
                    extras[k].append(n)
    # each account's numbers, by the rebalancer (its universe widened by what may move in)
    datas: list[ProblemData] = []
    layouts: list[BlockLayout] = []
    before: list[MarginResult] = []
    for k, a in enumerate(accounts):
        own = _candidates(a.portfolio, a.market, a.spec)
        book, spec = a.portfolio, a.spec
        if extras[k]:
            book = Portfolio({**a.portfolio.positions, **{n: 0.0 for n in extras[k]}}, a.portfolio.source)
            spec = a.spec.model_copy(update={"universe": list(own)})
            spec._source = a.spec.source
        try:
            data = Rebalancer(a.model, spec).problem_data(book, a.market)
        except InputError as exc:
            if exc.row is None:  # name the account the error is in
                raise type(exc)(exc.message, source=exc.source, row=a.name, field=exc.field,
                                value=exc.value) from None
            raise
        u = data.universe
        ownset = set(own)
        tradeable = np.array([n in ownset for n in u.names], dtype=bool)
        if not tradeable.all():
            frozen = dict(u.frozen)
            for j in np.flatnonzero(~tradeable):
                frozen[u.names[j]] = "held by another account of the group: it may move in, not be traded"
            u = replace(u, buy_max=np.where(tradeable, u.buy_max, 0.0),
                        sell_max=np.where(tradeable, u.sell_max, 0.0), frozen=frozen)
            data = replace(data, universe=u)
        movable = np.array([j for j, n in enumerate(u.names) if n in movable_names[k]], dtype=int)
        layouts.append(BlockLayout(movable, tradeable))
        datas.append(data)
        before.append(a.model.bind(a.portfolio.instruments, a.market).evaluate(a.portfolio.quantities))
        notes += [f"{a.name}: {n} is not traded: {why}" for n, why in _frozen_notes(data, extras[k])]
    groups: list[MoveGroup] = []
    for idx, names in zip(group_idx, group_names):
        names = [n for n in names if sum(n in movable_names[k] for k in idx) > 1]
        where = np.full((len(idx), len(names)), -1, dtype=int)
        for r, k in enumerate(idx):
            pos = {datas[k].universe.names[j]: i for i, j in enumerate(layouts[k].movable)}
            for c, n in enumerate(names):
                where[r, c] = pos.get(n, -1)
        _check_marks(accounts, idx, names)
        currencies: tuple[str, ...] = ()
        transferring: tuple[int, ...] = ()
        if rules.transfers.allowed:
            transferring = tuple(k for k in idx if accounts[k].equity is not None)
            currencies = tuple(sorted({c for k in transferring for c in (accounts[k].equity or {})}))
            if len(transferring) < 2:
                transferring, currencies = (), ()
        groups.append(MoveGroup(tuple(idx), tuple(names), where, currencies, transferring))
    # accounts' movable columns that no group can use
    for k in range(len(accounts)):
        usable = set()
        for g in groups:
            if k in g.accounts:
                r = g.accounts.index(k)
                usable |= {g.instruments[c] for c in np.flatnonzero(g.where[r] >= 0)}
        names_k = datas[k].universe.names
        keep = np.array([j for j in layouts[k].movable if names_k[j] in usable], dtype=int)
        layouts[k] = BlockLayout(keep, layouts[k].tradeable)
    desk = _desk_rows(rules, datas)
    return _Desk(accounts, datas, layouts, groups, desk, list(dict.fromkeys(notes)), before)


def _frozen_notes(data: ProblemData, extras: list[str]) -> list[tuple[str, str]]:
    """Held instruments that may not trade, with why (the extras are not held: not listed)."""
    skip = set(extras)
    return [(n, why) for n, why in data.universe.frozen.items() if n not in skip]


def _check_marks(accounts: list[Account], idx: list[int], names: list[str]) -> None:
    """A move is priced at one mark: the group's snapshots must agree on it."""
    first = accounts[idx[0]]
    if not names:
        return
    ref = first.market.column(names, "mark_price")
    for k in idx[1:]:
        a = accounts[k]
        if a.market is first.market:
            continue
        other = a.market.column(names, "mark_price")
        bad = np.flatnonzero(~np.isclose(ref, other, rtol=0.0, atol=0.0, equal_nan=True))
        if bad.size:
            n = names[int(bad[0])]
            raise WrongVenueSnapshot(f"{first.name} and {a.name} see different marks for {n} "
                                     f"({ref[bad[0]]} and {other[bad[0]]}): accounts that move "
                                     "positions between them share one snapshot",
                                     source=a.market.source, row=a.name, field="market")


def _desk_rows(rules: DeskRules, datas: list[ProblemData]) -> DeskRows:
    """Desk limits as rows over each account's universe (the spec's own greek rows, summed)."""
    if not rules.limits:
        return DeskRows([], [np.zeros((0, len(d.universe.x0))) for d in datas], np.zeros(0), np.zeros(0))
    absolute = RebalanceSpec(limits={u: lim.model_copy(update={"relative": False})
                                     for u, lim in rules.limits.items()})
    per = [limit_rows(absolute, d.inputs, d.universe.x0) for d in datas]
    names: list[str] = []
    for u, lim in rules.limits.items():
        tag = " (relative)" if lim.relative else ""
        for g in ("delta", "vega", "gamma"):
            if getattr(lim, g) is not None:
                names.append((f"{u}.{g}", tag))
        for key in lim.vega_buckets:
            names.append((f"{u}.vega[{key}d]", tag))
    present = set().union(*(set(r.names) for r in per))
    lower, upper, label = [], [], []
    mats = [np.zeros((0, len(d.universe.x0))) for d in datas]
    rows_by_acct: list[list[np.ndarray]] = [[] for _ in datas]
    skipped = []
    for base, tag in names:
        if base not in present:
            skipped.append(base)
            continue
        und, _, greek = base.partition(".")
        lim = rules.limits[und]
        bounds = lim.vega_buckets[greek[5:-2]] if greek.startswith("vega[") else getattr(lim, greek)
        current = 0.0
        for k, (r, d) in enumerate(zip(per, datas)):
            row = r.matrix[r.names.index(base)] if base in r.names else np.zeros(len(d.universe.x0))
            rows_by_acct[k].append(row)
            current += float(row @ d.universe.x0)
        lo = -np.inf if bounds[0] is None else bounds[0]
        hi = np.inf if bounds[1] is None else bounds[1]
        if tag:
            lo, hi = lo + current, hi + current
        lower.append(lo)
        upper.append(hi)
        label.append(base + tag)
    if label:
        mats = [np.array(rs) for rs in rows_by_acct]
    return DeskRows(label, mats, np.array(lower, dtype=float), np.array(upper, dtype=float))


# --------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class _Check:
    """The verifiers' and the desk checks' finding on one joint answer."""

    answer: JointAnswer
    trades: tuple[np.ndarray, ...]
    moves: tuple[np.ndarray, ...]
    transfers: tuple[np.ndarray, ...]
    margins: tuple[float, ...]
    costs: tuple[float, ...]
    fees: float
    objective: float
    violations: tuple[str, ...]
    source: str
    #: the solver's own margins were checked against the calculators' (an unrepaired answer)
    agreed: bool = False

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def churn(self) -> tuple[int, float]:
        """How many trades, moves and transfers, then how much of them (coin and currency units)."""
        n = sum(int(np.count_nonzero(t)) + int(np.count_nonzero(m)) for t, m in zip(self.trades, self.moves))
        n += sum(int(np.count_nonzero(t)) for t in self.transfers)
        size = sum(np.abs(t).sum() + np.abs(m).sum() for t, m in zip(self.trades, self.moves))
        return n, float(size + sum(np.abs(t).sum() for t in self.transfers))


class _Checker:
    def __init__(self, desk: _Desk, rules: DeskRules) -> None:
        self.desk = desk
        self.rules = rules
        self.base = [Verifier(d, a.spec) for d, a in zip(desk.datas, desk.accounts)]
        before = [d.margin_before_usd for d in desk.datas]
        self.margin_before = float(sum(before))
        zero = self.check_parts(tuple(np.zeros_like(d.universe.x0) for d in desk.datas),
                                tuple(np.zeros_like(d.universe.x0) for d in desk.datas),
                                tuple(np.zeros((len(g.transferring), len(g.currencies))) for g in desk.groups),
                                None, "no allocation", restoring=False)
        self.zero = zero
        self.restoring = not zero.ok

    def weight(self, k: int) -> float:
        spec = self.desk.accounts[k].spec
        return spec.cost_weight if spec.objective == "margin_plus_cost" else 1.0

    def fees(self, moves: tuple[np.ndarray, ...], transfers: tuple[np.ndarray, ...]) -> float:
        d = self.desk
        out = 0.0
        if self.rules.moves.fee_rate:
            for k, m in enumerate(moves):
                out += self.rules.moves.fee_rate * float(d.datas[k].notional_usd @ np.maximum(m, 0.0))
        if self.rules.transfers.fee_rate:
            for g, t in zip(d.groups, transfers):
                if t.size:
                    rate = np.array([d.accounts[g.accounts[0]].currency_rate(c) for c in g.currencies])
                    out += self.rules.transfers.fee_rate * float((np.maximum(t, 0.0) @ rate).sum())
        return out

    def equity_after(self, k: int, transfers: tuple[np.ndarray, ...]) -> float | None:
        a = self.desk.accounts[k]
        if a.equity is None:
            return None
        eq = float(a.equity_usd or 0.0)
        for g, t in zip(self.desk.groups, transfers):
            if t.size and k in g.transferring:
                r = g.transferring.index(k)
                eq += float(t[r] @ np.array([a.currency_rate(c) for c in g.currencies]))
        return eq

    def check(self, ans: JointAnswer, source: str, trades: tuple[np.ndarray, ...] | None = None,
              solver_margins: bool = True, move_dust: bool = False) -> _Check:
        d = self.desk
        t = trades if trades is not None else tuple(self._clean(x, dd) for x, dd in zip(ans.trades, d.datas))
        m = tuple(self._clean(x, dd) for x, dd in zip(ans.moves, d.datas))
        if move_dust:  # as the verifier drops trade dust: below DUST_RTOL of the largest move
            top = max((float(np.abs(x).max(initial=0.0)) for x in m), default=0.0)
            m = tuple(np.where(np.abs(x) <= max(DUST_RTOL * top, 1e-12), 0.0, x) for x in m)
        # a whole position moved or closed to within solver noise is made exact (to DUST_RTOL of
        # it with the other dust repairs)
        rtol = DUST_RTOL if move_dust else 1e-9
        m = self._net_moves(tuple(_snap(x, dd.universe.x0, rtol) for x, dd in zip(m, d.datas)))
        t = tuple(_snap(x, dd.universe.x0 + mv, rtol) for x, dd, mv in zip(t, d.datas, m))
        tr = self._net_transfers(ans.transfers)
        c = self.check_parts(t, m, tr, ans if solver_margins else replace(ans, solver_margins_usd=()),
                             source, restoring=self.restoring)
        agreed = solver_margins and not ans.variant.startswith("linearised")
        return replace(c, answer=ans, agreed=agreed)

    def check_parts(self, trades, moves, transfers, ans: JointAnswer | None, source: str, *,
                    restoring: bool) -> _Check:
        d = self.desk
        found: list[str] = []
        margins, costs = [], []
        xs = []
        for k, (a, data, t, mv) in enumerate(zip(d.accounts, d.datas, trades, moves)):
            u = data.universe
            moved = replace(data, universe=replace(u, x0=u.x0 + mv))
            solver_margin = None
            if ans is not None and ans.solver_margins_usd and not ans.variant.startswith("linearised"):
                solver_margin = ans.solver_margins_usd[k]
            v = Verifier(moved, a.spec).check(t, solver_margin_usd=solver_margin, source=source)
            # an account's margin may rise when it takes a hedge that frees more elsewhere: the
            # desk's total is checked below instead
            found += [f"{a.name}: {x.message}" for x in v.violations if x.rule != "margin"]
            margins.append(v.margin_usd)
            costs.append(v.cost_usd)
            xs.append(u.x0 + mv + t)
            if mv.any() and not any(k in g.accounts for g in d.groups):
                found.append(f"{a.name}: moves in an account of no move group")
            eq = self.equity_after(k, transfers)
            if eq is not None and np.isfinite(v.margin_usd):
                room = eq - a.buffer_usd - v.cost_usd
                if v.margin_usd > room + 1e-12 * max(abs(eq), 1.0):
                    found.append(f"{a.name}: margin {v.margin_usd:,.2f} USD plus cost is above its equity "
                                 f"after transfers less its buffer ({room:,.2f} USD)")
        # moves: net zero per instrument in each group, and only relocating
        for g, grp in enumerate(d.groups):
            for c, name in enumerate(grp.instruments):
                net, gross0, gross1 = 0.0, 0.0, 0.0
                for r, k in enumerate(grp.accounts):
                    j = grp.where[r, c]
                    if j < 0:
                        continue
                    col = d.layouts[k].movable[j]
                    x0 = d.datas[k].universe.x0[col]
                    net += moves[k][col]
                    gross0 += abs(x0)
                    gross1 += abs(x0 + moves[k][col])
                if abs(net) > 1e-12 * max(gross0, 1.0):
                    found.append(f"moves of {name} in group {g} do not net to zero ({net:.3g})")
                if self.rules.moves.relocate_only and gross1 > gross0 + _MOVE_RTOL * max(gross0, 1.0):
                    found.append(f"moves of {name} create positions (gross {gross0:.6g} -> {gross1:.6g})")
            t = transfers[g]
            if t.size:
                coll = np.array([[(d.accounts[k].equity or {}).get(c, 0.0) for c in grp.currencies]
                                 for k in grp.transferring])
                scale = np.maximum(np.abs(coll).sum(axis=0), 1.0)
                if np.any(np.abs(t.sum(axis=0)) > 1e-12 * scale):
                    found.append(f"transfers in group {g} do not net to zero")
                if np.any(coll + t < -1e-12 * scale):
                    found.append(f"a transfer in group {g} is larger than the collateral it comes from")
        # desk limits
        if d.desk.names:
            g_after = d.desk.values(xs)
            tol = LIMIT_TOLERANCE * d.desk.scale()
            for r in np.flatnonzero((g_after < d.desk.lower - tol) | (g_after > d.desk.upper + tol)):
                found.append(f"desk limit {d.desk.names[r]} is {g_after[r]:.6g}, outside "
                             f"[{d.desk.lower[r]:.6g}, {d.desk.upper[r]:.6g}]")
        total = float(sum(margins))
        if not restoring and np.isfinite(total) and total > self.margin_before_total() * (1 + MARGIN_RTOL) + 1e-9:
            found.append(f"the desk's margin after {total:,.6f} USD is above before "
                         f"{self.margin_before_total():,.6f} USD")
        fees = self.fees(moves, transfers)
        objective = total + sum(self.weight(k) * c for k, c in enumerate(costs)) + fees
        return _Check(ans, tuple(trades), tuple(moves), tuple(transfers), tuple(margins), tuple(costs), fees,
                      objective, tuple(found), source)

    def margin_before_total(self) -> float:
        return float(sum(d.margin_before_usd for d in self.desk.datas))

    @staticmethod
    def _clean(x: np.ndarray, data: ProblemData) -> np.ndarray:
        size = np.maximum(np.abs(data.universe.x0), 1.0)
        return np.where(np.abs(x) <= _DUST * size, 0.0, x)

    def _net_moves(self, moves: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Solver noise off the net: each instrument's residual goes to its largest mover, so the
        moves net to zero to the last bit a float sum allows."""
        out = [m.copy() for m in moves]
        for grp in self.desk.groups:
            for c in range(len(grp.instruments)):
                cells = [(k, self.desk.layouts[k].movable[grp.where[r, c]])
                         for r, k in enumerate(grp.accounts) if grp.where[r, c] >= 0]
                vals = np.array([out[k][j] for k, j in cells])
                if not vals.any():
                    continue
                # not onto a move of a whole position (closed exactly by _snap)
                whole = np.array([vals[i] != 0.0 and self.desk.datas[k].universe.x0[j] + vals[i] == 0.0
                                  for i, (k, j) in enumerate(cells)])
                big = int(np.argmax(np.where(whole & ~whole.all(), 0.0, np.abs(vals))))
                k, j = cells[big]
                out[k][j] -= float(vals.sum())
        return tuple(out)

    def _net_transfers(self, transfers: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        out = []
        for t in transfers:
            t = np.where(np.abs(t) <= 1e-9 * np.maximum(np.abs(t).max(initial=0.0), 1.0), 0.0, t)
            for c in range(t.shape[1] if t.ndim == 2 else 0):
                if t[:, c].any():
                    big = int(np.argmax(np.abs(t[:, c])))
                    t[big, c] -= float(t[:, c].sum())
            out.append(t)
        return tuple(out)


# --------------------------------------------------------------------------- the allocator
class Allocator:
    """Desk rules with the joint problems compiled so far (by structure): a new snapshot of the
    same desk re-solves by updating Parameters only."""

    def __init__(self, rules: DeskRules | Mapping[str, Any] | None = None) -> None:
        self.rules = load_rules(rules)
        self._problems: dict[tuple, JointProblem] = {}
        self.builds = 0

    def problem(self, desk: _Desk) -> JointProblem:
        key = (tuple(d.structure() for d in desk.datas),
               tuple((l.movable.tobytes(), l.tradeable.tobytes()) for l in desk.layouts),
               tuple((g.accounts, g.instruments, g.where.tobytes(), g.currencies, g.transferring)
                     for g in desk.groups),
               tuple(desk.desk.names), tuple(desk.desk.lower_rows), tuple(desk.desk.upper_rows),
               tuple(a.spec.model_dump_json() for a in desk.accounts),
               tuple(a.equity is not None for a in desk.accounts), self.rules.model_dump_json())
        prob = self._problems.get(key)
        if prob is None:
            prob = JointProblem(desk.accounts, desk.datas, desk.layouts, desk.groups, desk.desk, self.rules)
            self._problems[key] = prob
            self.builds += 1
        prob.update(desk.accounts, desk.datas)
        return prob

    def allocate(self, accounts: Sequence[Account | Mapping[str, Any]]) -> Allocation:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        accts = [a if isinstance(a, Account) else _account(a, i) for i, a in enumerate(accounts)]
        if not accts:
            raise InputError("a desk allocation needs at least one account", field="accounts")
        desk = _prepare(accts, self.rules)
        checker = _Checker(desk, self.rules)
        timings["data"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        prob = self.problem(desk)
        timings["build"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        log: list[tuple[str, str]] = []
        self._tried = 0
        notes = list(desk.notes)
        main = "full" if self.rules.trades else "moves only"
        passed, claims = self._search(prob, desk, checker, main, log, notes)
        timings["solve"] = time.perf_counter() - t2
        chosen = self._choose(passed, desk, checker, log)
        moves_only: _Check | None = None
        has_moves = any(g.instruments for g in desk.groups) or any(g.currencies for g in desk.groups)
        if self.rules.split_savings and self.rules.trades and has_moves and chosen is not None and \
                any(t.any() for t in chosen.trades):
            t3 = time.perf_counter()
            # the split is a secondary figure: only the solver that answered the full problem
            # tries it (a first-order fallback spent minutes on an infeasible moves-only desk)
            solver = chosen.answer.solver if chosen.answer is not None else None
            alone, _ = self._search(prob, desk, checker, "moves only", log, [],
                                    solvers=(solver,) if solver else None)
            moves_only = self._choose(alone, desk, checker, log)
            timings["moves_only"] = time.perf_counter() - t3
            if moves_only is None:
                notes.append("no moves-only allocation passed verification: the saving is not split")
        elif chosen is not None:
            moves_only = chosen if not any(t.any() for t in chosen.trades) else None
        if chosen is None:
            chosen = self._no_answer(checker, claims, log, prob)
        timings["total"] = time.perf_counter() - t0
        return self._result(chosen, moves_only, desk, checker, prob, log, notes, timings)

    # ------------------------------------------------------------------ search
    def _chain(self, prob: JointProblem) -> tuple[str, ...]:
        """The class's chain (``rebalance._solvers.CHAINS``) with SCIP first for quadratic and
        second for cone problems: on a desk of an LP block (deribit-pm) beside a quadratic one
        (deribit-standard futures) Clarabel answered "inaccurate" with margins off by percent,
        whatever its settings, where SCIP solved exactly in a third of a second."""
        base = chain(prob.problem_class)
        if prob.problem_class is ProblemClass.QP and "SCIP" in installed_solvers():
            base = ("SCIP", *(n for n in base if n != "SCIP"))
        elif prob.problem_class is ProblemClass.SOCP and "SCIP" in installed_solvers():
            base = (base[0], "SCIP", *(n for n in base[1:] if n != "SCIP"))
        if not self.rules.solver:
            return base
        named = self.rules.solver.upper()
        return (named,) if named not in installed_solvers() else (named, *(n for n in base if n != named))

    def _search(self, prob: JointProblem, desk: _Desk, checker: _Checker, variant: str,
                log: list[tuple[str, str]], notes: list[str], solvers: tuple[str, ...] | None = None
                ) -> tuple[list[_Check], list[str]]:
        passed: list[_Check] = []
        claims: list[str] = []
        for name in solvers or self._chain(prob):
            try:
                if prob.nonconvex:
                    answers = self._sequential_convex(prob, desk, checker, variant, name, log, notes)
                else:
                    one, two = prob.solve(variant, name)
                    answers = [a for a in (two, one) if a is not None]
            except Infeasible as exc:
                claims.append(name)
                log += [a for a in exc.attempts if a not in log] or [(name, "infeasible")]
                continue
            except OptimizationError as exc:
                log += getattr(exc, "attempts", []) or [(name, str(exc))]
                continue
            for a in answers:
                for label, trades in self._candidates(a, desk, checker):
                    c = checker.check(a, f"{a.solver} {variant} {a.stage}{label}", trades,
                                      solver_margins=label in ("", ", clipped to bounds", ", dust dropped"),
                                      move_dust=label != "" and label != ", clipped to bounds")
                    log.append((c.source, "passed" if c.ok else "; ".join(c.violations[:3])))
                    self._tried += 1
                    if c.ok:
                        passed.append(c)
            if passed:
                notes += [w for r in passed[0].answer.reports for w in r.warnings]
                break
        return passed, claims

    def _candidates(self, a: JointAnswer, desk: _Desk, checker: _Checker):
        """The answer as solved, then its exact repairs (dust dropped, lots rounded)."""
        base = tuple(checker._clean(t, d) for t, d in zip(a.trades, desk.datas))
        yield "", base
        clipped = tuple(v.clip(t) for v, t in zip(checker.base, base))
        if any(not np.array_equal(x, y) for x, y in zip(clipped, base)):
            yield ", clipped to bounds", clipped
        dust = tuple(v.drop_dust(t) for v, t in zip(checker.base, clipped))
        yield ", dust dropped", dust   # of trades and moves
        if any(acc.spec.lots.mode == "round" for acc in desk.accounts):
            for how, f in (("rounded to lots", np.round), ("rounded toward zero", np.trunc)):
                out = []
                for acc, d, t in zip(desk.accounts, desk.datas, dust):
                    if acc.spec.lots.mode == "round":
                        step = np.where(d.lot > 0, d.lot, 1.0)
                        t = np.where(d.lot > 0, f(t / step) * step, t)
                    out.append(t)
                yield f", {how}", tuple(out)

    def _sequential_convex(self, prob: JointProblem, desk: _Desk, checker: _Checker, variant: str,
                           solver: str, log: list, notes: list[str]) -> list[JointAnswer]:
        """Non-convex accounts (Derive) by the rebalancer's trust-region SCP (``rebalance._scp``):
        a step is kept only if every check passes and the calculators confirm the desk's
        objective fell as the model predicted."""
        scp = _JointSCP(prob, desk, checker, variant, solver)
        outcome = None
        try:
            outcome = trust_region_scp(scp, scp.flat(scp.x0), scp.flat(scp.scale),
                                       checker.zero.objective, checker.zero.ok, SCP_RULES)
        finally:  # the problem's own tangents back, at the last accepted iterate
            best = outcome.best if outcome is not None else None
            prob.linearize_at(list(best.payload[1]) if best is not None else scp.x0)
        notes.append(scp_note(outcome, SCP_RULES, f"non-convex accounts ({variant})", "the calculators",
                              start="desk"))
        return [outcome.best.payload[0]] if outcome.best is not None else []

    def _choose(self, passed: list[_Check], desk: _Desk, checker: _Checker,
                log: list[tuple[str, str]]) -> _Check | None:
        """The lowest objective (ties: fewest trades and moves, then least quantity) whose every
        account's calculator, bound to its post-allocation book, confirms its margin."""
        remaining = list(passed)
        while remaining:
            top = min(c.objective for c in remaining)
            slack = 2e-9 * max(abs(top), checker.margin_before_total(), 1.0) + 2e-6
            best = min((c for c in remaining if c.objective <= top + slack), key=lambda c: c.churn)
            ok = True
            for k, a in enumerate(desk.accounts):
                after = _calculate(a, desk.datas[k], best.moves[k] + best.trades[k])
                gap = abs(after.initial_margin_usd - best.margins[k])
                if gap > 1e-9 * max(desk.before[k].initial_margin_usd, 1.0) + 1e-6:
                    log.append((best.source, f"{a.name}: the calculator on the post-allocation book gives "
                                f"{after.initial_margin_usd:,.6f} USD, the universe's {best.margins[k]:,.6f}"))
                    ok = False
                    break
            if ok:
                return best
            remaining = [c for c in remaining if c is not best]
        return None

    def _no_answer(self, checker: _Checker, claims: list[str], log: list[tuple[str, str]],
                   prob: JointProblem) -> _Check:
        """No answer passed: if doing nothing meets every rule that is the answer (any
        infeasibility claim is refuted); otherwise the failure is typed with every attempt."""
        if checker.zero.ok:
            return checker.zero
        broken = "; ".join(checker.zero.violations)
        if claims:
            raise Infeasible(f"No allocation meets every limit; the desk as it stands breaks: {broken}.",
                             attempts=log)
        if self._tried:
            raise VerificationFailed("No answer of any solver passed verification.", log)
        raise SolverFailed("No solver produced an answer.", log)

    # ------------------------------------------------------------------ the result
    def _result(self, chosen: _Check, moves_only: _Check | None, desk: _Desk, checker: _Checker,
                prob: JointProblem, log, notes: list[str], timings: dict[str, float]) -> Allocation:
        accounts = desk.accounts
        saved_net = checker.zero.objective - chosen.objective
        anything = any(t.any() or m.any() for t, m in zip(chosen.trades, chosen.moves)) or \
            any(t.any() for t in chosen.transfers)
        if not anything:
            status = AllocationStatus.NO_ALLOCATION
            reason = ("the desk breaks a limit and no allowed move, trade or transfer changes that"
                      if checker.restoring else
                      "no move, trade or transfer lowers the desk's margin within its limits: each "
                      "account's book is already where the limits and bounds allow the least margin")
            if chosen is checker.zero:
                reason = ("no solver's answer passed verification (or a solver claimed the problem "
                          "infeasible) and doing nothing meets every rule: nothing is proposed")
        elif checker.restoring:
            status = AllocationStatus.RESTORES_LIMITS
            reason = ("the desk broke " + "; ".join(checker.zero.violations[:3]) +
                      f"; the allocation brings it back inside (margin change "
                      f"{chosen.objective - checker.zero.objective:+,.2f} USD with costs)")
        elif saved_net < self.rules.min_saving_usd:
            status = AllocationStatus.NO_ALLOCATION
            reason = (f"the best allocation saves {saved_net:,.2f} USD net of costs and fees, less than "
                      f"the {self.rules.min_saving_usd:,.2f} USD minimum")
            chosen = checker.zero
        else:
            status = AllocationStatus.OPTIMAL
            gross = checker.margin_before_total() - sum(chosen.margins)
            reason = (f"saves {gross:,.2f} USD of the desk's initial margin "
                      f"({100 * gross / max(checker.margin_before_total(), 1e-12):.2f}%) for "
                      f"{sum(chosen.costs):,.2f} USD of estimated trading cost and {chosen.fees:,.2f} USD of fees")
        out_accounts = []
        xs0, xs1 = [], []
        for k, a in enumerate(accounts):
            d = desk.datas[k]
            u = d.universe
            t, m = chosen.trades[k], chosen.moves[k]
            after = _calculate(a, d, m + t)
            xs0.append(u.x0)
            xs1.append(u.x0 + m + t)
            out_accounts.append(AccountAllocation(
                name=a.name, venue=a.venue, main_account=a.main_account, model=a.model.name,
                trades=_trades(t, d, a), moves={u.names[j]: float(m[j]) for j in np.flatnonzero(m)},
                margin_before=desk.before[k], margin_after=after, cost_usd=float(chosen.costs[k]),
                equity_usd=a.equity_usd, equity_after_usd=checker.equity_after(k, chosen.transfers),
                buffer_usd=a.buffer_usd,
                limits=_account_limits(d, u.x0 + m + t, chosen, k, status),
                solver_margin_usd=chosen.answer.solver_margins_usd[k] if chosen.agreed else None))
        desk_checks = _desk_limits(desk, xs0, xs1, chosen, status)
        binding = _binding(desk, out_accounts, desk_checks, chosen, checker)
        greeks_b = _greeks(desk, xs0)
        greeks_a = _greeks(desk, xs1)
        mo = moves_only
        if mo is not None and mo is not chosen:
            mo_margin = float(sum(_calculate(a, desk.datas[k], mo.moves[k] + mo.trades[k]).initial_margin_usd
                                  for k, a in enumerate(accounts)))
        elif mo is chosen:
            mo_margin = float(sum(x.margin_after.initial_margin_usd for x in out_accounts))
        else:
            mo_margin = None
        ans = chosen.answer
        total_after = float(sum(x.margin_after.initial_margin_usd for x in out_accounts))
        solver_total = float(sum(ans.solver_margins_usd)) if chosen.agreed and ans is not None else None
        tol = sum(AGREEMENT_RTOL * max(b.initial_margin_usd, x.margin_after.initial_margin_usd) + AGREEMENT_ATOL_USD
                  for b, x in zip(desk.before, out_accounts))
        if solver_total is not None and status is not AllocationStatus.NO_ALLOCATION and \
                abs(solver_total - total_after) > tol:
            raise VerificationFailed(f"the joint problem's total {solver_total:,.6f} USD differs from the "
                                     f"calculators' {total_after:,.6f} USD", log)
        return Allocation(
            status=status, reason=reason, accounts=tuple(out_accounts),
            moves=_moves(chosen, desk, self.rules), transfers=_transfers(chosen, desk, self.rules),
            desk_limits=desk_checks, greeks_before=greeks_b, greeks_after=greeks_a, binding=binding,
            moves_only_margin_usd=mo_margin,
            solver=ans.solver if ans is not None else None, problem_class=prob.problem_class.value,
            solver_margin_usd=solver_total,
            verified_by=chosen.source, attempts=tuple(log), notes=tuple(dict.fromkeys(notes)),
            timings=timings)


# --------------------------------------------------------------------------- helpers
def _snap(change: np.ndarray, start: np.ndarray, rtol: float) -> np.ndarray:
    """A change that leaves a position within ``rtol`` of its size of zero closes it exactly (a
    solver's vertex carries noise of its tolerance; a move or close of a whole position is exact)."""
    rest = start + change
    whole = (change != 0.0) & (np.abs(rest) <= rtol * np.maximum(np.abs(start), np.abs(change)))
    return np.where(whole, -start, change)


def _account(spec: Mapping[str, Any], i: int) -> Account:
    if not isinstance(spec, Mapping):
        raise InputError(f"an account is an Account or a mapping, got {type(spec).__name__}", row=i,
                         field="accounts")
    data = dict(spec)
    name = data.pop("name", None)
    if not name:
        raise InputError("an account needs a name", row=i, field="name")
    try:
        return Account.build(str(name), **data)
    except TypeError as exc:
        raise InputError(f"unknown account key ({exc})", row=str(name), field="accounts") from None


def _calculate(account: Account, data: ProblemData, change: np.ndarray) -> MarginResult:
    """The account's calculator bound to its post-allocation book (not the universe)."""
    names = data.universe.names
    post = account.portfolio.apply({n: float(q) for n, q in zip(names, change) if q != 0.0})
    return account.model.bind(post.instruments, account.market).evaluate(post.quantities)


def _trades(t: np.ndarray, data: ProblemData, account: Account) -> tuple[Trade, ...]:
    idx = np.flatnonzero(t)
    if not idx.size:
        return ()
    u = data.universe
    names = [u.names[j] for j in idx]
    bid = account.market.column(names, "bid_price")
    ask = account.market.column(names, "ask_price")
    mark = account.market.column(names, "mark_price")
    costs = data.trade_costs_usd(t)
    out = []
    for k, j in enumerate(idx):
        q = float(t[j])
        px = ask[k] if q > 0 else bid[k]
        out.append(Trade(names[k], "buy" if q > 0 else "sell", q, float(px if np.isfinite(px) else mark[k]),
                         float(costs[j]), float(data.notional_usd[j] * abs(q))))
    return tuple(out)


def _moves(chosen: _Check, desk: _Desk, rules: DeskRules) -> tuple[Move, ...]:
    """Each group's net moves as from-to pairs (largest first): a long moves from the account
    whose position falls to the one whose position rises; a short the other way."""
    out: list[Move] = []
    for grp in desk.groups:
        for c, name in enumerate(grp.instruments):
            cells = []
            for r, k in enumerate(grp.accounts):
                j = grp.where[r, c]
                if j >= 0:
                    col = desk.layouts[k].movable[j]
                    cells.append((k, col, float(chosen.moves[k][col])))
            down = sorted([[k, col, -q] for k, col, q in cells if q < 0], key=lambda x: -x[2])
            up = sorted([[k, col, q] for k, col, q in cells if q > 0], key=lambda x: -x[2])
            a0 = desk.accounts[grp.accounts[0]]
            mark = float(a0.market.column([name], "mark_price")[0])
            index = float(desk.datas[up[0][0]].notional_usd[up[0][1]]) if up else 0.0
            i = j = 0
            while i < len(down) and j < len(up):
                q = min(down[i][2], up[j][2])
                src, dst = desk.accounts[down[i][0]], desk.accounts[up[j][0]]
                x0_src = desk.datas[down[i][0]].universe.x0[down[i][1]]
                if x0_src > 0:   # the source's long goes to the destination
                    mv = Move(name, src.name, dst.name, q, mark, index * q, rules.moves.fee_rate * index * q)
                else:            # the destination's short goes to the source
                    mv = Move(name, dst.name, src.name, -q, mark, index * q, rules.moves.fee_rate * index * q)
                out.append(mv)
                down[i][2] -= q
                up[j][2] -= q
                if down[i][2] <= 1e-15 * max(q, 1.0):
                    i += 1
                if up[j][2] <= 1e-15 * max(q, 1.0):
                    j += 1
    return tuple(out)


def _transfers(chosen: _Check, desk: _Desk, rules: DeskRules) -> tuple[Transfer, ...]:
    out: list[Transfer] = []
    for grp, t in zip(desk.groups, chosen.transfers):
        if not t.size:
            continue
        for c, ccy in enumerate(grp.currencies):
            rate = desk.accounts[grp.accounts[0]].currency_rate(ccy)
            down = sorted([[grp.transferring[r], -t[r, c]] for r in range(t.shape[0]) if t[r, c] < 0], key=lambda x: -x[1])
            up = sorted([[grp.transferring[r], t[r, c]] for r in range(t.shape[0]) if t[r, c] > 0], key=lambda x: -x[1])
            i = j = 0
            while i < len(down) and j < len(up):
                q = float(min(down[i][1], up[j][1]))
                out.append(Transfer(ccy, desk.accounts[down[i][0]].name, desk.accounts[up[j][0]].name, q,
                                    q * rate, rules.transfers.fee_rate * q * rate))
                down[i][1] -= q
                up[j][1] -= q
                if down[i][1] <= 1e-15 * max(q, 1.0):
                    i += 1
                if up[j][1] <= 1e-15 * max(q, 1.0):
                    j += 1
    return tuple(out)


def _shadow(chosen: _Check, key: str, rows: np.ndarray, size: int) -> np.ndarray:
    """Each row's dual (USD per unit); NaN where the solver that answered gives none (SCIP)."""
    out = np.zeros(size)
    if not rows.size:
        return out
    d = chosen.answer.duals.get(key) if chosen.answer is not None else None
    if d is not None and d.size == rows.size:
        out[rows] = np.abs(d)
    else:
        out[rows] = np.nan
    return out


def _account_limits(data: ProblemData, x1: np.ndarray, chosen: _Check, k: int,
                    status: AllocationStatus) -> tuple[LimitCheck, ...]:
    lim = data.limits
    if not lim.names:
        return ()
    g0, g1 = lim.matrix @ data.universe.x0, lim.matrix @ x1
    shadow = _shadow(chosen, f"a{k}/lower", lim.lower_rows, len(lim.names)) + \
        _shadow(chosen, f"a{k}/upper", lim.upper_rows, len(lim.names))
    return _checks(lim.names, lim.lower, lim.upper, g0, g1, lim.scale(), shadow, status)


def _desk_limits(desk: _Desk, xs0, xs1, chosen: _Check, status: AllocationStatus) -> tuple[LimitCheck, ...]:
    dr = desk.desk
    if not dr.names:
        return ()
    shadow = _shadow(chosen, "desk/lower", dr.lower_rows, len(dr.names)) + \
        _shadow(chosen, "desk/upper", dr.upper_rows, len(dr.names))
    return _checks(dr.names, dr.lower, dr.upper, dr.values(xs0), dr.values(xs1), dr.scale(), shadow, status)


def _checks(names, lower, upper, g0, g1, scale, shadow, status) -> tuple[LimitCheck, ...]:
    tol = LIMIT_TOLERANCE * scale
    breached = (g0 < lower - tol) | (g0 > upper + tol)
    binding = ((np.abs(g1 - lower) <= 1e-7 * scale) | (np.abs(g1 - upper) <= 1e-7 * scale)) & \
        (status is not AllocationStatus.NO_ALLOCATION)
    return tuple(LimitCheck(name=n, lower=None if not np.isfinite(lower[r]) else float(lower[r]),
                            upper=None if not np.isfinite(upper[r]) else float(upper[r]),
                            before=float(g0[r]), after=float(g1[r]), breached_before=bool(breached[r]),
                            binding=bool(binding[r]), shadow_price=float(shadow[r]) if binding[r] else 0.0)
                 for r, n in enumerate(names))


def _binding(desk: _Desk, accounts: list[AccountAllocation], desk_checks, chosen: _Check,
             checker: _Checker) -> tuple[BindingLimit, ...]:
    out: list[BindingLimit] = []
    def price(v: float) -> float | None:
        return None if not np.isfinite(v) else float(v)
    for l in desk_checks:
        if l.binding:
            out.append(BindingLimit("desk", None, l.name, l.after, l.binding_bound or 0.0, price(l.shadow_price)))
    for a in accounts:
        for l in a.limits:
            if l.binding:
                out.append(BindingLimit("account", a.name, l.name, l.after, l.binding_bound or 0.0,
                                        price(l.shadow_price)))
    for k, a in enumerate(accounts):
        if a.headroom_usd is None or chosen.answer is None:
            continue
        room = (a.equity_after_usd or 0.0) - a.buffer_usd
        if a.headroom_usd <= 1e-6 * max(room, 1.0):
            d = chosen.answer.duals.get(f"a{k}/equity")
            price = float(np.abs(d).sum()) if d is not None and d.size else None
            out.append(BindingLimit("equity", a.name, "margin <= equity - buffer",
                                    a.margin_after.initial_margin_usd + a.cost_usd, room, price))
    return tuple(out)


def _greeks(desk: _Desk, xs: list[np.ndarray]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for d, x in zip(desk.datas, xs):
        for u, g in greeks_summary(d.inputs, x).items():
            tot = out.setdefault(u, {"delta": 0.0, "vega": 0.0, "gamma": 0.0, "delta_usd": 0.0})
            for key in tot:
                tot[key] += g[key]
    return out


# --------------------------------------------------------------------------- SCP of the desk
class _JointModel:
    """A joint problem's stage 1 with each non-convex account's model (``PieceEpigraph``) in place
    of its tangent, that account's equity row carrying it too: compiled once per problem and
    variant, re-solved by Parameters."""

    def __init__(self, prob: JointProblem, datas: list[ProblemData], variant: str) -> None:
        self.epis = {b.k: PieceEpigraph(b.x, datas[b.k].bound, datas[b.k].universe.x0,
                                        SCP_RULES.pieces, f"a{b.k}/")
                     for b in prob.blocks if b.nonconvex}
        first, _ = prob.problems[variant]
        owner = {id(con): k for k, con in prob.equity_con.items() if k in self.epis}
        self.equity: dict[int, cp.Constraint] = {}
        cons: list[cp.Constraint] = []
        for con in first.constraints:
            k = owner.get(id(con))
            if k is not None:
                con = self.equity[k] = with_pieces(con, self.epis[k].total)
            cons.append(con)
        cons += [c for e in self.epis.values() for c in e.constraints]
        tops = cp.sum(cp.hstack([e.total for e in self.epis.values()]))
        self.problem = cp.Problem(cp.Minimize(first.objective.args[0] + tops), cons)


_JOINT_MODELS: "weakref.WeakKeyDictionary[JointProblem, dict[str, _JointModel]]" = weakref.WeakKeyDictionary()


class _JointSCP:
    """``rebalance._scp.ConvexModel`` of a desk: the point is the non-convex accounts' positions,
    end to end; each step is checked by the desk's checker (every account's verifier)."""

    def __init__(self, prob: JointProblem, desk: _Desk, checker: _Checker, variant: str,
                 solver: str) -> None:
        models = _JOINT_MODELS.setdefault(prob, {})
        if variant not in models:
            models[variant] = _JointModel(prob, desk.datas, variant)
        self.model = models[variant]
        self.prob, self.desk, self.checker, self.variant, self.solver = prob, desk, checker, variant, solver
        self.x0 = [d.universe.x0 for d in desk.datas]
        self.scale = [np.maximum(np.abs(x), 1.0) for x in self.x0]
        self.nonconvex = sorted(self.model.epis)
        for k in self.nonconvex:
            zero_tangents(desk.datas[k].bound, prob.p.set, f"a{k}/")

    def flat(self, xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([xs[k] for k in self.nonconvex])

    def _split(self, flat: np.ndarray, fill: list[np.ndarray]) -> list[np.ndarray]:
        out, at = list(fill), 0
        for k in self.nonconvex:
            n = fill[k].size
            out[k] = flat[at:at + n]
            at += n
        return out

    def relinearise(self, x: np.ndarray) -> None:
        xs = self._split(x, self.x0)
        for k in self.nonconvex:
            self.model.epis[k].set_at(xs[k], self.desk.datas[k].bound)

    def step(self, centre: np.ndarray, radius: np.ndarray) -> Trial:
        prob, model = self.prob, self.model
        prob.set_trust_region(self._split(centre, self.x0), self._split(radius, self.scale))
        report = solve(model.problem, prob.problem_class, self.solver, bounded_below=True)
        ans = prob._answer("stage 1", self.variant, (report,), duals=True)
        tops = {k: e.value() for k, e in model.epis.items()}
        duals = dict(ans.duals)
        for k, con in model.equity.items():
            duals[f"a{k}/equity"] = np.atleast_1d(np.asarray(con.dual_value, dtype=float)) \
                if con.dual_value is not None else np.zeros(0)
        ans = replace(ans, variant=f"linearised {self.variant}", duals=duals,
                      solver_margins_usd=tuple(m + tops.get(k, 0.0) for k, m in enumerate(ans.solver_margins_usd)))
        c = self.checker.check(ans, "sequential convex step", solver_margins=False)
        xs = [x + m + t for x, m, t in zip(self.x0, c.moves, c.trades)]
        predicted = float(prob.objective.value) + sum(tops.values())
        return Trial(self.flat(xs), predicted, c.ok, c.objective, (ans, tuple(xs)))


def allocate(accounts: Sequence[Account | Mapping[str, Any]] | str | Path,
             rules: DeskRules | Mapping[str, Any] | None = None) -> Allocation:
    """Minimise the desk's total initial margin across its accounts at once: trades in each
    account, moves of positions and collateral between subaccounts of one main account, within
    every account's limits, the desk's limits and each account's equity. ``accounts``: Account
    objects or mappings (``name``, ``model``, ``portfolio``, ``market``, optional ``venue``,
    ``spec``, ``equity``, ``buffer_usd``, ``main_account``), or the path of a job YAML."""
    if isinstance(accounts, (str, Path)):
        from ._job import load_allocation_job
        job = load_allocation_job(accounts)
        return Allocator(job.rules if rules is None else rules).allocate(job.accounts)
    return Allocator(rules).allocate(accounts)
