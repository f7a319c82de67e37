"""Watch: one warm ``Rebalancer`` re-optimising on every new snapshot, proposing only what is new.

A source yields snapshots (a folder where ``fetch`` drops them, or the exchange itself every
``every_s`` seconds). Each cycle re-optimises the book on the new market with the same
``Rebalancer`` (its solver models persist between calls, so a cycle re-solves rather than
rebuilds) and emits a proposal (a JSON line, and a file in ``out``) only when it is a trade set
(the Rebalancer already withholds one saving less than ``min_saving_usd`` net of cost) and its
trades, in whole exchange lots, differ from the last one emitted. Each cycle's latency (load and
optimise; fetching excluded) is logged. Exchange failures are logged and retried with back-off;
a stop request (SIGINT, SIGTERM: ``stop``) ends the loop between steps, and every file is written
to a temporary name and renamed, so nothing is ever half written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from ..errors import ExchangeAuthError, ExchangeError, InputError, OptimizationError
from ..market import MarketSnapshot
from ..portfolio import Portfolio, load_portfolio
from ..rebalance import Proposal, RebalanceSpec, Rebalancer, load_spec
from ..rebalance._proposal import Status
from ._snapshot import Snapshot, fetch_data, list_snapshots, load_snapshot, margin_model_of, write_snapshot

if TYPE_CHECKING:
    from ._deribit import DeribitClient

log = logging.getLogger("marginopt.live")


@dataclass(frozen=True)
class Tick:
    """One new market (and book) for the watcher; ``error`` instead when the source failed."""

    label: str
    market: MarketSnapshot | None = None
    book: Portfolio | None = None
    fetch_s: float | None = None
    model: str | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did. ``latency_s``: load and optimise, fetching excluded."""

    cycle: int
    label: str
    latency_s: float | None
    fetch_s: float | None
    status: str | None
    saved_usd: float | None
    emitted: bool
    why: str
    proposal_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Watcher:
    """A warm ``Rebalancer`` and the last proposal emitted.

    ``emit`` receives each emitted proposal as one JSON line (the CLI prints it on stdout);
    ``out`` (optional) receives each as ``proposal-<snapshot>.json``."""

    def __init__(self, model: str = "deribit-pm", spec: RebalanceSpec | str | Path | Mapping[str, Any] | None = None,
                 *, out: str | Path | None = None, min_saving_usd: float | None = None,
                 solver: str | None = None, emit: Callable[[str], None] | None = None) -> None:
        s = load_spec(spec)
        if min_saving_usd is not None:
            s = s.model_copy(update={"min_saving_usd": float(min_saving_usd)})
        self.spec = s
        self.solver = solver
        self.rebalancer = Rebalancer(model, s, solver)
        self.out = Path(out) if out is not None else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.emit = emit or (lambda line: None)
        self.cycles = 0
        self.last_key: tuple | None = None
        self.last_proposal: Proposal | None = None

    # ------------------------------------------------------------------ one cycle
    def trade_key(self, proposal: Proposal) -> tuple:
        """The trades in whole exchange lots (a move of a fraction of a lot is the same trade)."""
        venue = self.rebalancer.model.trading_venue
        key = []
        for t in proposal.trades:
            try:
                lot = float(venue.lot_size(_instrument(t.instrument_name)))
            except (InputError, KeyError, ValueError):
                lot = 0.0
            units = round(t.quantity / lot) if lot > 0 else round(t.quantity, 9)
            if units:
                key.append((t.instrument_name, units))
        return tuple(sorted(key))

    def step(self, tick: Tick) -> CycleReport:
        self.cycles += 1
        n = self.cycles
        if tick.error is not None:
            return CycleReport(n, tick.label, None, tick.fetch_s, None, None, False,
                               f"source failed: {tick.error}")
        if tick.model and tick.model != self.rebalancer.model.name:
            # the account's margin model changed (or was first seen): a new warm start
            self.rebalancer = Rebalancer(tick.model, self.spec, self.solver)
            self.last_key = None
        t0 = time.perf_counter()
        try:
            proposal = self.rebalancer.optimize(tick.book, tick.market)
        except (InputError, OptimizationError) as exc:
            latency = time.perf_counter() - t0
            return CycleReport(n, tick.label, latency, tick.fetch_s, None, None, False,
                               f"not optimised: {exc}")
        latency = time.perf_counter() - t0
        saved = proposal.margin_saved_usd
        if proposal.status is Status.NO_TRADE:
            return CycleReport(n, tick.label, latency, tick.fetch_s, str(proposal.status), saved,
                               False, f"no trade: {proposal.reason}")
        key = self.trade_key(proposal)
        if key == self.last_key:
            return CycleReport(n, tick.label, latency, tick.fetch_s, str(proposal.status), saved,
                               False, "same trades as the last proposal (in whole lots)")
        path = None
        if self.out is not None:
            path = self.out / f"proposal-{tick.label}.json"
            doc = {"watch": {"cycle": n, "snapshot": tick.label, "time": _now(),
                             "latency_s": latency}, **proposal.to_dict()}
            _write_atomic(path, json.dumps(doc, indent=1, default=str) + "\n")
        self.last_key = key
        self.last_proposal = proposal
        line = {"cycle": n, "time": _now(), "snapshot": tick.label, "status": str(proposal.status),
                "margin_before_usd": proposal.margin_before.initial_margin_usd,
                "margin_after_usd": proposal.margin_after.initial_margin_usd,
                "saved_usd": saved, "cost_usd": proposal.cost_usd, "latency_s": latency,
                "trades": [{"instrument": t.instrument_name, "side": t.side, "quantity": t.quantity}
                           for t in proposal.trades],
                "file": str(path) if path else None}
        self.emit(json.dumps(line))
        return CycleReport(n, tick.label, latency, tick.fetch_s, str(proposal.status), saved, True,
                           "emitted", str(path) if path else None)

    # ------------------------------------------------------------------ the loop
    def run(self, source: Iterator[Tick], *, cycles: int | None = None,
            stop: threading.Event | None = None) -> list[CycleReport]:
        """Step through ``source`` until it ends, ``cycles`` have run, or ``stop`` is set."""
        stop = stop or threading.Event()
        reports = []
        for tick in source:
            if stop.is_set():
                break
            r = self.step(tick)
            reports.append(r)
            _log_cycle(r)
            if cycles is not None and len(reports) >= cycles:
                break
            if stop.is_set():
                break
        return reports


def _instrument(name: str):
    from ..instruments import parse_instrument
    return parse_instrument(name)


def _log_cycle(r: CycleReport) -> None:
    timing = (f"latency {r.latency_s:.3f} s" if r.latency_s is not None else "no latency") + \
        (f", fetch {r.fetch_s:.3f} s" if r.fetch_s is not None else "")
    saved = f", saves {r.saved_usd:,.2f} USD" if r.saved_usd is not None else ""
    level = logging.WARNING if r.status is None else logging.INFO
    log.log(level, "cycle %d %s: %s%s%s; %s", r.cycle, r.label, timing,
            f", {r.status}" if r.status else "", saved, r.why)


# ---------------------------------------------------------------------------- sources
def folder_source(folder: str | Path, *, every_s: float, stop: threading.Event,
                  portfolio: Portfolio | None = None, model: str | None = None) -> Iterator[Tick]:
    """Snapshots arriving in ``folder``: the newest already there, then each new one in time
    order, polled every ``every_s`` seconds. A snapshot that cannot be read is a failed tick."""
    seen: set[str] = set()
    existing = list_snapshots(folder)
    for p in existing[:-1]:
        seen.add(p.name)
    while not stop.is_set():
        fresh = [p for p in list_snapshots(folder) if p.name not in seen]
        for p in fresh:
            seen.add(p.name)
            yield _tick_from_snapshot(p, portfolio, model)
            if stop.is_set():
                return
        if not fresh:
            stop.wait(every_s)


def _tick_from_snapshot(path: Path, portfolio: Portfolio | None, model: str | None) -> Tick:
    try:
        snap = load_snapshot(path)
        market = snap.market
        book = portfolio if portfolio is not None else snap.portfolio()
        chosen = model or _model_of(snap)
    except InputError as exc:
        return Tick(path.name, error=exc)
    return Tick(path.name, market, book, model=chosen)


def _model_of(snap: Snapshot) -> str | None:
    if not snap.has_account or not snap.account_summaries:
        return None
    return margin_model_of(next(iter(snap.account_summaries.values())))


def exchange_source(client: DeribitClient, currencies: Sequence[str], *, every_s: float,
                    stop: threading.Event, portfolio: Portfolio | None = None,
                    model: str | None = None, snapshots: str | Path | None = None,
                    max_backoff_s: float = 300.0) -> Iterator[Tick]:
    """The exchange every ``every_s`` seconds (the account too, unless ``portfolio`` is given).
    A failed fetch is a failed tick, and the next try waits twice as long (up to
    ``max_backoff_s``); refused credentials end the watch (retrying cannot fix them).
    ``snapshots``: a folder to keep each fetch in, as ``fetch`` writes it."""
    failures = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        label = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            data = fetch_data(client, currencies, account=portfolio is None)
            fetch_s = time.perf_counter() - t0
            if snapshots is not None:
                label = write_snapshot(data, snapshots, venue=client.venue, currencies=currencies,
                                       testnet=client.testnet, calls=client.calls,
                                       base_url=client.base_url).name
            market = MarketSnapshot.from_dict(data["market"], source=f"{client.venue} {label}")
            if portfolio is not None:
                book, chosen = portfolio, model
            else:
                held = [r for r in data["positions"]["positions"] if _nonzero(r)]
                book = load_portfolio({"positions": held}) if held else Portfolio({})
                summaries = data["account_summary"]["summaries"]
                chosen = model or margin_model_of(next(iter(summaries.values())))
            tick = Tick(label, market, book, fetch_s=fetch_s, model=chosen)
            failures = 0
            wait = every_s
        except ExchangeAuthError:
            raise  # refused credentials: retrying cannot fix them
        except (ExchangeError, InputError) as exc:
            failures += 1
            wait = min(max_backoff_s, every_s * 2.0 ** failures)
            tick = Tick(label, fetch_s=time.perf_counter() - t0, error=exc)
            log.warning("fetch failed; next try in %.2f s (%d failure%s in a row)", wait, failures,
                        "s" if failures > 1 else "")
        yield tick
        stop.wait(wait)


def _nonzero(row: Mapping[str, Any]) -> bool:
    for k in ("size_currency", "size"):
        v = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v != 0 and math.isfinite(v)
    return False
