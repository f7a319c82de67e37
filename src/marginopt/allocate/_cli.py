"""``marginopt allocate JOB.yaml [--json] [--out DIR]`` (registered in ``marginopt.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._result import STATUS_WORDS, Allocation

_DEBUG_HELP = "show the traceback of an error (also accepted before the command)"


def write_allocation(allocation: Allocation, folder: str | Path, *, html: bool = True) -> dict[str, Path]:
    """``allocation.json``, ``allocation.md`` and (with ``html``) the HTML report with its charts,
    each written atomically."""
    from ..reports._write import atomic_write_text
    out = Path(folder)
    paths = {"json": out / "allocation.json", "markdown": out / "allocation.md"}
    atomic_write_text(paths["json"], allocation.to_json(indent=1) + "\n")
    atomic_write_text(paths["markdown"], allocation.to_markdown())
    if html:
        from ..reports._allocation import write_allocation_report
        paths.update(write_allocation_report(allocation, out))
    return paths


def print_allocation(a: Allocation) -> None:
    from .._format import num
    typer.echo(f"Status: {a.status} ({STATUS_WORDS[str(a.status)]}). {a.reason}")
    typer.echo(f"Desk initial margin before {num(a.margin_before_usd)} USD, after {num(a.margin_after_usd)} USD, "
               f"saved {num(a.margin_saved_usd)} USD ({a.margin_saved_pct:.2f}%); trading cost "
               f"{num(a.cost_usd)} USD, fees {num(a.fees_usd)} USD")
    if a.saving_from_moves_usd is not None:
        typer.echo(f"  moves alone save {num(a.saving_from_moves_usd)} USD; trades add "
                   f"{num(a.saving_from_trades_usd)} USD")
    for acc in a.accounts:
        head = "" if acc.headroom_usd is None else f", headroom to equity {num(acc.headroom_usd)} USD"
        typer.echo(f"  {acc.name:<16} {acc.model:<18} {num(acc.margin_before.initial_margin_usd):>16} -> "
                   f"{num(acc.margin_after.initial_margin_usd):>16} USD; {len(acc.trades)} trade(s){head}")
    for m in a.moves:
        typer.echo(f"  move {num(m.quantity, 6, sign=True):>14} {m.instrument_name:<24} {m.from_account} -> "
                   f"{m.to_account}")
    for t in a.transfers:
        typer.echo(f"  transfer {num(t.amount, 6)} {t.currency} {t.from_account} -> {t.to_account} "
                   f"({num(t.amount_usd)} USD)")
    for acc in a.accounts:
        for t in acc.trades:
            typer.echo(f"  {acc.name}: {t.side:<4} {num(abs(t.quantity), 6):>14} {t.instrument_name} "
                       f"cost {num(t.cost)} USD")
    for b in a.binding:
        price = "n/a" if b.shadow_price is None else num(b.shadow_price, 4)
        typer.echo(f"  binding {b.kind} limit {b.account + ': ' if b.account else ''}{b.name} at "
                   f"{num(b.bound, 4)}, shadow price {price} USD per unit")
    for n in a.notes:
        typer.echo(f"Note: {n}")


def allocate_command(
    job: Path = typer.Argument(..., help="allocation job YAML (venues, accounts, desk rules)"),
    as_json: bool = typer.Option(False, "--json", help="print the allocation as JSON"),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="folder to write allocation.json, allocation.md and "
                                            "report.html to (default: the job's output_dir, if any)"),
    debug: bool = typer.Option(False, "--debug", help=_DEBUG_HELP),
) -> None:
    """Minimise a desk's margin across its accounts: moves, trades and transfers at once."""
    from ..cli import _check_out
    from ._allocate import Allocator
    from ._job import load_allocation_job
    loaded = load_allocation_job(job)
    folder = out if out is not None else loaded.output_dir
    _check_out(folder)
    allocation = Allocator(loaded.rules).allocate(loaded.accounts)
    if as_json:
        typer.echo(allocation.to_json(indent=1))
    else:
        print_allocation(allocation)
    if folder is not None:
        paths = write_allocation(allocation, folder)
        if not as_json:
            typer.echo(f"Wrote the allocation and its report to {folder}/ "
                       f"({', '.join(p.name for p in paths.values())})")


def register(app: typer.Typer, guarded) -> None:
    """Add ``allocate`` to the command line (``guarded`` maps errors to exit codes)."""
    app.command("allocate", short_help="Minimise a desk's margin across its accounts and venues.")(
        guarded(allocate_command))
