"""The ``explain``, ``whatif`` and ``compare`` commands. ``marginopt.cli`` registers them with
``register(app, guarded)``; helpers of the CLI are imported when a command runs, so this module
imports first without the CLI (no import cycle)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

_DEBUG_HELP = "show the traceback of an error (also accepted before the command)"


def _num(v: Any, decimals: int = 2, sign: bool = False) -> str:
    from .._format import num
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "unbounded"
    return num(v, decimals, sign=sign)


def _print_explanation(e: Any, top: int) -> None:
    m = e.margin
    head = (f"Model {e.model}: initial margin {_num(m.initial_margin_usd)} USD, maintenance "
            f"margin {_num(m.maintenance_margin_usd)} USD")
    if e.equity_usd is not None:
        head += f", equity {_num(e.equity_usd)} USD"
    typer.echo(head)
    frame = e.attribution.to_frame()
    order = frame["marginal_usd"].abs().sort_values(ascending=False).index[:top]
    typer.echo(f"Largest contributors (of {len(frame)} positions; USD): marginal (Euler), "
               "standalone, incremental")
    for _, r in frame.loc[order].iterrows():
        typer.echo(f"  {r.instrument:<26} {_num(r.quantity, 4, True):>12}  marginal "
                   f"{_num(r.marginal_usd):>14}  standalone {_num(r.standalone_usd):>14}  "
                   f"incremental {_num(r.incremental_usd):>14}")
    typer.echo("By pool and component (USD): margin, sum of contributions, residual")
    for c in e.attribution.components:
        why = f" ({c.note})" if c.note else ""
        typer.echo(f"  {c.pool:<10} {c.component:<16} {_num(c.value_usd):>14} {_num(c.marginal_sum_usd):>14} "
                   f"{_num(c.residual_usd):>12}  [{c.method}]{why}")
    if e.liquidation is not None:
        typer.echo(f"Distance to liquidation (maintenance margin above equity of {_num(e.equity_usd)} USD):")
        for p in e.liquidation.points:
            unit = " vol points" if p.kind == "vol" else "%"
            at = ("beyond " + _num(100 * p.searched_to, 1, True) + unit) if p.move is None else \
                _num(100 * p.move, 3, True) + unit
            typer.echo(f"  {p.shock:<16} {at:<26} {p.status}")
    if e.capacity is not None:
        cap = e.capacity
        held = cap.to_frame()
        held = held[held["position"] != 0.0]
        typer.echo(f"Capacity before initial margin reaches {_num(cap.budget_usd)} USD "
                   f"({len(cap.instruments)} instruments; the book's below, all with --json or --out):")
        for _, r in held.iterrows():
            typer.echo(f"  {r.instrument:<26} buy {_num(r.buy_max, 6):>16} ({r.buy_limited_by})  "
                       f"sell {_num(r.sell_max, 6):>16} ({r.sell_limited_by})")
    for n in e.notes:
        typer.echo(f"Note: {n}")


def _print_whatif(w: Any) -> None:
    b, a = w.before, w.after
    typer.echo(f"Model {w.model}: initial margin {_num(b.initial_margin_usd)} -> "
               f"{_num(a.initial_margin_usd)} USD ({_num(w.initial_margin_change_usd, sign=True)}), "
               f"maintenance {_num(b.maintenance_margin_usd)} -> {_num(a.maintenance_margin_usd)} USD "
               f"({_num(w.maintenance_margin_change_usd, sign=True)})")
    for name, q in w.trades.items():
        typer.echo(f"  trade {name} {_num(q, 6, True)}")
    for path, v in w.changes.items():
        typer.echo(f"  set {path} = {v}")
    typer.echo("By pool and component (USD): today, after, change")
    for _, r in w.to_frame().iterrows():
        typer.echo(f"  {r.pool:<10} {r.component:<16} {_num(r.initial_margin_usd_before):>14} "
                   f"{_num(r.initial_margin_usd_after):>14} {_num(r.change_usd, sign=True):>14}")
    typer.echo("Greeks per underlying: today, after (delta coin, vega USD per vol point, gamma coin per 1%)")
    for _, r in w.greeks_frame().iterrows():
        if r.greek == "delta_usd":
            continue
        k = 6 if r.greek == "gamma" else (2 if r.greek == "vega" else 4)
        typer.echo(f"  {r.underlying:<6} {r.greek:<6} {_num(r.before, k):>16} {_num(r.after, k):>16}")


def _print_comparison(c: Any) -> None:
    typer.echo(f"Initial margin of the book under each model (savings against {c.current}):")
    for m in c.models:
        if m.applies:
            typer.echo(f"  {m.model:<20} IM {_num(m.initial_margin_usd):>16} USD  MM "
                       f"{_num(m.maintenance_margin_usd):>16} USD  saving {_num(m.saving_usd, sign=True):>16} USD")
        else:
            typer.echo(f"  {m.model:<20} does not apply: {m.reason}")
    best = c.best
    if best is not None and c.current is not None and best.model != c.current:
        typer.echo(f"Lowest: {best.model}, {_num(best.saving_usd)} USD less than {c.current}.")


def register(app: typer.Typer, guarded: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add ``explain``, ``whatif`` and ``compare`` to the command line ``app``."""

    @app.command(short_help="What drives the margin, the room left, the distance to liquidation.")
    @guarded
    def explain(
        portfolio: Path = typer.Option(..., "--portfolio", "-p", help="the book: CSV or JSON of positions in coin"),
        market: Path = typer.Option(..., "--market", "-m", help="market snapshot JSON"),
        model: str = typer.Option("deribit-pm", "--model", help="margin model: a name from 'marginopt models' or a YAML path"),
        equity: Optional[float] = typer.Option(None, "--equity", help="the account's equity in USD: capacity up to it and distance to liquidation"),
        budget: Optional[float] = typer.Option(None, "--budget", help="initial-margin budget in USD for capacity (default: --equity)"),
        spec: Optional[Path] = typer.Option(None, "--spec", "-s", help="rebalance spec YAML: its greek limits and trade bounds also cap capacity"),
        instrument: Optional[List[str]] = typer.Option(None, "--instrument", "-i", help="capacity of this instrument (repeatable; default: every instrument of the snapshot)"),
        scenarios: Optional[Path] = typer.Option(None, "--scenarios", help="scenario P&L matrix for scenario-max/-es"),
        covariance: Optional[Path] = typer.Option(None, "--covariance", help="covariance (CSV/.npy) for covariance-var"),
        top: int = typer.Option(10, "--top", min=1, help="contributors listed in the text output"),
        out: Optional[Path] = typer.Option(None, "--out", help="folder to write explain.json, explain.html and the charts to"),
        as_json: bool = typer.Option(False, "--json", help="print the explanation as JSON"),
        debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
    ) -> None:
        """Attribution of the initial margin by position, pool and component; with --equity or
        --budget each instrument's capacity; with --equity the distance to liquidation."""
        from ..cli import _check_out, _load_market, _load_model
        from ..reports import write_explanation
        from . import explain as run
        _check_out(out)
        snap = _load_market(market)
        result = run(portfolio, snap, _load_model(model, scenarios, covariance), equity=equity,
                     budget=budget, instruments=instrument or None, spec=spec)
        if as_json:
            typer.echo(result.to_json(indent=1))
        else:
            _print_explanation(result, top)
        if out is not None:
            paths = write_explanation(result, out)
            if not as_json:
                typer.echo(f"Wrote the explanation to {out}/ ({', '.join(p.name for p in paths.values())})")

    @app.command(short_help="Margin, greeks and components after hypothetical trades or a parameter change.")
    @guarded
    def whatif(
        portfolio: Path = typer.Option(..., "--portfolio", "-p", help="the book: CSV or JSON of positions in coin"),
        market: Path = typer.Option(..., "--market", "-m", help="market snapshot JSON"),
        model: str = typer.Option("deribit-pm", "--model", help="margin model: a name from 'marginopt models' or a YAML path"),
        trade: Optional[List[str]] = typer.Option(None, "--trade", "-t", help="NAME=QUANTITY in coin, signed (BTC-PERPETUAL=+1.5); repeatable"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="PATH=VALUE of a model parameter (ETH.worst_case.price_range=0.20); repeatable"),
        scenarios: Optional[Path] = typer.Option(None, "--scenarios", help="scenario P&L matrix for scenario-max/-es"),
        covariance: Optional[Path] = typer.Option(None, "--covariance", help="covariance (CSV/.npy) for covariance-var"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
        debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
    ) -> None:
        """The book today against the book plus the trades, under the model with the changes."""
        from ..cli import _load_market, _load_model
        from ..errors import InvalidValue
        from . import whatif as run
        from ._whatif import parse_assignments
        trades = parse_assignments(trade, "--trade")
        changes = parse_assignments(set_, "--set")
        if not trades and not changes:
            raise InvalidValue("nothing to compare: give at least one --trade NAME=QUANTITY or "
                               "--set PATH=VALUE", field="trade")
        snap = _load_market(market)
        result = run(portfolio, snap, _load_model(model, scenarios, covariance), trades=trades,
                     changes=changes)
        if as_json:
            typer.echo(result.to_json(indent=1))
        else:
            _print_whatif(result)

    @app.command(short_help="The book's margin under every model that applies.")
    @guarded
    def compare(
        portfolio: Path = typer.Option(..., "--portfolio", "-p", help="the book: CSV or JSON of positions in coin"),
        market: Path = typer.Option(..., "--market", "-m", help="market snapshot JSON"),
        model: Optional[List[str]] = typer.Option(None, "--model", help="a model name or YAML path (repeatable; default: every shipped model)"),
        current: Optional[str] = typer.Option(None, "--current", help="the account's margin mode today, savings are measured from it (default: deribit-standard if it applies)"),
        scenarios: Optional[Path] = typer.Option(None, "--scenarios", help="scenario P&L matrix for scenario-max/-es"),
        covariance: Optional[Path] = typer.Option(None, "--covariance", help="covariance (CSV/.npy) for covariance-var"),
        as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
        debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
    ) -> None:
        """Initial and maintenance margin of the book under each model, and what switching saves."""
        from ..cli import _load_market
        from . import compare as run
        snap = _load_market(market)
        result = run(portfolio, snap, model or None, current=current, scenarios=scenarios,
                     covariance=covariance)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=1))
        else:
            _print_comparison(result)


__all__ = ["register"]
