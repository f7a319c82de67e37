"""Scenario generation: large user scenario sets solved over the scenarios that matter.

A ``scenario_max`` margin is the worst loss over S scenarios, a ``scenario_es`` margin the mean of
the worst (1 - level) S. Written whole, the LP has a dense row per scenario (and for expected
shortfall a column per scenario too): at 20,000 scenarios x 1,000 instruments that is 20 million
coefficients, most of which never bind. Above ``MIN_SCENARIOS`` scenarios the Rebalancer solves a
*relaxation* instead and grows it until it is exact where it matters:

- ``scenario_max``: the same worst loss over an active set of scenarios (the ``INITIAL_WORST``
  worst at the book, plus those that bound the previous snapshot's answers).
- ``scenario_es``: the cutting-plane form of expected shortfall (Kunzi-Bay and Mayer, CVaRMin):
  ES(x) = max(0, max over tails T of w_T . L(x)), a tail being the ``whole`` worst scenarios at
  weight 1/tail and the next at (tail - whole)/tail, exactly as ``ExpectedShortfall.evaluate``
  counts them. Each cut is one dense row (the tail's weighted P&L per unit); the relaxation is
  the worst of the cuts found so far, starting from the book's own tail. No column per scenario.
  Near the optimum (the cuts' gap within ``EXACT_GAP``) the cuts give way to the *exact form
  over the scenarios near the tail*: expected shortfall over a set A of scenarios with the whole
  set's tail size (Rockafellar-Uryasev over A: a column and a dense row per scenario of A),
  which is the maximum over every weighting of A's scenarios that a tail can take, so at most
  the true expected shortfall everywhere and equal to it wherever the tail lies in A. Cuts need
  many rounds to close the last 1% (each cut is one tail, the optimum sits where hundreds of
  tails meet); near the optimum the tail moves little, so A (the worst ``EXACT_MARGIN`` tails'
  worth at the best answer and at the cuts' minimum) usually holds the optimum's tail at once.

Each relaxation is at most the true margin everywhere (a ``RiskMatrix`` over a few rows, or the
expected shortfall over some of the scenarios), so its
optimum bounds the true one from below, and an answer at which it equals the true margin is
optimal. Two phases:

1. ``_StageOne``: stage 1 alone on a private native HiGHS model of the relaxation (the continuous
   LP), each scenario or cut found appended as a row and re-solved from the last basis. A
   worst-loss relaxation is grown by cutting planes in a box around the best answer so far;
   expected shortfall, a maximum over very many tails, by the level method (Lemarechal,
   Nemirovskii and Nesterov: each round also steps to the point nearest the best answer where
   the model is at most a level between its minimum and the best true objective), which needs a
   few times fewer rounds than plain cutting planes. Tails are also cut between the best answer
   and each answer where the cuts miss (in-out separation). Then, for expected shortfall, the
   exact form over A in the same model (a column ``z``, a column ``u_s`` and a row each for the
   scenarios of A, beside the cuts), grown by the scenarios near the tail at each answer where
   it misses; phase 2 gets it over the worst ``EXACT_KEEP`` tails' worth at the last answer
   (fewer rows: the least-trading stage's time grows fast with them). Nothing found here is
   offered.
2. The whole search: ``Rebalancer._search`` on the relaxed problem data, unchanged (the native
   model or the cvxpy problem, stage 1 and the least-trading stage, lots, ``free_margin``).
   Every answer it verifies (stage 1, tie-break, repairs, lot roundings) is checked on the full
   scenario set: each scenario whose loss there is above the relaxation's margin by more than
   ``VIOLATION_RTOL`` (the worst ``ADD_PER_ROUND`` per answer), and each tail whose expected
   shortfall is (in the exact form, the scenarios near that tail), joins the relaxation, and the
   search runs again; usually once more at most.
   When no answer shows one, the relaxation equals the true margin at every answer: the stage-1
   answer is optimal, and the tie-break's answer is the true least-trading one (the stage-2
   feasible set of the relaxation contains the true one). The answers are then verified again
   by the ordinary ``Verifier`` on the full scenario set with the relaxation's margin as the
   solver's claim: the solver-vs-calculator agreement check is the certificate.

In phase 2 the relaxation's rows are padded to a power of two (rows of zero P&L, whose loss of
zero never exceeds the floor at zero), so a growing set keeps one problem structure per size:
the cvxpy problem is updated (DPP) rather than recompiled, and the native model takes the new
numbers and re-solves from its last basis (the exact form is not padded: a scenario of zero loss
could join its tail and lift it above the true expected shortfall). Problems of intermediate
sizes are dropped from the Rebalancer's caches; the final active set is remembered (the
scenarios and cuts that bind at the answers, and the scenarios near the tail there) and seeds
the next snapshot's: a re-optimise of expected shortfall that ended in the exact form goes
straight to the whole search in the exact form over the scenarios near the last answers' tails
(the optimum moves little with the market; where it moves more, as after a resized book, the
whole search's rounds add what is missing).

An answer's scenario losses are the book's (``P x0``, once per run) plus its traded columns'
(a trade set near an optimum names a few dozen instruments): not a product with the whole matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import highspy
import numpy as np

from ..errors import OptimizationError
from ..margins._components import ExpectedShortfall, RiskMatrix, matvec_columns
from ._problem import ProblemData
from ._solvers import ProblemClass
from ._verify import Verifier

if TYPE_CHECKING:  # the Rebalancer drives this module
    from ._optimize import Rebalancer, _Search

__all__ = ["ADD_PER_ROUND", "INITIAL_WORST", "MIN_SCENARIOS", "ScenarioGeneration", "VIOLATION_RTOL"]

#: components with more scenarios than this are generated; smaller ones are solved whole
MIN_SCENARIOS = 2000
#: the worst scenarios at the book that start a worst-loss relaxation
INITIAL_WORST = 32
#: at most this many violated scenarios join per answer and round, the worst first
ADD_PER_ROUND = 64
#: a scenario or tail is violated at an answer when its loss there is above the relaxation's
#: margin by more than this fraction of that margin (at least 1 unit of the pool's currency):
#: the certified answer's margin is then within it of the optimum, as the least-trading stage's
#: own slack (1e-9), and a hundred times inside the verifier's agreement tolerance (1e-7)
VIOLATION_RTOL = 1e-9
#: phase 2's relaxation rows are padded to a power of two of at least this many
MIN_CAPACITY = 64
#: phase 2 still growing after this many whole searches (or past the spec's time limit) stops;
#: its answers are then verified without a claim of optimality, and a note gives the bound
MAX_ROUNDS = 200
#: phase 1's rounds at most (each a hot re-solve of a small LP; the spec's time limit holds too)
STAGE_ONE_ROUNDS = 2000
#: expected shortfall: tails are also cut at these points between the best answer so far and
#: each answer where the cuts miss (0 is the best answer, 1 the other): about halves the rounds
IN_OUT = (0.5,)
#: the level method's level: this fraction of the way from the model's minimum to the best
#: true objective (0.3: fewest rounds on the benchmark's matrices, from 0.2, 0.3 and 0.5)
LEVEL = 0.3
#: a worst-loss relaxation's box: at first this fraction of each trade's scale (its bounds' width,
#: else its position, at least 1); doubled after a step the true margin confirms that the box
#: held back, halved after a step it does not confirm (less than ``KEEP`` of the predicted gain)
RADIUS = 0.25
KEEP = 0.1
#: expected shortfall: phase 1 leaves the cuts for the exact form over the scenarios near the
#: tail once its gap (best true objective less the cuts' minimum) is within this fraction
EXACT_GAP = 1e-2
#: ... and those scenarios are the worst this many tails' worth at each point it looks at
EXACT_MARGIN = 1.5
#: ... when every expected shortfall's tail is at most this many scenarios: the exact form's LP
#: has a dense row per scenario near the tail, and past this (100,000 scenarios at 97.5%: 2,500)
#: HiGHS took minutes and gigabytes on it, where the cuts end in seconds
EXACT_MAX_TAIL = 1000
#: ... and the whole search starts from the worst this many tails' worth at phase 1's answer
EXACT_KEEP = 1.05
#: a remembered scenario or cut binds at an answer: within this fraction of the margin there
_BINDING_RTOL = 1e-7


def _capacity(size: int) -> int:
    return max(MIN_CAPACITY, 1 << max(size - 1, 0).bit_length())


@dataclass
class _Scenarios:
    """A worst-loss component's active scenarios (row numbers of its matrix, in the order found)."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    @property
    def size(self) -> int:
        return int(self.rows.size)

    @classmethod
    def seed(cls, comp: RiskMatrix, x0: np.ndarray, memory: "_Scenarios | None") -> "_Scenarios":
        losses = comp.losses(x0)
        k = min(INITIAL_WORST, losses.size)
        worst = np.argpartition(-losses, k - 1)[:k] if k else np.zeros(0, dtype=np.intp)
        return cls(np.unique(worst if memory is None else np.r_[memory.rows, worst]))

    def capacity(self, padded: bool) -> int:
        return _capacity(self.size) if padded else self.size

    def relaxation(self, comp: RiskMatrix, capacity: int) -> RiskMatrix:
        return comp.restricted(self.rows, capacity)

    def since(self, comp: RiskMatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows (P&L per unit, weighted) and dampeners of the scenarios after the first ``k``
        (at scale 1)."""
        rows = self.rows[k:]
        return comp.values()["pnl"][rows], comp.dampener[rows]

    def _split(self, comp: RiskMatrix, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every scenario's loss at each point (a column each), whether it is active, and the
        relaxation's margin at each point."""
        losses = comp.losses(x)
        active = np.zeros(losses.shape[0], dtype=bool)
        active[self.rows] = True
        relaxed = np.maximum(losses[active].max(axis=0, initial=0.0), 0.0)
        return losses, active, relaxed

    def separate(self, comp: RiskMatrix, x: np.ndarray, centre: np.ndarray
                 ) -> tuple[int, np.ndarray, np.ndarray]:
        """Add the scenarios violated at the points ``x`` (pool positions x points): how many,
        and the true and relaxed margins at each point (``centre`` is not needed here)."""
        losses, active, relaxed = self._split(comp, x)
        true = np.maximum(losses.max(axis=0, initial=0.0), 0.0)
        tol = VIOLATION_RTOL * np.maximum(relaxed, 1.0)
        new: list[np.ndarray] = []
        for j in range(x.shape[1]):  # a few answers per round
            out = np.flatnonzero(~active & (losses[:, j] > relaxed[j] + tol[j]))
            if out.size > ADD_PER_ROUND:
                out = out[np.argpartition(-losses[out, j], ADD_PER_ROUND - 1)[:ADD_PER_ROUND]]
            new.append(out)
        added = np.setdiff1d(np.concatenate(new), self.rows) if new else np.zeros(0, dtype=np.intp)
        self.rows = np.concatenate([self.rows, added])
        return int(added.size), true, relaxed

    def remembered(self, comp: RiskMatrix, x: np.ndarray) -> "_Scenarios":
        """The active scenarios that bind at some point of ``x`` (the next snapshot's seed)."""
        losses, _, relaxed = self._split(comp, x)
        near = losses[self.rows] >= relaxed - _BINDING_RTOL * np.maximum(relaxed, 1.0)
        return _Scenarios(self.rows[near.any(axis=1)])


@dataclass
class _Tails:
    """An expected-shortfall component's relaxation. First cuts: each a tail (scenario rows and
    their weights) and its row ``w @ P[rows]`` (P at scale 1), in the order found. Then, once
    phase 1 is near the optimum, the exact form over a set of scenarios (``scenarios``): the
    expected shortfall of the whole set's tail size over those scenarios alone (see
    ``_over``), at most the true one everywhere and equal to it wherever the tail lies inside."""

    tails: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _cuts: np.ndarray | None = None
    #: the exact form's scenarios, in the order found (empty while the relaxation is the cuts)
    scenarios: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    #: the last snapshot's scenarios near the tail at its answers (the worst ``EXACT_KEEP`` tails'
    #: worth at each): a re-optimise's exact form starts over them
    hint: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    #: the pool's book and its P&L per scenario (``P @ x0``, scale 1): an answer's losses are
    #: these plus its traded instruments' columns (a few), not a product with the whole matrix
    _x0: np.ndarray | None = None
    _base: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.tails)

    @property
    def exact(self) -> bool:
        return bool(self.scenarios.size)

    @property
    def rows(self) -> np.ndarray:
        return self._cuts[: len(self.tails)] if self._cuts is not None else np.zeros((0, 0))

    def capacity(self, padded: bool) -> int:
        """The relaxation's size: its cuts (padded), or minus its scenarios in the exact form
        (never padded: a scenario of zero loss could join the tail and lift the bound)."""
        if self.exact:
            return -int(self.scenarios.size)
        return _capacity(self.size) if padded else self.size

    @staticmethod
    def _key(rows: np.ndarray, weights: np.ndarray) -> bytes:
        """A tail by its weighted scenarios (the boundary one apart: it has its own weight)."""
        return np.sort(rows[:-1]).tobytes() + (rows[-1:].tobytes() if weights[-1] != 0.0 else b"")

    def add(self, comp: ExpectedShortfall, rows: np.ndarray, weights: np.ndarray) -> bool:
        key = self._key(rows, weights)
        if key in self.tails:
            return False
        self.tails[key] = (rows, weights)
        k = len(self.tails)
        if self._cuts is None:
            self._cuts = np.zeros((MIN_CAPACITY, comp.raw_pnl.shape[1]))
        elif self._cuts.shape[0] < k:  # grown by doubling: cuts come one or two at a time
            grown = np.zeros((2 * self._cuts.shape[0], self._cuts.shape[1]))
            grown[: k - 1] = self._cuts[: k - 1]
            self._cuts = grown
        self._cuts[k - 1] = weights @ comp.values()["pnl"][rows]
        return True

    @classmethod
    def seed(cls, comp: ExpectedShortfall, x0: np.ndarray, memory: "_Tails | None") -> "_Tails":
        out = cls()
        for r, w in (memory.tails.values() if memory is not None else ()):
            out.add(comp, r, w)  # each remembered tail on this snapshot's P&L
        if memory is not None:
            out.hint = memory.hint
        out._x0 = np.array(x0, dtype=float)
        out._base = comp.values()["pnl"] @ out._x0
        out.add(comp, *comp.tail_of(-out._base))
        return out

    def relaxation(self, comp: ExpectedShortfall, capacity: int) -> RiskMatrix | ExpectedShortfall:
        if self.exact:
            return _over(comp, self.scenarios)
        return comp.cuts(list(self.tails.values()), capacity, self.rows)

    def since(self, comp: ExpectedShortfall, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the cuts after the first ``k`` and their dampeners (none), at scale 1."""
        rows = self.rows[k:]
        return rows, np.zeros(rows.shape[0])

    def _losses(self, comp: ExpectedShortfall, x: np.ndarray) -> np.ndarray:
        """Every scenario's loss at each point of ``x`` (a column each): the book's P&L plus the
        traded columns' when the points trade few instruments (they do near an optimum)."""
        pnl = comp.values()["pnl"]
        if self._x0 is None or self._base is None or self._x0.shape[0] != x.shape[0]:
            return -matvec_columns(pnl, x)
        d = x - self._x0[:, None]
        traded = np.flatnonzero(np.any(d != 0.0, axis=1))
        if traded.size > x.shape[0] // 4:
            return -matvec_columns(pnl, x)
        out = np.empty((pnl.shape[0], x.shape[1]))
        out[:] = -self._base[:, None]
        if traded.size:
            out -= pnl[:, traded] @ d[traded]
        return out

    def _values(self, comp: ExpectedShortfall, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every scenario's loss at each point (a column each) and the relaxation's margin there."""
        losses = self._losses(comp, x)
        if self.exact:
            return losses, _es_columns(comp, losses[self.scenarios])
        return losses, np.maximum((-(self.rows @ x)).max(axis=0, initial=0.0), 0.0)

    def _violated(self, comp: ExpectedShortfall, x: np.ndarray
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, np.ndarray]:
        """The tail at each point of ``x`` where the expected shortfall is above the relaxation;
        the true and relaxed margins at each point; the losses."""
        losses, relaxed = self._values(comp, x)
        true = np.zeros(x.shape[1])
        out = []
        for j in range(x.shape[1]):
            rows, weights = comp.tail_of(losses[:, j])
            true[j] = max(float(weights @ losses[rows, j]), 0.0)
            if true[j] > relaxed[j] + VIOLATION_RTOL * max(relaxed[j], 1.0):
                out.append((rows, weights))
        return out, true, relaxed, losses

    def begin_exact(self, comp: ExpectedShortfall, x: np.ndarray) -> None:
        """Switch to the exact form, over the scenarios near the tail at the points ``x`` (the
        worst ``EXACT_MARGIN`` tails at each) and the remembered ones."""
        losses = self._losses(comp, x)
        near = [self.hint] + [_worst(comp, losses[:, j]) for j in range(x.shape[1])]
        self.scenarios = _ordered_union(np.zeros(0, dtype=np.intp), near)

    def keep(self, comp: ExpectedShortfall, x: np.ndarray, margin: float) -> None:
        """The exact form over the worst ``margin`` tails' worth of scenarios at the points ``x``
        alone (fewer rows for the whole search, whose least-trading stage they slow most)."""
        losses = self._losses(comp, x)
        self.scenarios = _ordered_union(np.zeros(0, dtype=np.intp),
                                        [_worst(comp, losses[:, j], margin) for j in range(x.shape[1])])

    def separate(self, comp: ExpectedShortfall, x: np.ndarray, centre: np.ndarray
                 ) -> tuple[int, np.ndarray, np.ndarray]:
        """Add the tail at each point of ``x`` where the expected shortfall is above the cuts
        and, where some is, the tails at points between the best answer so far (``centre``) and
        that point which the cuts miss too (in-out separation). In the exact form, the
        scenarios near the tail at each point where it is above the relaxation. How many were
        added, and the true and relaxed margins at each point of ``x``."""
        found, true, relaxed, losses = self._violated(comp, x)
        if self.exact:
            near = [_worst(comp, losses[:, j]) for j in range(x.shape[1])
                    if true[j] > relaxed[j] + VIOLATION_RTOL * max(relaxed[j], 1.0)]
            before = self.scenarios.size
            self.scenarios = _ordered_union(self.scenarios, near)
            return int(self.scenarios.size - before), true, relaxed
        off = [j for j in range(x.shape[1]) if true[j] > relaxed[j]]
        if found and off and IN_OUT:
            between = np.column_stack([centre + a * (x[:, j] - centre) for j in off for a in IN_OUT])
            found += self._violated(comp, between)[0]
        return sum(self.add(comp, r, w) for r, w in found), true, relaxed

    def remembered(self, comp: ExpectedShortfall, x: np.ndarray) -> "_Tails":
        """The cuts that bind at some point of ``x``, and in the exact form the scenarios near the
        tail at each point (the next snapshot's seed)."""
        losses = self._losses(comp, x)
        cut = np.maximum((-(self.rows @ x)).max(axis=0, initial=0.0), 0.0)
        near = (-(self.rows @ x) >= cut - _BINDING_RTOL * np.maximum(cut, 1.0)).any(axis=1)
        hint = _ordered_union(np.zeros(0, dtype=np.intp),
                              [_worst(comp, losses[:, j], EXACT_KEEP) for j in range(x.shape[1])])
        return _Tails({k: t for (k, t), keep in zip(self.tails.items(), near) if keep},
                      hint=hint if self.exact else np.zeros(0, dtype=np.intp))


def _tail_size(comp: ExpectedShortfall) -> float:
    return (1.0 - comp.level) * comp.n_scenarios


def _worst(comp: ExpectedShortfall, losses: np.ndarray, margin: float | None = None) -> np.ndarray:
    """The scenarios that can be in the tail near a point: the worst ``margin`` tails' worth
    there (``EXACT_MARGIN`` unless given; and one more: the tail's boundary scenario)."""
    k = min(int(np.ceil((margin or EXACT_MARGIN) * _tail_size(comp))) + 1, losses.size)
    return np.argpartition(-losses, k - 1)[:k]


def _ordered_union(first: np.ndarray, more: list[np.ndarray]) -> np.ndarray:
    """``first`` then the scenarios of ``more`` not in it, in the order found."""
    seen = np.zeros(0, dtype=np.intp) if not more else np.concatenate(more)
    _, at = np.unique(seen, return_index=True)
    new = seen[np.sort(at)]
    return np.concatenate([first, new[~np.isin(new, first)]]).astype(np.intp)


def _over(comp: ExpectedShortfall, rows: np.ndarray) -> ExpectedShortfall:
    """Expected shortfall over the scenarios ``rows`` alone with the whole set's tail size
    (``(1 - level) S`` scenarios' worth): the mean of the worst losses among ``rows`` at weights
    at most ``1 / tail`` summing to one, a maximum over fewer weightings than the true one, so at
    most it everywhere, and equal to it where its tail is among ``rows``. Its level
    ``1 - tail / len(rows)`` gives it that tail size (``rows`` hold more than a tail)."""
    return ExpectedShortfall(comp.name, tuple(comp.labels[i] for i in rows), comp.raw_pnl[rows],
                             1.0 - _tail_size(comp) / rows.size)


def _es_columns(comp: ExpectedShortfall, losses: np.ndarray) -> np.ndarray:
    """``_over(comp, rows)``'s value at each point from its scenarios' losses (a column each)."""
    tail = _tail_size(comp)
    whole = min(int(np.floor(tail + 1e-12)), losses.shape[0])
    ordered = -np.sort(-losses, axis=0)
    total = ordered[:whole].sum(axis=0)
    if whole < losses.shape[0]:
        total = total + (tail - whole) * ordered[whole]
    return np.maximum(total / tail, 0.0)


@dataclass
class _Target:
    """One generated component: where it is in the bound model, and its active set."""

    pool: int
    index: int
    active: _Scenarios | _Tails

    def key(self, data: ProblemData) -> tuple:
        pool = data.bound.pools[self.pool]
        comp = pool.initial[self.index]
        return (pool.name, comp.name, type(comp).__name__, comp.n_scenarios)


def _generated(comp: object) -> bool:
    return isinstance(comp, (RiskMatrix, ExpectedShortfall)) and comp.n_scenarios > MIN_SCENARIOS


class ScenarioGeneration:
    """The Rebalancer's scenario generation, with each component's last active set."""

    def __init__(self) -> None:
        self._memory: dict[tuple, _Scenarios | _Tails] = {}
        self.rounds = (0, 0)  # the last run's rounds: stage 1 alone, whole searches
        self.sizes: dict[str, int] = {}  # each component's final active set (scenarios or cuts)

    @staticmethod
    def applies(data: ProblemData) -> bool:
        """Whether some component of ``data`` has a scenario set to generate."""
        return any(_generated(c) for p in data.bound.pools for c in p.initial)

    def _targets(self, data: ProblemData) -> list[_Target]:
        out = []
        x0 = data.universe.x0
        for i, pool in enumerate(data.bound.pools):
            xp = x0[pool.columns]
            for j, comp in enumerate(pool.initial):
                if not _generated(comp):
                    continue
                t = _Target(i, j, _Scenarios())
                memory = self._memory.get(t.key(data))
                if isinstance(comp, RiskMatrix):
                    t.active = _Scenarios.seed(comp, xp, memory if isinstance(memory, _Scenarios) else None)
                else:
                    t.active = _Tails.seed(comp, xp, memory if isinstance(memory, _Tails) else None)
                out.append(t)
        return out

    @staticmethod
    def relaxed(data: ProblemData, targets: list[_Target], padded: bool = True
                ) -> tuple[ProblemData, tuple[int, ...]]:
        """The problem data with each generated component replaced by its relaxation (padded to
        its capacity, or not); and the capacities. The margin before stays the true one:
        free_margin's target is the true margin less the amount."""
        caps = tuple(t.active.capacity(padded) for t in targets)
        pools = list(data.bound.pools)
        for t, cap in zip(targets, caps):
            pool = pools[t.pool]
            initial = list(pool.initial)
            initial[t.index] = t.active.relaxation(data.bound.pools[t.pool].initial[t.index], cap)
            pools[t.pool] = replace(pool, initial=initial)
        return replace(data, bound=replace(data.bound, pools=pools)), caps

    @staticmethod
    def separate(data: ProblemData, targets: list[_Target], trades: np.ndarray, centre: np.ndarray
                 ) -> tuple[int, np.ndarray]:
        """Add what is violated at each answer (``trades``: instruments x answers; ``centre``:
        the best positions so far); how many were added, and each answer's true margin (USD)."""
        x0 = data.universe.x0
        added = 0
        true_margin = np.zeros(trades.shape[1])
        generated = {(t.pool, t.index): t for t in targets}
        for i, pool in enumerate(data.bound.pools):
            x = x0[pool.columns][:, None] + trades[pool.columns]
            for j, comp in enumerate(pool.initial):
                t = generated.get((i, j))
                if t is None:
                    true_margin += pool.usd_rate * np.array([comp.evaluate(x[:, k]) for k in range(x.shape[1])])
                    continue
                n, true, _ = t.active.separate(comp, x, centre[pool.columns])
                added += n
                true_margin += pool.usd_rate * true
        return added, true_margin

    @staticmethod
    def score(reb: "Rebalancer", search: "_Search", margin: float, cost: float) -> float:
        """An answer's true objective; under free_margin (where the objective is the cost and
        the margin a constraint) its true margin: the lowest so far is the centre."""
        if reb.spec.objective == "free_margin":
            return margin
        return search.verifier.objective_usd(margin, cost)

    def run(self, reb: "Rebalancer", data: ProblemData, search: "_Search") -> None:
        """Solve ``data`` by growing relaxations (see the module's notes); the answers, verified
        on the full scenario set, go to ``search`` as the ordinary search would put them."""
        targets = self._targets(data)
        spec = reb._continuous_spec()
        x0 = data.universe.x0
        deadline = time.perf_counter() + reb.spec.time_limit_s
        track = _Keys(reb)
        best = self.score(reb, search, data.margin_before_usd, 0.0)
        centre = x0
        first = 0
        try:
            lean = _StageOne(reb, data, targets, self)
        except _NotLinear:
            lean = None  # straight to the whole search
        if lean is not None:
            try:
                lean.run(search, deadline)
            except OptimizationError:
                pass  # the whole search says what is wrong
            first, best, centre = lean.rounds, lean.best, x0 + lean.centre
        log: list[tuple[str, str]] = [("scenario generation", f"stage 1 alone, {first} round(s): "
                                       f"{self._sizes(data, targets)}")]
        converged = False
        inner: _Search | None = None
        rounds = 0
        while True:
            rounds += 1
            relaxed, caps = self.relaxed(data, targets)
            inner = type(search)(Verifier(relaxed, reb.spec))
            try:
                reb._search(lambda: reb.problem(relaxed, spec), relaxed, inner)
            finally:
                track.note(reb, caps)
            added = 0
            if inner.passed:
                trades = np.column_stack([v.trades for v, _ in inner.passed])
                added, margin = self.separate(data, targets, trades, centre)
                for j, (v, _) in enumerate(inner.passed):
                    score = self.score(reb, search, float(margin[j]), v.cost_usd)
                    if score < best:
                        best, centre = score, x0 + v.trades
            log.append(("scenario generation", f"whole search, round {rounds}: "
                        f"{self._sizes(data, targets)}; " + (f"{added} violated at its answers, added"
                                                            if added else "none violated at its answers")))
            if not added:
                converged = True
                break
            if rounds >= MAX_ROUNDS or time.perf_counter() > deadline:
                break
        self.rounds = (first, rounds)
        self.sizes = {data.bound.pools[t.pool].initial[t.index].name:
                      t.active.scenarios.size if isinstance(t.active, _Tails) and t.active.exact
                      else t.active.size for t in targets}
        track.forget(reb, tuple(t.active.capacity(True) for t in targets))
        assert inner is not None
        if inner.passed:
            trades = np.column_stack([v.trades for v, _ in inner.passed])
            for t in targets:
                pool = data.bound.pools[t.pool]
                x = x0[pool.columns][:, None] + trades[pool.columns]
                self._memory[t.key(data)] = t.active.remembered(pool.initial[t.index], x)
        self._hand_over(inner, search, log, converged, first + rounds, data, targets)

    @staticmethod
    def _sizes(data: ProblemData, targets: list[_Target]) -> str:
        parts = []
        for t in targets:
            comp = data.bound.pools[t.pool].initial[t.index]
            if isinstance(t.active, _Tails) and t.active.exact:
                parts.append(f"{comp.name} exact over {t.active.scenarios.size:,} of {comp.n_scenarios:,} "
                             f"scenarios (after {t.active.size} tail cuts)")
                continue
            what = "tail cuts" if isinstance(t.active, _Tails) else "scenarios"
            parts.append(f"{comp.name} over {t.active.size} {what} of {comp.n_scenarios:,} scenarios")
        return ", ".join(parts)

    @staticmethod
    def _hand_over(inner: "_Search", search: "_Search", log: list[tuple[str, str]], converged: bool,
                   rounds: int, data: ProblemData, targets: list[_Target]) -> None:
        """The last search's answers verified on the full scenario set, with its reports, notes
        and log (after one line per round)."""
        search.problem_class = inner.problem_class or ProblemClass.LP.value
        search.reports += inner.reports
        search.stopped_early += inner.stopped_early
        search.log += log + inner.log
        search.notes += inner.notes
        sizes = ScenarioGeneration._sizes(data, targets)
        if converged:
            search.notes.append(f"scenario generation: {rounds} round(s), the last with {sizes}; every "
                                "answer verified on the full scenario set")
        else:
            bound = min((v.objective_usd for v, raw in inner.passed
                         if raw is not None and raw.stage == "stage 1"), default=float("nan"))
            search.notes.append(f"scenario generation stopped after {rounds} round(s) ({sizes}) with "
                                "scenarios still violated: the trades are verified on the full scenario "
                                "set without a claim of optimality; the relaxation's optimum, "
                                f"{bound:,.2f} USD, bounds the objective from below")
        whole = sum(data.bound.pools[t.pool].initial[t.index].n_scenarios for t in targets)
        for v, raw in inner.passed:
            claim = v.solver_margin_usd if converged else None
            search._record(search.verifier.check(v.trades, solver_margin_usd=claim,
                                                 source=f"{v.source}, on all {whole:,} scenarios"), raw)


class _Keys:
    """The problems a run adds to the Rebalancer's caches, by the relaxation's capacities: those
    of other sizes than the final one are dropped after the run, so the caches keep one problem
    per structure, as for any other model."""

    def __init__(self, reb: "Rebalancer") -> None:
        self.known = (set(reb._problems), set(reb.native._models))
        self.made: list[tuple[tuple[int, ...], set, set]] = []

    def note(self, reb: "Rebalancer", caps: tuple[int, ...]) -> None:
        new = (set(reb._problems) - self.known[0], set(reb.native._models) - self.known[1])
        self.made.append((caps, *new))
        self.known[0].update(new[0])
        self.known[1].update(new[1])

    def forget(self, reb: "Rebalancer", final: tuple[int, ...]) -> None:
        for caps, problems, natives in self.made:
            if caps != final:
                for k in problems:
                    reb._problems.pop(k, None)
                for k in natives:
                    reb.native._models.pop(k, None)


class _NotLinear(Exception):
    """The relaxation has no native LP form here (another component of the model is not linear)."""


class _StageOne:
    """Phase 1: stage 1 alone, on native HiGHS models of the relaxation kept for this run only:
    the continuous LP (no lots, no impact cost, no instrument cap), each new scenario or cut
    appended as a row (``addRow``: HiGHS keeps its basis and re-solves by dual simplex). Its
    answers are never offered: only where the relaxation misses is learnt from them."""

    def __init__(self, reb: "Rebalancer", data: ProblemData, targets: list[_Target],
                 gen: ScenarioGeneration) -> None:
        from ._native import NativeProblem, lp_blocks

        self.reb, self.data, self.targets, self.gen = reb, data, targets, gen
        tb = reb.spec.trade_bounds
        self.spec = reb.spec.model_copy(update={
            "lots": reb.spec.lots.model_copy(update={"mode": "none"}),
            "costs": reb.spec.costs.model_copy(update={"impact": 0.0}),
            "trade_bounds": tb.model_copy(update={"max_instruments": None})})
        if any(isinstance(c := data.bound.pools[t.pool].initial[t.index], RiskMatrix) and c.pnl_offset
               for t in targets):
            raise _NotLinear()  # a gain branch: two rows per scenario (not a user matrix's rule)
        self.relaxed = gen.relaxed(data, targets, padded=False)[0]
        self.blocks = lp_blocks(self.relaxed, self.spec)
        if isinstance(self.blocks, str):
            raise _NotLinear()
        self.model = NativeProblem(self.relaxed, self.spec, self.blocks)
        n = self.n = len(data.universe.x0)
        # each target's epigraph column: the blocks follow the pools and their components in order
        where, col, b = {}, 2 * n, 0
        for i, pool in enumerate(self.relaxed.bound.pools):
            for j in range(len(pool.initial)):
                where[(i, j)] = col
                col += self.blocks[b][1].n_cols
                b += 1
        self.epigraph = [where[(t.pool, t.index)] for t in targets]
        self.in_model = [t.active.size for t in targets]
        #: the exact form in the stage-1 model, per target: its ``z`` column, the row
        #: ``m - z - sum(u) / tail >= 0`` and how many of its scenarios have their row
        self.exact: dict[int, list[int]] = {}
        self.highs = [self.model.h]
        u = data.universe
        self.buy_max, self.sell_max = np.asarray(u.buy_max, float), np.asarray(u.sell_max, float)
        width = self.buy_max + self.sell_max
        self.scale = np.where(np.isfinite(width) & (width > 0), width, np.maximum(np.abs(u.x0), 1.0))
        self.rounds = 0
        self.best = np.inf  # the best answer's true objective (set by ``run``)
        self.centre = np.zeros(n)  # the best answer's trades

    def _append(self) -> None:
        """The scenarios and cuts the targets gained since the models last saw them, as rows."""
        n, x0 = self.n, self.data.universe.x0
        for k, t in enumerate(self.targets):
            pool = self.data.bound.pools[t.pool]
            g, d = t.active.since(pool.initial[t.index], self.in_model[k])
            self.in_model[k] = t.active.size
            pc = pool.columns
            idx = np.concatenate([pc, n + pc, [self.epigraph[k]]]).astype(np.int32)
            for row, damp in zip(pool.usd_rate * g, pool.usd_rate * d):
                # m + g (x0 + buy - sell) >= -d, written on the trades
                for h in self.highs:
                    h.addRow(float(-damp - row @ x0[pc]), np.inf, idx.size, idx,
                             np.concatenate([row, -row, [1.0]]))
            if k in self.exact:
                self._append_exact(k)

    def _append_exact(self, k: int) -> None:
        """The exact form's scenarios target ``k`` gained (Rockafellar-Uryasev over them, in USD):
        a column ``u_s >= 0`` each, in the row ``m - z - sum(u) / tail >= 0``, and a row
        ``u_s + z + p_s (x0 + buy - sell) >= 0`` each (``u_s`` at least the loss above ``z``)."""
        t, h, n = self.targets[k], self.model.h, self.n
        pool = self.data.bound.pools[t.pool]
        comp = pool.initial[t.index]
        assert isinstance(t.active, _Tails) and isinstance(comp, ExpectedShortfall)
        state = self.exact[k]
        if state[0] < 0:  # first: z and the epigraph's row
            state[0] = h.getNumCol()
            h.addCol(0.0, -np.inf, np.inf, 0, np.zeros(0, dtype=np.int32), np.zeros(0))
            state[1] = h.getNumRow()
            h.addRow(0.0, np.inf, 2, np.array([self.epigraph[k], state[0]], dtype=np.int32),
                     np.array([1.0, -1.0]))
        new = t.active.scenarios[state[2]:]
        state[2] = t.active.scenarios.size
        if not new.size:
            return
        m, first_u = new.size, h.getNumCol()
        h.addCols(m, np.zeros(m), np.zeros(m), np.full(m, np.inf), m, np.arange(m, dtype=np.int32),
                  np.full(m, state[1], dtype=np.int32), np.full(m, -1.0 / _tail_size(comp)))
        pc = pool.columns
        g = pool.usd_rate * comp.values()["pnl"][new]  # USD P&L per unit of the pool's instruments
        width = 2 * pc.size + 2
        idx = np.empty((m, width), dtype=np.int32)
        idx[:, : pc.size] = pc
        idx[:, pc.size: 2 * pc.size] = n + pc
        idx[:, -2] = state[0]
        idx[:, -1] = first_u + np.arange(m)
        vals = np.empty((m, width))
        vals[:, : pc.size] = g
        vals[:, pc.size: 2 * pc.size] = -g
        vals[:, -2:] = 1.0
        h.addRows(m, -(g @ self.data.universe.x0[pc]), np.full(m, np.inf), idx.size,
                  (width * np.arange(m)).astype(np.int32), idx.ravel(), vals.ravel())

    def _exact_fits(self) -> bool:
        return all(_tail_size(self.data.bound.pools[t.pool].initial[t.index]) <= EXACT_MAX_TAIL
                   for t in self.targets if isinstance(t.active, _Tails))

    def _point(self) -> np.ndarray | None:
        """Stage 1 alone on the model with the exact form's columns: the trades, or None."""
        if not self.model._run([], "stage 1", ("hot", "cold")):
            return None
        x = np.asarray(self.model.h.getSolution().col_value, dtype=float)
        return x[: self.n] - x[self.n: 2 * self.n]

    def _exact(self, search: "_Search", deadline: float, point: np.ndarray) -> None:
        """Phase 1's end: expected shortfall over the scenarios near the tail at the best answer
        and at the model's last minimum ``point`` (each target's ``begin_exact``), in the
        stage-1 model beside the cuts, re-solved and grown by the scenarios near the tail at
        each answer where it misses, until it misses nowhere. Near the optimum the tail moves
        little: a few rounds, against the cuts' many there."""
        self.highs = [self.model.h]  # the level method's projection model (if any) is done with
        self.proj = None
        x0 = self.data.universe.x0
        for k, t in enumerate(self.targets):
            if isinstance(t.active, _Tails):
                pool = self.data.bound.pools[t.pool]
                pc = pool.columns
                t.active.begin_exact(pool.initial[t.index], x0[pc][:, None] + np.column_stack(
                    [self.centre[pc], point[pc]]))
                self.exact[k] = [-1, -1, 0]
                self._append_exact(k)
        last = None
        while self.rounds < STAGE_ONE_ROUNDS and time.perf_counter() < deadline:
            t = self._point()
            if t is None:
                break
            self.rounds += 1
            last = t
            if not self._learn(search, t):
                break
        if last is None:
            return
        for t in self.targets:  # the whole search's LP: the scenarios near the tail at the answer
            if isinstance(t.active, _Tails) and t.active.exact:
                pool = self.data.bound.pools[t.pool]
                x = x0[pool.columns] + last[pool.columns]
                t.active.keep(pool.initial[t.index], x[:, None], EXACT_KEEP)

    def _learn(self, search: "_Search", t: np.ndarray) -> int:
        """Separate at trades ``t``, make it the centre if it is the best so far; rows added."""
        data, gen = self.data, self.gen
        x0 = data.universe.x0
        added, margin = gen.separate(data, self.targets, t[:, None], x0 + self.centre)
        score = gen.score(self.reb, search, float(margin[0]), data.cost_usd(t))
        if score < self.best:
            self.best, self.centre = score, t
        self._append()
        return added

    def run(self, search: "_Search", deadline: float) -> None:
        self.best = self.gen.score(self.reb, search, self.data.margin_before_usd, 0.0)
        tails = any(isinstance(t.active, _Tails) for t in self.targets)
        if tails and self.reb.spec.objective != "free_margin":
            self._level(search, deadline)
        else:
            self._boxed(search, deadline)

    # ------------------------------------------------------------------ cutting planes in a box
    def _box(self, radius: float) -> None:
        """Trades within ``radius`` x scale of the centre's (and within their own bounds): on the
        buy and sell columns (a buy from a positive lower bound when the box lies above zero)."""
        lo = np.maximum(self.centre - radius * self.scale, -self.sell_max)
        hi = np.minimum(self.centre + radius * self.scale, self.buy_max)
        n = self.n
        self.model.h.changeColsBounds(
            2 * n, np.arange(2 * n, dtype=np.int32),
            np.r_[np.maximum(lo, 0.0), np.maximum(-hi, 0.0)], np.r_[np.maximum(hi, 0.0), np.maximum(-lo, 0.0)])

    def _boxed(self, search: "_Search", deadline: float) -> None:
        """Cutting planes in a box around the best answer (the box-step method): the box doubles
        after a step the true objective confirms that the box held back, halves after one it
        does not confirm. Ends when the model predicts no gain over the best answer, or when an
        answer inside the box shows nothing violated."""
        reb, data, gen = self.reb, self.data, self.gen
        radius = RADIUS
        while self.rounds < STAGE_ONE_ROUNDS and time.perf_counter() < deadline:
            self._box(radius)
            found = self.model.stage1_point()
            if found is None:
                break
            self.rounds += 1
            t, lp_margin = found
            best, centre = self.best, self.centre
            predicted = best - gen.score(reb, search, lp_margin, data.cost_usd(t))
            inside = bool(np.all(np.abs(t - centre) < radius * self.scale * (1 - 1e-9)))
            added = self._learn(search, t)
            if predicted <= VIOLATION_RTOL * max(abs(best), 1.0) or (not added and inside):
                break
            if best - self.best >= KEEP * predicted:
                if not inside:
                    radius = min(2.0 * radius, 1e6)
            else:
                radius = max(radius / 2.0, 1e-6)

    # ------------------------------------------------------------------ the level method
    def _projection(self) -> None:
        """A second model of the same LP for the level method's steps: the stage-1 objective
        becomes a row (``<= level``), and the objective the largest scaled distance ``s`` of a
        trade from the centre's (``|t_i - c_i| <= scale_i s``: two rows per instrument)."""
        from ._native import NativeProblem

        self.proj = NativeProblem(self.relaxed, self.spec, self.blocks)
        h, n = self.proj.h, self.n
        cost = np.asarray(self.proj.num.cost, dtype=float)
        ncol = cost.size
        h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), np.zeros(ncol))
        h.addCol(1.0, 0.0, np.inf, 0, np.zeros(0, dtype=np.int32), np.zeros(0))
        i = np.arange(n)
        starts = (3 * np.arange(2 * n)).astype(np.int32)
        idx = np.column_stack([np.r_[i, i], np.r_[n + i, n + i], np.full(2 * n, ncol)]).ravel().astype(np.int32)
        vals = np.column_stack([np.ones(2 * n), -np.ones(2 * n), np.r_[-self.scale, self.scale]]).ravel()
        self.box_row = h.getNumRow()
        h.addRows(2 * n, np.full(2 * n, -np.inf), np.full(2 * n, np.inf), idx.size, starts, idx, vals)
        nz = np.flatnonzero(cost).astype(np.int32)
        self.level_row = h.getNumRow()
        h.addRow(-np.inf, np.inf, nz.size, nz, cost[nz])
        self.highs.append(h)

    def _project(self, level: float) -> np.ndarray | None:
        """The point where the model is at most ``level`` nearest the centre (scaled max norm)."""
        h, n, c = self.proj.h, self.n, self.centre
        rows = np.arange(self.box_row, self.box_row + 2 * n, dtype=np.int32)
        h.changeRowsBounds(2 * n, rows, np.r_[np.full(n, -np.inf), c], np.r_[c, np.full(n, np.inf)])
        h.changeRowBounds(self.level_row, -np.inf, float(level))
        h.setOptionValue("time_limit", h.getRunTime() + float(self.spec.time_limit_s))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        x = np.asarray(h.getSolution().col_value, dtype=float)
        return x[:n] - x[n: 2 * n]

    def _level(self, search: "_Search", deadline: float) -> None:
        """The level method: each round, the model's minimum (Kelley's step, a lower bound of
        the optimum) and the point nearest the best answer where the model is at most ``LEVEL``
        of the way from that bound to the best true objective; both are separated. Ends when
        the bound meets the best objective, or the minimum shows nothing violated."""
        reb, data, gen = self.reb, self.data, self.gen
        if self._exact_fits() and any(isinstance(t.active, _Tails) and t.active.hint.size
                                      for t in self.targets):
            # a re-optimise: the last answers' tails are near this optimum's; the whole search
            # starts in the exact form over the scenarios near them (phase 1 adds nothing there)
            for t in self.targets:
                if isinstance(t.active, _Tails):
                    t.active.scenarios = t.active.hint
            return
        self._projection()
        while self.rounds < STAGE_ONE_ROUNDS and time.perf_counter() < deadline:
            found = self.model.stage1_point()
            if found is None:
                break
            self.rounds += 1
            t, lp_margin = found
            low = gen.score(reb, search, lp_margin, data.cost_usd(t))
            added = self._learn(search, t)
            gap = self.best - low
            if not added or gap <= VIOLATION_RTOL * max(abs(self.best), 1.0):
                break
            if gap <= EXACT_GAP * max(abs(self.best), 1.0) and self._exact_fits():
                self._exact(search, deadline, t)
                break
            p = self._project(low + LEVEL * gap)
            if p is not None:
                self._learn(search, p)
