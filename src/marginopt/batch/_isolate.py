"""In-process batches run each account's solve in a child process, so nothing one account does
can take the run down.

A native crash (a solver that aborts or segfaults), a solve that never returns, or a worker that
runs out of memory ends the child, not the run: the account gets an ``error`` record saying so in
plain words, a new child is started and the run goes on with the next account. The child keeps
its parsed market and cached ``Rebalancer`` objects between accounts, as a Dask worker does, and
runs the very same ``run_account``: results are the same as on Dask.

On POSIX the child is forked (it starts in milliseconds and shares the imported modules);
elsewhere it is spawned.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import time
from typing import Any

from . import _worker
from ._worker import MarketRef, Task

#: default of the job key ``account_time_limit_s``: one account's solve may take this long
DEFAULT_ACCOUNT_TIME_LIMIT_S = 600.0


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def can_isolate() -> bool:
    """Whether accounts can run in a child of this process without pickling the market and
    model to it (a fork shares them; a spawned child would be sent them on every start)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child is killed when the run's process dies (a killed run leaves no solve
    running on its own)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn, market: MarketRef, model, model_key: str, solver: str | None,
           reports: bool, close_fds: tuple[int, ...]) -> None:  # pragma: no cover - in the child
    """The child: optimise each task sent until told to stop (``None``) or the pipe closes."""
    for fd in close_fds:       # the run's lock: held by the run's process alone
        try:
            os.close(fd)
        except OSError:
            pass
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's to handle
    faulthandler.disable()     # a crash is reported by the parent in the account's record
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        # looked up on the module each time: the same function a Dask worker runs
        conn.send(_worker.run_account(task, market, model, model_key, solver, reports))


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def failure_record(task: Task, error: str, error_class: str, seconds: float) -> dict[str, Any]:
    """The record of an account whose solve did not come back. Not final: the next run retries
    it (a crash or a time-out may depend on the machine, not only on the inputs)."""
    return {"record": {"account": task.account, "input_hash": task.input_hash, "status": "error",
                       "margin_before_usd": None, "margin_after_usd": None,
                       "margin_saved_usd": None, "margin_saved_pct": None, "n_trades": None,
                       "solve_seconds": seconds, "error": error, "error_class": error_class,
                       "final": False},
            "files": {}}


class IsolatedRunner:
    """One child process at a time; ``run(task)`` always returns the account's result."""

    def __init__(self, market: MarketRef, model, model_key: str, solver: str | None, reports: bool,
                 time_limit_s: float = DEFAULT_ACCOUNT_TIME_LIMIT_S,
                 close_fds: tuple[int, ...] = ()) -> None:
        """``close_fds``: descriptors the child must not keep open (the run's lock file: a
        forked child would otherwise hold the lock after the run's process is gone)."""
        self._args = (market, model, model_key, solver, reports, tuple(close_fds))
        self.time_limit_s = float(time_limit_s)
        self._ctx = _context()
        self._proc = None
        self._conn = None
        #: children started (the first, plus one after each crash or time-out)
        self.starts = 0

    # ------------------------------------------------------------------ the child
    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_serve, args=(child, *self._args),
                                 name="marginopt-batch-account", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1

    def _stop(self, kill: bool) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return None
        if kill and proc.is_alive():
            proc.kill()
        elif not kill and conn is not None:
            try:
                conn.send(None)
            except OSError:
                pass
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()
        return proc.exitcode

    def close(self) -> None:
        self._stop(kill=False)

    def __enter__(self) -> "IsolatedRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop(kill=exc[0] is not None)

    # ------------------------------------------------------------------ one account
    def run(self, task: Task) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self._stop(kill=True)
            self._start()
        assert self._conn is not None
        try:
            self._conn.send(task)
            if self._conn.poll(self.time_limit_s):
                return self._conn.recv()
        except (EOFError, OSError):
            pass                                        # the child is gone: see below
        else:                                           # still running past its time limit
            self._stop(kill=True)
            limit = f"{self.time_limit_s:g}"
            return failure_record(
                task, f"{task.source}: the optimisation did not finish within the job's "
                      f"account_time_limit_s of {limit} s and was stopped; the other accounts "
                      "were not affected and the next run tries this one again",
                "AccountTimedOut", time.perf_counter() - t0)
        code = self._stop(kill=True)
        how = (f"was killed by {_signal_name(code)}" if code is not None and code < 0 else
               f"exited with code {code}" if code is not None else "stopped")
        return failure_record(
            task, f"{task.source}: the process optimising this account {how} (a crash inside a "
                  "solver or a native library, or out of memory); the other accounts were not "
                  "affected and the next run tries this one again",
            "AccountCrashed", time.perf_counter() - t0)
