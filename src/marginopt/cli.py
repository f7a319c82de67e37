"""Command line: ``marginopt demo | margin | optimize | batch | models | fetch | reconcile | watch |
explain | whatif | compare``.

Exit codes: 0 success, 2 bad input, 3 infeasible, 4 solver failure, 1 anything else. Errors go to
stderr as one sentence naming the file, row and field; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from functools import wraps
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer

from .errors import InputError, MarginoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Cut the margin a crypto-derivatives book posts, inside the desk's limits.")

_state = {"debug": False}
_DEBUG_HELP = "show the traceback of an error (also accepted before the command)"


def _version(value: bool) -> None:
    if value:
        from . import __version__
        typer.echo(f"marginopt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print marginopt's version and exit")) -> None:
    _state["debug"] = debug


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map marginopt's errors to exit codes and one clear line on stderr. Every command takes
    ``--debug`` too (after its name), as the top level does."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("debug"):
            _state["debug"] = True
        try:
            return fn(*args, **kwargs)
        except MarginoptError as exc:
            if _state["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: exit 1, say what
            if _state["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1) from None

    return run


def _check_solver(solver: Optional[str]) -> None:
    """A misspelt --solver is bad input (exit 2), named with the installed solvers."""
    from .errors import SpecError
    from .rebalance._spec import check_solver
    try:
        check_solver(solver)
    except ValueError as exc:
        raise SpecError(str(exc), source="--solver", value=solver) from None


def _check_out(out: Optional[Path]) -> None:
    """Refuse an --out folder that cannot be written before anything is computed."""
    if out is None:
        return
    import os

    from .errors import OutputError
    if out.exists() and not out.is_dir():
        raise OutputError("--out names a file, not a folder: give a folder for the proposal and "
                          "its report", source=str(out), field="out")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create the folder: {parent} is a file", source=str(out),
                          field="out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write here: no permission to write in {parent}",
                          source=str(out), field="out")


def _write(proposal, out: Path, market, as_json: bool) -> None:
    """Write the proposal's files; the proposal is shown first, so a failed write loses nothing,
    and "Wrote ..." is said only when every file was written (not with --json: the output is
    then the JSON document alone)."""
    from .reports import write_proposal
    if as_json:
        typer.echo(proposal.to_json(indent=1))
    else:
        _print_proposal(proposal)
    paths = write_proposal(proposal, out, market=market)
    if not as_json:
        names = ", ".join(p.name for p in paths.values())
        typer.echo(f"Wrote the proposal and its report to {out}/ ({names})")


def sample_paths() -> dict[str, Path]:
    """The embedded sample book, market snapshot and spec."""
    base = Path(str(resources.files("marginopt") / "data"))
    return {"portfolio": base / "sample_portfolio.csv", "market": base / "sample_market.json",
            "spec": base / "sample_spec.yaml"}


def _load_market(path: Path):
    """The snapshot, with each implausible-but-possible finding printed as a warning on stderr."""
    from .market import load_market
    snap = load_market(path)
    for w in snap.warnings:
        typer.echo(f"warning: {w}", err=True)
    return snap


def _load_model(model: str, scenarios: Optional[Path], covariance: Optional[Path]):
    from .margins import load_model
    return load_model(model, scenario_matrix=scenarios, covariance=covariance)


def _print_margin(result) -> None:
    typer.echo(f"Model {result.model}: initial margin {result.initial_margin_usd:,.2f} USD, "
               f"maintenance margin {result.maintenance_margin_usd:,.2f} USD")
    for pool, m in result.by_underlying.items():
        parts = ", ".join(f"{k} {v:,.6g}" for k, v in m.components.items())
        worst = f"; worst scenario {m.worst_scenario}" if m.worst_scenario else ""
        typer.echo(f"  {pool:<10} IM {m.initial_margin:,.6g} {m.currency} "
                   f"(= {m.initial_margin * m.usd_rate:,.2f} USD), MM {m.maintenance_margin:,.6g} "
                   f"{m.currency}: {parts}{worst}")


def _print_proposal(p) -> None:
    from ._format import (limit_decimals, limit_unit, num, price_decimals, price_unit,
                          status_words)
    b, a = p.margin_before.initial_margin_usd, p.margin_after.initial_margin_usd
    typer.echo(f"Status: {p.status} ({status_words(p.status)}). {p.reason}")
    typer.echo(f"Initial margin before {num(b)} USD, after {num(a)} USD, saved "
               f"{num(p.margin_saved_usd)} USD ({p.margin_saved_pct:.2f}%); estimated cost "
               f"{num(p.cost_usd)} USD")
    if p.trades:
        typer.echo(f"Trades ({len(p.trades)}; quantities in coin):")
        for t in p.trades:
            unit = price_unit(t.instrument_name)
            typer.echo(f"  {t.side:<4} {num(abs(t.quantity), 6):>14}  {t.instrument_name:<24} at "
                       f"{num(t.price, price_decimals(unit))} {unit}  cost {num(t.cost)} USD")
    typer.echo("Limits:")
    for l in p.limits:
        k = limit_decimals(l.name)
        lo = "-inf" if l.lower is None else num(l.lower, k)
        hi = "+inf" if l.upper is None else num(l.upper, k)
        flag = f" binding, shadow price {num(l.shadow_price)} USD per unit" if l.binding else ""
        typer.echo(f"  {l.name:<24} [{lo}, {hi}] {limit_unit(l.name)}  before {num(l.before, k)}  "
                   f"after {num(l.after, k)}{flag}{' (was breached)' if l.breached_before else ''}")
    for x in p.bounds:
        if x.binding:
            typer.echo(f"  trade bound {x.name} binds: {num(x.value, 6 if x.name != 'turnover_usd' else 2)} "
                       f"of {num(x.bound, 6 if x.name != 'turnover_usd' else 2)}"
                       + (f", shadow price {num(x.shadow_price, 4)} USD per unit" if x.shadow_price else ""))
    for n in p.notes:
        typer.echo(f"Note: {n}")


_LIVE_HELP = "fetch the book and market from the exchange first (instead of -p/-m; see 'marginopt fetch')"


@contextlib.contextmanager
def _inputs(portfolio: Optional[Path], market: Optional[Path], live: bool, venue: str, testnet: bool,
            url: Optional[str], credentials: Optional[Path], currency: str) -> Iterator[tuple[Any, Any]]:
    """The (book, market) of a command: from -p/-m files, or fetched with --live."""
    if live:
        if portfolio is not None or market is not None:
            raise InputError("give --portfolio/--market files, or --live to fetch them, not both",
                             field="live")
        from .live._cli import live_inputs
        with live_inputs(venue, testnet, url, credentials, currency, timeout=10.0, retries=3) as got:
            yield got
        return
    for value, flag in ((portfolio, "--portfolio"), (market, "--market")):
        if value is None:
            raise InputError(f"missing option {flag} (or --live to fetch the book and market)",
                             field=flag.lstrip("-"))
    yield portfolio, _load_market(market)


@app.command(short_help="Margin of a book under an exchange's published method.")
@_guarded
def margin(
    portfolio: Optional[Path] = typer.Option(None, "--portfolio", "-p", help="CSV or JSON book"),
    market: Optional[Path] = typer.Option(None, "--market", "-m", help="market snapshot JSON"),
    model: str = typer.Option("deribit-pm", "--model", help="model name or YAML path"),
    scenarios: Optional[Path] = typer.Option(None, help="scenario P&L matrix for scenario-max/-es"),
    covariance: Optional[Path] = typer.Option(None, help="covariance (CSV/.npy) for covariance-var"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    live: bool = typer.Option(False, "--live", help=_LIVE_HELP),
    venue: str = typer.Option("deribit", "--venue", help="exchange for --live: deribit"),
    testnet: bool = typer.Option(False, "--testnet", help="--live: the exchange's test environment"),
    url: Optional[str] = typer.Option(None, "--url", help="--live: the exchange's address"),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help="--live: credentials file (mode 600)"),
    currency: str = typer.Option("BTC,ETH", "--currency", help="--live: currencies to fetch"),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Margin of a book as the exchange's published method computes it."""
    from .margins import margin as compute
    with _inputs(portfolio, market, live, venue, testnet, url, credentials, currency) as (book, snap):
        result = compute(book, snap, _load_model(model, scenarios, covariance))
    if as_json:
        typer.echo(result.to_json(indent=1))
    else:
        _print_margin(result)


@app.command(short_help="Propose the trades that minimise margin within the limits.")
@_guarded
def optimize(
    portfolio: Optional[Path] = typer.Option(None, "--portfolio", "-p",
                                             help="the book: CSV or JSON of positions in coin"),
    market: Optional[Path] = typer.Option(None, "--market", "-m", help="market snapshot JSON"),
    model: str = typer.Option("deribit-pm", "--model",
                              help="margin model: a name from 'marginopt models' or a YAML path"),
    spec: Optional[Path] = typer.Option(None, "--spec", "-s",
                                        help="rebalance spec YAML (limits, universe, trade "
                                             "bounds, lots, objective); default: no limits"),
    solver: Optional[str] = typer.Option(None, "--solver",
                                         help="solver tried first (HIGHS, CLARABEL, SCIP, ...); "
                                              "default: a chain per problem class"),
    scenarios: Optional[Path] = typer.Option(None, "--scenarios",
                                             help="scenario P&L matrix for scenario-max/-es"),
    covariance: Optional[Path] = typer.Option(None, "--covariance",
                                              help="covariance (CSV/.npy) for covariance-var"),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="folder to write proposal.json, proposal.md, "
                                            "report.html and the charts to"),
    as_json: bool = typer.Option(False, "--json", help="print the proposal as JSON"),
    live: bool = typer.Option(False, "--live", help=_LIVE_HELP),
    venue: str = typer.Option("deribit", "--venue", help="exchange for --live: deribit"),
    testnet: bool = typer.Option(False, "--testnet", help="--live: the exchange's test environment"),
    url: Optional[str] = typer.Option(None, "--url", help="--live: the exchange's address"),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help="--live: credentials file (mode 600)"),
    currency: str = typer.Option("BTC,ETH", "--currency", help="--live: currencies to fetch"),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Propose the trades that minimise margin within the spec's limits."""
    from .rebalance import optimize as run
    _check_solver(solver)
    _check_out(out)
    with _inputs(portfolio, market, live, venue, testnet, url, credentials, currency) as (book, snap):
        proposal = run(book, snap, _load_model(model, scenarios, covariance), spec, solver)
    if out is not None:
        _write(proposal, out, snap, as_json)
    elif as_json:
        typer.echo(proposal.to_json(indent=1))
    else:
        _print_proposal(proposal)


@app.command(short_help="Optimise the embedded sample book (Deribit PM).")
@_guarded
def demo(as_json: bool = typer.Option(False, "--json", help="print the proposal as JSON"),
         out: Optional[Path] = typer.Option(None, "--out",
                                            help="folder to write proposal.json, proposal.md, "
                                                 "report.html and the charts to"),
         debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """Optimise the embedded sample BTC + ETH book under Deribit portfolio margin."""
    from .rebalance import optimize as run
    _check_out(out)
    paths = sample_paths()
    proposal = run(paths["portfolio"], paths["market"], "deribit-pm", paths["spec"])
    if not as_json:
        from .portfolio import load_portfolio
        typer.echo(f"marginopt demo: {len(load_portfolio(paths['portfolio']))} positions "
                   f"(sample data in {paths['portfolio'].parent}), model deribit-pm")
    if out is not None:
        _write(proposal, out, paths["market"], as_json)
    elif as_json:
        typer.echo(proposal.to_json(indent=1))
    else:
        _print_proposal(proposal)


class _UTCFormatter(__import__("logging").Formatter):
    """Log lines stamped with the UTC date and time (cron logs span days and machines)."""

    converter = __import__("time").gmtime


@app.command(short_help="Optimise every account of a job file, resumably.")
@_guarded
def batch(
    job: Path = typer.Argument(..., help="batch job YAML"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w",
                                          help="start a local Dask cluster of N worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="address of a running Dask scheduler"),
    max_accounts: Optional[int] = typer.Option(None, "--max-accounts", min=1,
                                               help="compute at most N accounts now, the rest next run"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 if any account failed"),
    as_json: bool = typer.Option(False, "--json", help="print the run's summary as JSON"),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Optimise every account of a job file; re-runs skip the accounts already done."""
    import logging

    from .batch import run_batch
    logger = logging.getLogger("marginopt.batch")
    handler = None
    if not sys.stderr.isatty():  # no progress bar: plain log lines on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_UTCFormatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        result = run_batch(job, workers=workers, scheduler=scheduler, max_accounts=max_accounts)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
    info = result.to_dict()
    if as_json:
        typer.echo(json.dumps(info, indent=1))
    else:
        typer.echo(f"Batch of {info['accounts']} accounts ({info['workers']}): {info['computed']} "
                   f"computed, {info['skipped']} up to date, {info['pending']} pending, "
                   f"{info['errors']} in error; margin saved {info['margin_saved_usd']:,.2f} USD "
                   f"in {info['seconds']:.1f} s")
        typer.echo(f"Summary: {info['files']['summary_csv']}")
        for row in result.errors.head(10).itertuples():
            typer.echo(f"  error {row.account}: {row.error}")
        if result.n_errors > 10:
            typer.echo(f"  ... and {result.n_errors - 10} more in the summary")
    if strict and result.n_errors:
        raise typer.Exit(1)


@app.command(short_help="List the margin models, their sources and currencies.")
@_guarded
def models(as_json: bool = typer.Option(False, "--json", help="print the list as JSON"),
           debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP)) -> None:
    """List the margin models with their source and the currencies they cover."""
    from .margins import available_models, model_names
    found = available_models()
    rows = []
    for name in model_names():
        m = found.get(name)
        rows.append({"name": name, "description": m.description if m else "",
                     "source": m.source if m else "", "pooling": m.pooling if m else "",
                     "currencies": list(m.currencies) if m else [],
                     "convex": m.convex if m else None})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        cur = ", ".join(r["currencies"]) if r["pooling"] != "single" else "any (one USD pool)"
        typer.echo(f"{r['name']:<18} {r['description']}\n{'':<18} source: {r['source']}; "
                   f"currencies: {cur}; convex: {r['convex']}")


from .explain._cli import register as _register_explain  # noqa: E402

_register_explain(app, _guarded)  # explain, whatif, compare


from .live._cli import register as _register_live  # noqa: E402  (fetch, reconcile, watch)

_register_live(app, _guarded, _DEBUG_HELP, lambda: _UTCFormatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"))


from .allocate._cli import register as _register_allocate  # noqa: E402

_register_allocate(app, _guarded)  # allocate


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
