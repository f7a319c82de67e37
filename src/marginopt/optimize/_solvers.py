"""The solver boundary: chains by problem class, and the one place a status becomes a verdict."""

from __future__ import annotations

import time
from functools import lru_cache
import warnings
from dataclasses import dataclass, field
from enum import Enum

import cvxpy as cp
import numpy as np

from ..errors import Infeasible, SolverFailed, Unbounded


class ProblemClass(str, Enum):
    LP = "LP"
    QP = "QP"
    SOCP = "SOCP"
    MILP = "MILP"
    MIQP = "MIQP"


#: Fallback chains measured on this kind of machine (shared/docs/solver-notes.md). SCS answers are
#: flagged low accuracy; OSQP is never used for LPs.
CHAINS: dict[ProblemClass, tuple[str, ...]] = {
    ProblemClass.LP: ("HIGHS", "CLARABEL", "SCS"),
    ProblemClass.QP: ("CLARABEL", "OSQP", "SCS"),
    ProblemClass.SOCP: ("CLARABEL", "ECOS", "SCS"),
    ProblemClass.MILP: ("HIGHS",),
    ProblemClass.MIQP: ("HIGHS",),
}

#: Tight tolerances: limits must hold to 1e-9 of their scale after the solve.
OPTIONS: dict[str, dict] = {
    "HIGHS": {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500},
    "ECOS": {"abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10, "max_iters": 500},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "polish": True, "max_iter": 200_000},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
}
LOW_ACCURACY = frozenset({"SCS"})


class Verdict(str, Enum):
    ACCEPT = "accept"
    WARN = "accept_with_warning"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    FAIL = "fail"


@lru_cache(maxsize=1)
def _installed() -> frozenset[str]:
    """cvxpy probes every solver on each call (~10 ms): ask once."""
    return frozenset(cp.installed_solvers())


def verdict(status: str | None) -> Verdict:
    """Map a cvxpy status to what marginopt does with it."""
    return {
        cp.OPTIMAL: Verdict.ACCEPT,
        cp.OPTIMAL_INACCURATE: Verdict.WARN,
        cp.INFEASIBLE: Verdict.INFEASIBLE,
        cp.UNBOUNDED: Verdict.UNBOUNDED,
    }.get(status, Verdict.FAIL)  # inaccurate infeasible/unbounded, user limit, solver error


@dataclass(frozen=True)
class SolveReport:
    solver: str
    status: str
    seconds: float
    warnings: tuple[str, ...] = ()
    attempts: tuple[tuple[str, str], ...] = field(default_factory=tuple)


#: Mixed-integer searches stop at a small gap or a time limit; the incumbent is then accepted
#: with a warning (the proposal reports it).
MIP_OPTIONS = {"HIGHS": {"mip_rel_gap": 1e-6, "time_limit": 30.0}}


def solve(problem: cp.Problem, problem_class: ProblemClass, solver: str | None = None) -> SolveReport:
    """Solve along the class's chain (or only ``solver``); raise Infeasible / Unbounded /
    SolverFailed with what every solver said."""
    chain = (solver.upper(),) if solver else CHAINS[problem_class]
    installed = _installed()
    attempts: list[tuple[str, str]] = []
    for name in chain:
        if name not in installed:
            attempts.append((name, "not installed"))
            continue
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                opts = dict(OPTIONS.get(name, {}))
                if problem_class in (ProblemClass.MILP, ProblemClass.MIQP):
                    opts.update(MIP_OPTIONS.get(name, {}))
                # no warm start: a re-used problem must answer exactly as a fresh one would,
                # whatever it solved before (batch runs in-process and on Dask agree bit for bit)
                problem.solve(solver=name, warm_start=False, **opts)
            except cp.error.SolverError as exc:
                attempts.append((name, f"solver error: {exc}".splitlines()[0]))
                continue
            except ValueError as exc:  # cvxpy could not unpack the solver's answer (status unknown)
                attempts.append((name, f"no usable answer: {exc}".splitlines()[0]))
                continue
        seconds = time.perf_counter() - start
        said = tuple(str(w.message).splitlines()[0] for w in caught)
        v = verdict(problem.status)
        if problem.status == cp.USER_LIMIT and problem.value is not None and np.isfinite(problem.value):
            v = Verdict.WARN  # stopped at a limit with a feasible incumbent
        if v is Verdict.INFEASIBLE:
            raise Infeasible(f"{name} proves the problem infeasible.")
        if v is Verdict.UNBOUNDED:
            raise Unbounded(f"{name} reports the problem unbounded: give the spec trade bounds.")
        if v is Verdict.FAIL:
            attempts.append((name, f"status {problem.status}"))
            continue
        notes = list(said)
        if v is Verdict.WARN:
            notes.append(f"{name} returned {problem.status}")
        if name in LOW_ACCURACY:
            notes.append(f"{name} is a first-order solver: its answer is low accuracy")
        return SolveReport(name, problem.status, seconds, tuple(notes), tuple(attempts))
    raise SolverFailed("No solver produced an answer.", attempts)
