"""The solver boundary: chains by problem class, and the one place a status becomes a verdict.

A solver's word is a claim: an answer is accepted here only as a *candidate* (the Rebalancer's
verifier decides whether it becomes a proposal), "unbounded" on a problem whose objective is
bounded below is recorded as a failed attempt rather than believed, and no exception raised by
a solver or by cvxpy unpacking its answer escapes this module untyped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

import cvxpy as cp
import numpy as np

from ..errors import Infeasible, MarginoptError, SolverFailed, Unbounded


class ProblemClass(str, Enum):
    LP = "LP"
    QP = "QP"
    SOCP = "SOCP"
    MILP = "MILP"
    MIQP = "MIQP"
    MISOCP = "MISOCP"

    @property
    def integer(self) -> bool:
        return self in (ProblemClass.MILP, ProblemClass.MIQP, ProblemClass.MISOCP)


#: Fallback chains measured on this kind of machine (docs/solver-notes.md). SCS answers are
#: low accuracy (the verifier decides whether one ships); OSQP is never used for LPs. HiGHS has
#: no integer QP or cone support, so mixed-integer problems with a quadratic or cone term go to
#: SCIP (branch and bound over its own LP relaxations and cone cuts).
CHAINS: dict[ProblemClass, tuple[str, ...]] = {
    ProblemClass.LP: ("HIGHS", "CLARABEL", "SCS"),
    ProblemClass.QP: ("CLARABEL", "OSQP", "SCS"),
    ProblemClass.SOCP: ("CLARABEL", "ECOS", "SCS"),
    ProblemClass.MILP: ("HIGHS", "SCIP"),
    ProblemClass.MIQP: ("SCIP",),
    ProblemClass.MISOCP: ("SCIP",),
}

#: Tight tolerances: limits must hold to 1e-9 of their scale after the solve.
OPTIONS: dict[str, dict[str, Any]] = {
    "HIGHS": {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500},
    "ECOS": {"abstol": 1e-10, "reltol": 1e-10, "feastol": 1e-10, "max_iters": 500},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "polish": True, "max_iter": 200_000},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
    # SCIP's LP solver (SoPlex) floors tolerances at 1e-10 without GMP and says so on stdout
    # when SCIP asks for less while resolving: harmless, and silenced (see ``_quiet_stdout``)
    "SCIP": {"scip_params": {"numerics/feastol": 1e-9}},
}
LOW_ACCURACY = frozenset({"SCS"})

#: Mixed-integer searches stop at a small gap or a time limit; a time-limited incumbent is a
#: candidate like any other, and its gap and bound are reported with it.
MIP_TIME_LIMIT_S = 30.0
MIP_REL_GAP = 1e-6


def _mip_options(name: str, time_limit_s: float) -> dict[str, Any]:
    if name == "HIGHS":
        return {"mip_rel_gap": MIP_REL_GAP, "time_limit": float(time_limit_s)}
    if name == "SCIP":
        return {"scip_params": {"limits/time": float(time_limit_s), "limits/gap": MIP_REL_GAP}}
    return {}


class Verdict(str, Enum):
    ACCEPT = "accept"
    WARN = "accept_with_warning"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    FAIL = "fail"


@lru_cache(maxsize=1)
def installed_solvers() -> frozenset[str]:
    """cvxpy probes every solver on each call (~10 ms): ask once."""
    return frozenset(cp.installed_solvers())


#: a second try, with the solver's own defaults, after a solver fails outright (SCIP's LP can
#: hit "unresolved numerical troubles" at tight tolerances and not at its defaults)
RETRY_OPTIONS: dict[str, dict[str, Any]] = {"SCIP": {}}


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
    #: mixed-integer searches: relative gap and best bound (objective units) when they stopped
    mip_gap: float | None = None
    mip_bound: float | None = None
    #: a mixed-integer search that stopped at its time limit, not at a proven optimum
    stopped_early: bool = False


#: solvers whose native library writes to the process's stdout whatever cvxpy's verbosity
_CHATTY = frozenset({"SCIP"})


@contextlib.contextmanager
def _quiet_stdout(active: bool) -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null while a chatty native solver runs (a CLI's
    --json output must stay parseable)."""
    if not active:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)  # its errors too: they reach the attempts as SolverError
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def chain(problem_class: ProblemClass, solver: str | None = None) -> tuple[str, ...]:
    """The solvers to try, in order: the named one alone, or the class's chain."""
    return (solver.upper(),) if solver else CHAINS[problem_class]


def _mip_stats(name: str, problem: cp.Problem) -> tuple[float | None, float | None, bool]:
    """Gap, best bound and whether the search stopped at its time limit."""
    extra = getattr(problem.solver_stats, "extra_stats", None)
    try:
        if name == "HIGHS" and extra is not None:
            return float(extra.mip_gap), float(extra.mip_dual_bound), problem.status == cp.USER_LIMIT
        if name == "SCIP" and isinstance(extra, dict) and "model" in extra:
            # cvxpy reports SCIP's time limit as optimal_inaccurate: ask SCIP itself
            model = extra["model"]
            return (float(model.getGap()), float(model.getDualbound()),
                    str(extra.get("scip_status", model.getStatus())) == "timelimit")
    except (AttributeError, TypeError, ValueError):  # a solver build without these statistics
        pass
    return None, None, problem.status == cp.USER_LIMIT


def solve(problem: cp.Problem, problem_class: ProblemClass, solver: str | None = None, *,
          bounded_below: bool = False, time_limit_s: float = MIP_TIME_LIMIT_S) -> SolveReport:
    """Solve along the class's chain (or only ``solver``) and return the first answer.

    Raises ``Infeasible`` when a solver proves infeasibility (a claim the caller confirms),
    ``Unbounded`` when one reports unboundedness and ``bounded_below`` is false, and
    ``SolverFailed`` with what every solver said when none answered. With ``bounded_below`` an
    "unbounded" status is a solver error: the next solver is tried.
    """
    installed = installed_solvers()
    attempts: list[tuple[str, str]] = []
    for name in chain(problem_class, solver):
        if name not in installed:
            attempts.append((name, "not installed"))
            continue
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            failure = None
            for base in (OPTIONS.get(name, {}), RETRY_OPTIONS.get(name)):
                if base is None:
                    break
                opts = dict(base)
                if problem_class.integer:
                    for key, value in _mip_options(name, time_limit_s).items():
                        opts[key] = {**opts.get(key, {}), **value} if isinstance(value, dict) else value
                try:
                    # no warm start: a re-used problem must answer exactly as a fresh one would,
                    # whatever it solved before (batch runs in-process and on Dask agree bit for bit)
                    with _quiet_stdout(name in _CHATTY):
                        problem.solve(solver=name, warm_start=False, **opts)
                    failure = None
                    break
                except MarginoptError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the solver boundary: every failure is typed
                    # cvxpy's SolverError, a ValueError unpacking an answer, a solver's own exception
                    failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if failure is not None:
                attempts.append((name, failure))
                continue
        seconds = time.perf_counter() - start
        said = tuple(str(w.message).splitlines()[0] for w in caught)
        v = verdict(problem.status)
        if problem.status == cp.USER_LIMIT and problem.value is not None and np.isfinite(problem.value):
            v = Verdict.WARN  # stopped at a limit with a feasible incumbent
        if v is Verdict.INFEASIBLE:
            attempts.append((name, "infeasible"))
            raise Infeasible(f"{name} reports the problem infeasible.", attempts=attempts)
        if v is Verdict.UNBOUNDED:
            if bounded_below:
                attempts.append((name, "reported unbounded on a problem bounded below: not trusted"))
                continue
            raise Unbounded(f"{name} reports the problem unbounded: give the spec trade bounds.")
        if v is Verdict.FAIL or problem.value is None or not np.isfinite(problem.value):
            attempts.append((name, f"status {problem.status}"))
            continue
        notes = list(said)
        gap = bound = None
        stopped = False
        if problem_class.integer:
            gap, bound, stopped = _mip_stats(name, problem)
        if stopped:
            notes.append(f"{name} stopped at its {time_limit_s:g} s time limit"
                         + (f" with a relative gap of {gap:.3g}" if gap is not None else ""))
        elif v is Verdict.WARN:
            notes.append(f"{name} returned {problem.status}")
        if name in LOW_ACCURACY:
            notes.append(f"{name} is a first-order solver: its answer is low accuracy")
        attempts.append((name, str(problem.status)))
        return SolveReport(name, problem.status, seconds, tuple(notes), tuple(attempts), gap, bound,
                           stopped)
    raise SolverFailed("No solver produced an answer.", attempts)
