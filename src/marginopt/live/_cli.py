"""``marginopt fetch | reconcile | watch``: registered on the main app by ``register``."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from ..errors import InputError

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_every(text: str) -> float:
    """``10s``, ``500ms``, ``2m``, ``1h`` or a number of seconds."""
    m = _EVERY.match(text or "")
    if not m:
        raise InputError(f"not a duration: {text!r} (e.g. 10s, 500ms, 2m)", field="every", value=text)
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    if value <= 0:
        raise InputError("the interval must be positive", field="every", value=text)
    return value


def _currencies(text: str) -> list[str]:
    out = [c.strip().upper() for c in text.split(",") if c.strip()]
    if not out:
        raise InputError("no currency given (e.g. BTC,ETH)", field="currency", value=text)
    return out


def _retry(timeout: float, retries: int):
    from ._retry import RetryPolicy
    try:
        return RetryPolicy(attempts=retries + 1, timeout_s=timeout)
    except ValueError as exc:
        raise InputError(str(exc), field="timeout/retries") from None


def _client(venue: str, testnet: bool, url: Optional[str], credentials: Optional[Path],
            timeout: float, retries: int, account: bool = True):
    if venue not in ("deribit", "derive"):
        raise InputError(f"venue {venue!r} cannot be fetched (deribit and derive can)",
                         field="venue", value=venue)
    from ._credentials import load_credentials
    creds = load_credentials(venue, credentials) if account else None
    if venue == "derive":
        from ._derive import DeriveClient
        return DeriveClient(creds, testnet=testnet, url=url, retry=_retry(timeout, retries))
    from ._deribit import DeribitClient
    return DeribitClient(creds, testnet=testnet, url=url, retry=_retry(timeout, retries))


def _collateral_params(path: Optional[Path]) -> Optional[dict]:
    """``--collateral-params FILE``: a JSON object ``{asset: {IMHaircut, MMHaircut,
    IsRiskCancelling}}`` for a Derive subaccount's non-USDC collaterals."""
    if path is None:
        return None
    import json
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the collateral parameters ({type(exc).__name__})",
                         source=str(path), field="collateral_params") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError("expected a JSON object of {asset: {IMHaircut, MMHaircut, "
                         "IsRiskCancelling}}", source=str(path), field="collateral_params")
    return data


@contextlib.contextmanager
def live_inputs(venue: str, testnet: bool, url: Optional[str], credentials: Optional[Path],
                currency: str, timeout: float, retries: int, keep: Optional[Path] = None
                ) -> Iterator[tuple[Any, Any]]:
    """``--live`` for the commands that take a book and a market: fetch a snapshot (into
    ``keep``, or a temporary folder removed after) and give its (book, market)."""
    from ._snapshot import fetch as fetch_snapshot
    client = _client(venue, testnet, url, credentials, timeout, retries)
    with tempfile.TemporaryDirectory(prefix="marginopt-live-") as tmp:
        snap = fetch_snapshot(keep or tmp, _currencies(currency), venue=venue, client=client)
        yield snap.portfolio(), snap.market


def _log_to_stderr(formatter: logging.Formatter) -> logging.Handler:
    logger = logging.getLogger("marginopt.live")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _fmt(x: Optional[float]) -> str:
    """Account-currency amounts: 8 decimals (a satoshi), thousands separated."""
    if x is None:
        return "n/a"
    return f"{0.0 if abs(x) < 5e-9 else x:,.8f}"  # no "-0.00000000"


def _zero(x: float, below: float) -> float:
    return 0.0 if abs(x) < below else x


def print_reconciliation(r) -> None:
    typer.echo(f"Reconciliation of {r.snapshot} ({r.venue}): account margin model {r.margin_model}"
               f"{' (cross collateral)' if r.cross_collateral else ''}, marginopt model {r.model}")
    typer.echo(f"  {'currency':<8} {'figure':<40} {'marginopt':>16} {'exchange':>16} "
               f"{'difference':>16} {'USD':>14} {'%':>8}  source")
    for l in r.lines:
        ours = _fmt(l.marginopt) if l.modelled else "not modelled"
        usd = "" if l.difference_usd is None else f"{_zero(l.difference_usd, 0.005):,.2f}"
        pct = "" if l.difference_pct is None else f"{_zero(l.difference_pct, 0.005):+.2f}%"
        typer.echo(f"  {l.currency:<8} {l.figure:<40} {ours:>16} {_fmt(l.exchange):>16} "
                   f"{_fmt(l.difference) if l.difference is not None else '':>16} {usd:>14} "
                   f"{pct:>8}  {l.source}")
    pct = "" if r.difference_pct is None else f" ({r.difference_pct:+.2f}%)"
    typer.echo(f"Initial margin: marginopt {r.initial_margin_usd:,.2f} USD, exchange "
               f"{r.exchange_initial_margin_usd:,.2f} USD, difference {r.difference_usd:+,.2f} USD{pct}")
    typer.echo(f"Maintenance margin: marginopt {r.maintenance_margin_usd:,.2f} USD, exchange "
               f"{r.exchange_maintenance_margin_usd:,.2f} USD")
    for n in r.not_modelled:
        typer.echo(f"Not modelled: {n}")
    for n in r.notes:
        typer.echo(f"Note: {n}")


def register(app: typer.Typer, guarded: Callable[..., Any], debug_help: str,
             formatter: Callable[[], logging.Formatter]) -> None:
    """Add the live commands to ``app`` (``guarded`` maps marginopt's errors to exit codes)."""

    @app.command(short_help="Fetch an exchange's market and account into a snapshot folder.")
    @guarded
    def fetch(
        venue: str = typer.Option("deribit", "--venue", help="exchange: deribit or derive"),
        testnet: bool = typer.Option(False, "--testnet", help="the exchange's test environment"),
        url: Optional[str] = typer.Option(None, "--url", help="the exchange's address (e.g. a local server)"),
        currency: str = typer.Option("BTC,ETH", "--currency", help="currencies, comma separated"),
        out: Path = typer.Option(..., "--out", help="folder receiving the snapshot folder"),
        credentials: Optional[Path] = typer.Option(None, "--credentials",
                                                   help="file with client_id and client_secret "
                                                        "(Derive: wallet, session_key, "
                                                        "subaccount_id), mode 600; default: "
                                                        "DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET "
                                                        "(DERIVE_WALLET, DERIVE_SESSION_KEY, "
                                                        "DERIVE_SUBACCOUNT_ID)"),
        market_only: bool = typer.Option(False, "--market-only", help="public data only, no account"),
        timeout: float = typer.Option(10.0, "--timeout", help="seconds per request"),
        retries: int = typer.Option(3, "--retries", help="retries per request after a failure"),
        as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
        debug: bool = typer.Option(False, "--debug", help=debug_help),
    ) -> None:
        """Fetch the market (index prices, every listed option, future and perpetual) and the
        account (positions, open orders, account summary, pme/simulate) into a new snapshot
        folder in --out, atomically."""
        import json

        from ._snapshot import fetch as run
        client = _client(venue, testnet, url, credentials, timeout, retries, not market_only)
        snap = run(out, _currencies(currency), venue=venue, account=not market_only, client=client)
        if as_json:
            typer.echo(json.dumps({"path": str(snap.path), **snap.manifest}, indent=1))
            return
        n_inst = len(snap.market.rows)
        what = f"{n_inst} instruments"
        if snap.has_account:
            what += (f", {len(snap.portfolio())} positions, {len(snap.open_orders)} open orders, "
                     f"account summaries for {', '.join(snap.account_summaries)}"
                     + (f", pme/simulate for {', '.join(snap.pme)}" if snap.pme else ""))
        typer.echo(f"Wrote {snap.path} ({what})")
        for w in snap.market.warnings:
            typer.echo(f"warning: {w}", err=True)

    @app.command(short_help="Compare marginopt's margin of a fetched account with the exchange's.")
    @guarded
    def reconcile(
        snapshot: Optional[Path] = typer.Argument(None, help="snapshot folder written by fetch"),
        live: bool = typer.Option(False, "--live", help="fetch a snapshot first (with --venue)"),
        venue: str = typer.Option("deribit", "--venue", help="exchange for --live: deribit or derive"),
        testnet: bool = typer.Option(False, "--testnet", help="the exchange's test environment"),
        url: Optional[str] = typer.Option(None, "--url", help="the exchange's address"),
        currency: str = typer.Option("BTC,ETH", "--currency", help="currencies for --live"),
        credentials: Optional[Path] = typer.Option(None, "--credentials", help="credentials file (mode 600)"),
        out: Optional[Path] = typer.Option(None, "--out", help="keep the --live snapshot in this folder"),
        model: Optional[str] = typer.Option(None, "--model",
                                            help="margin model (default: from the account's margin_model)"),
        collateral_params: Optional[Path] = typer.Option(
            None, "--collateral-params", help="Derive: JSON {asset: {IMHaircut, MMHaircut, "
                                              "IsRiskCancelling}} for non-USDC collaterals"),
        timeout: float = typer.Option(10.0, "--timeout", help="seconds per request"),
        retries: int = typer.Option(3, "--retries", help="retries per request after a failure"),
        as_json: bool = typer.Option(False, "--json", help="print the reconciliation as JSON"),
        debug: bool = typer.Option(False, "--debug", help=debug_help),
    ) -> None:
        """marginopt's initial and maintenance margin of the account against the exchange's own
        figures, component by component where the exchange reports them, in the account
        currency, USD and percent; and what marginopt does not model."""
        from ._reconcile import reconcile as run
        from ._snapshot import fetch as fetch_snapshot
        if live == (snapshot is not None):
            raise InputError("give a snapshot folder, or --live (with --venue) to fetch one",
                             field="snapshot")
        params = _collateral_params(collateral_params)
        if live:
            client = _client(venue, testnet, url, credentials, timeout, retries)
            with tempfile.TemporaryDirectory(prefix="marginopt-reconcile-") as tmp:
                snap = fetch_snapshot(out or tmp, _currencies(currency), venue=venue, client=client)
                result = run(snap, model=model, collateral_params=params)
        else:
            result = run(snapshot, model=model, collateral_params=params)
        if as_json:
            typer.echo(result.to_json(indent=1))
        else:
            print_reconciliation(result)

    @app.command(short_help="Re-optimise on every new snapshot; propose when the trades change.")
    @guarded
    def watch(
        folder: Optional[Path] = typer.Option(None, "--folder", help="watch a folder where snapshots arrive"),
        venue: Optional[str] = typer.Option(None, "--venue", help="fetch from this exchange: deribit or derive"),
        testnet: bool = typer.Option(False, "--testnet", help="the exchange's test environment"),
        url: Optional[str] = typer.Option(None, "--url", help="the exchange's address"),
        currency: str = typer.Option("BTC,ETH", "--currency", help="currencies, comma separated"),
        credentials: Optional[Path] = typer.Option(None, "--credentials", help="credentials file (mode 600)"),
        every: str = typer.Option("10s", "--every", help="interval: fetch (venue) or poll (folder)"),
        cycles: Optional[int] = typer.Option(None, "--cycles", min=1, help="stop after N cycles"),
        spec: Optional[Path] = typer.Option(None, "--spec", "-s", help="rebalance spec YAML"),
        model: Optional[str] = typer.Option(None, "--model",
                                            help="margin model (default: the account's; deribit-pm "
                                                 "for a market-only watch)"),
        portfolio: Optional[Path] = typer.Option(None, "--portfolio", "-p",
                                                 help="a book file instead of the account's positions"),
        min_saving_usd: Optional[float] = typer.Option(None, "--min-saving-usd", min=0,
                                                       help="propose only savings above this, net "
                                                            "of cost (default: the spec's)"),
        solver: Optional[str] = typer.Option(None, "--solver", help="solver tried first"),
        out: Optional[Path] = typer.Option(None, "--out", help="folder for proposal-<snapshot>.json files"),
        snapshots: Optional[Path] = typer.Option(None, "--snapshots",
                                                 help="keep each fetched snapshot in this folder"),
        timeout: float = typer.Option(10.0, "--timeout", help="seconds per request"),
        retries: int = typer.Option(3, "--retries", help="retries per request after a failure"),
        debug: bool = typer.Option(False, "--debug", help=debug_help),
    ) -> None:
        """One warm optimiser over a stream of snapshots: each new snapshot is re-optimised and a
        proposal is printed as one JSON line (and written to --out) when it saves at least
        --min-saving-usd and its trades differ from the last one. Cycle latencies go to stderr.
        Stops on SIGINT or SIGTERM, or after --cycles."""
        from ..portfolio import load_portfolio
        from ._watch import Watcher, exchange_source, folder_source
        if (folder is None) == (venue is None):
            raise InputError("give --folder DIR or --venue deribit", field="folder")
        every_s = parse_every(every)
        book = load_portfolio(portfolio) if portfolio is not None else None
        stop = threading.Event()
        watcher = Watcher(model or "deribit-pm", spec, out=out, min_saving_usd=min_saving_usd,
                          solver=solver, emit=lambda line: typer.echo(line))
        if folder is not None:
            if not folder.is_dir():
                raise InputError("no such folder", source=str(folder), field="folder")
            source = folder_source(folder, every_s=every_s, stop=stop, portfolio=book, model=model)
        else:
            client = _client(venue, testnet, url, credentials, timeout, retries, account=book is None)
            source = exchange_source(client, _currencies(currency), every_s=every_s, stop=stop,
                                     portfolio=book, model=model, snapshots=snapshots)
        handler = _log_to_stderr(formatter())
        previous = {}

        def _announce_stop(signum: int) -> None:
            logging.getLogger("marginopt.live").info("stopping (signal %d)", signum)
            stop.set()

        def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
            # a handler runs on the main thread between two bytecodes, possibly inside
            # ``stop.wait`` holding the event's (non-reentrant) lock, or inside a log write:
            # setting the event or logging from here can deadlock. Another thread does both.
            threading.Thread(target=_announce_stop, args=(signum,), daemon=True).start()

        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, _stop)
        try:
            reports = watcher.run(source, cycles=cycles, stop=stop)
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            logging.getLogger("marginopt.live").removeHandler(handler)
        emitted = sum(r.emitted for r in reports)
        typer.echo(f"watch: {len(reports)} cycles, {emitted} proposals", err=True)
