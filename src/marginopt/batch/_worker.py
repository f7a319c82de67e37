"""What runs on a worker (or in-process): optimise a chunk of accounts and return their files.

Inputs travel as bytes (portfolio files, the market snapshot), so a worker needs no access to the
job's folders and what is computed is exactly what was hashed. Per worker process, parsed markets
and ``Rebalancer`` objects are cached by content key: accounts that share the model and the
effective spec reuse one Rebalancer and its compiled problems.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


from ..errors import MarginoptError
from ..margins import MarginModel
from ..market import MarketSnapshot
from ..rebalance import RebalanceSpec, Rebalancer
from ..portfolio import Portfolio

_CACHE_SIZE = 16
_MARKETS: "OrderedDict[str, MarketSnapshot]" = OrderedDict()
_REBALANCERS: "OrderedDict[tuple[str, str, str | None], Rebalancer]" = OrderedDict()
#: how many Rebalancers this process built (a test and benchmark counter)
STATS = {"rebalancers_built": 0, "accounts": 0}


@dataclass(frozen=True)
class Task:
    account: str
    portfolio: bytes
    source: str           # the portfolio file's path, for error messages and its format
    spec: RebalanceSpec
    spec_key: str         # the effective spec as JSON (part of the cache key and the hash)
    input_hash: str


@dataclass(frozen=True)
class MarketRef:
    key: str              # content hash of the snapshot bytes and options
    data: bytes
    source: str
    options: tuple[tuple[str, Any], ...] = ()


def book_from_bytes(data: bytes, source: str) -> Portfolio:
    """A portfolio file's bytes read as ``Portfolio.from_file`` reads the file."""
    return Portfolio.from_bytes(data, source)


def market_from_bytes(ref: MarketRef) -> MarketSnapshot:
    snap = _MARKETS.get(ref.key)
    if snap is None:
        snap = MarketSnapshot.from_bytes(ref.data, ref.source, **dict(ref.options))
        _MARKETS[ref.key] = snap
        while len(_MARKETS) > 4:
            _MARKETS.popitem(last=False)
    return snap


def rebalancer(model: MarginModel, model_key: str, spec: RebalanceSpec, spec_key: str,
               solver: str | None) -> Rebalancer:
    key = (model_key, spec_key, solver)
    reb = _REBALANCERS.get(key)
    if reb is None:
        reb = Rebalancer(model, spec, solver)
        _REBALANCERS[key] = reb
        STATS["rebalancers_built"] += 1
        while len(_REBALANCERS) > _CACHE_SIZE:
            _REBALANCERS.popitem(last=False)
    else:
        _REBALANCERS.move_to_end(key)
    return reb


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_account(task: Task, market: MarketRef, model: MarginModel, model_key: str,
                solver: str | None, reports: bool) -> dict[str, Any]:
    """Optimise one account. Returns ``{"record": summary fields, "files": {name: text}}``; an
    error in the account is caught and returned in the record, never raised."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"account": task.account, "input_hash": task.input_hash}
    files: dict[str, str] = {}
    try:
        snap = market_from_bytes(market)
        book = book_from_bytes(task.portfolio, task.source)
        reb = rebalancer(model, model_key, task.spec, task.spec_key, solver)
        proposal = reb.optimize(book, snap)
        files["proposal.json"] = proposal.to_json(indent=1)
        files["proposal.md"] = proposal.to_markdown()
        seconds = time.perf_counter() - t0
        if reports:
            from ..reports import render_html
            files["report.html"] = render_html(proposal, market=snap, title=f"Margin proposal: {task.account}")
        record.update(
            status=proposal.status,
            margin_before_usd=proposal.margin_before.initial_margin_usd,
            margin_after_usd=proposal.margin_after.initial_margin_usd,
            margin_saved_usd=proposal.margin_saved_usd, margin_saved_pct=proposal.margin_saved_pct,
            n_trades=len(proposal.trades), solve_seconds=seconds, error="", error_class="",
            final=True)
    except Exception as exc:  # noqa: BLE001 - one bad account never stops the others
        record.update(status="error", margin_before_usd=None, margin_after_usd=None,
                      margin_saved_usd=None, margin_saved_pct=None, n_trades=None,
                      solve_seconds=time.perf_counter() - t0, error=_one_line(exc),
                      error_class=type(exc).__name__,
                      # marginopt's own errors come from the inputs: the same inputs give the same
                      # error, so it is final; anything else is retried on the next run
                      final=isinstance(exc, MarginoptError))
    STATS["accounts"] += 1
    return {"record": record, "files": files}


#: this worker process's child (``_isolate.IsolatedRunner``) and what it was started with
_RUNNER: dict[str, Any] = {}


def run_chunk(tasks: list[Task], market: MarketRef, model: MarginModel, model_key: str,
              solver: str | None, reports: bool, time_limit_s: float | None = None) -> list[dict[str, Any]]:
    """A Dask task: several accounts, in order, on one worker (sharing its cached Rebalancers).

    With ``time_limit_s``, and where this worker may start child processes (its workers are not
    daemonic; a local cluster of ``run_batch`` is started so), each account runs in this worker's
    child exactly as in-process runs do: a native crash or an account past its time limit is that
    account's error, and the worker and the chunk's other accounts go on. The child lives as
    long as the worker, so it keeps its compiled problems between chunks."""
    import multiprocessing

    from ._isolate import IsolatedRunner, can_isolate

    if time_limit_s is None or multiprocessing.current_process().daemon or not can_isolate():
        return [run_account(t, market, model, model_key, solver, reports) for t in tasks]
    args = (id(market), id(model), model_key, solver, reports, float(time_limit_s))
    runner = _RUNNER.get("runner")
    if runner is None or _RUNNER.get("args") != args:
        if runner is not None:
            runner.close()
        runner = _RUNNER["runner"] = IsolatedRunner(market, model, model_key, solver, reports, time_limit_s)
        _RUNNER["args"] = args
    return [runner.run(t) for t in tasks]
