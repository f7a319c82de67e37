"""The allocation: per account its trades, moves, transfers, margin before and after (recomputed
by the account's own calculator on its post-allocation book) and headroom to equity; the desk's
totals, saving and its split between moves and trades; aggregate greeks against desk limits; every
binding limit with its shadow price."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping

import pandas as pd

from ..margins import MarginResult
from ..rebalance import LimitCheck, Trade

SCHEMA_VERSION = "1.0"


class AllocationStatus(str, Enum):
    #: moves, trades and transfers that lower the desk's margin and keep every limit
    OPTIMAL = "optimal"
    #: nothing is proposed; ``reason`` says why
    NO_ALLOCATION = "no_allocation"
    #: the desk broke a limit (desk, account or equity); the allocation brings it back inside
    RESTORES_LIMITS = "restores_limits"

    def __str__(self) -> str:
        return self.value


STATUS_WORDS = {
    "optimal": "the allocation lowers the desk's initial margin and keeps every limit",
    "no_allocation": "nothing is proposed: no move, trade or transfer lowers the desk's margin "
                     "enough within the limits (the reason says why)",
    "restores_limits": "the desk broke a limit; the allocation brings it back inside, which may "
                       "cost margin",
}


def _finite(v: Any) -> Any:
    """JSON has no NaN: a figure that does not exist (a shadow price no solver gave) is null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


@dataclass(frozen=True)
class Move:
    """``quantity`` of ``instrument`` (coin; negative: a short position) moved from one account to
    another of the same venue and main account, at ``mark_price`` (no P&L for either side)."""

    instrument_name: str
    from_account: str
    to_account: str
    quantity: float
    mark_price: float
    notional_usd: float
    fee_usd: float


@dataclass(frozen=True)
class Transfer:
    """Collateral moved between two accounts of one venue and main account, in one currency."""

    currency: str
    from_account: str
    to_account: str
    amount: float
    amount_usd: float
    fee_usd: float


@dataclass(frozen=True)
class BindingLimit:
    """A limit the allocation sits on: ``kind`` is ``account`` (an account's own spec limit),
    ``desk`` (a desk limit on aggregate greeks) or ``equity`` (margin at equity less buffer).
    ``shadow_price``: desk objective (USD) saved per unit the bound is relaxed; None when the
    solver that answered gives no duals (SCIP)."""

    kind: str
    account: str | None
    name: str
    value: float
    bound: float
    shadow_price: float | None


@dataclass(frozen=True)
class AccountAllocation:
    name: str
    venue: str
    main_account: str
    model: str
    trades: tuple[Trade, ...]
    #: net position change from moves, per instrument (coin, signed)
    moves: Mapping[str, float]
    margin_before: MarginResult
    margin_after: MarginResult
    cost_usd: float
    #: collateral value before and after transfers (USD), None when not given
    equity_usd: float | None
    equity_after_usd: float | None
    buffer_usd: float
    limits: tuple[LimitCheck, ...] = ()
    #: the solver's own margin of the post-allocation book (USD)
    solver_margin_usd: float | None = None

    @property
    def margin_saved_usd(self) -> float:
        return self.margin_before.initial_margin_usd - self.margin_after.initial_margin_usd

    @property
    def headroom_usd(self) -> float | None:
        """Equity after transfers and trading costs, less the buffer, less the margin after."""
        if self.equity_after_usd is None:
            return None
        return self.equity_after_usd - self.cost_usd - self.buffer_usd - self.margin_after.initial_margin_usd

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "venue": self.venue, "main_account": self.main_account,
                "model": self.model, "trades": [asdict(t) for t in self.trades],
                "moves": dict(self.moves),
                "margin_before_usd": self.margin_before.initial_margin_usd,
                "margin_after_usd": self.margin_after.initial_margin_usd,
                "margin_saved_usd": self.margin_saved_usd, "cost_usd": self.cost_usd,
                "equity_usd": self.equity_usd, "equity_after_usd": self.equity_after_usd,
                "buffer_usd": self.buffer_usd, "headroom_usd": self.headroom_usd,
                "solver_margin_usd": self.solver_margin_usd,
                "limits": [asdict(l) for l in self.limits],
                "margin_before": self.margin_before.to_dict(), "margin_after": self.margin_after.to_dict()}


@dataclass(frozen=True)
class Allocation:
    """A frozen desk allocation. Margins are each account's calculator on its post-allocation
    book; the desk's are their sums."""

    status: AllocationStatus
    reason: str
    accounts: tuple[AccountAllocation, ...]
    moves: tuple[Move, ...]
    transfers: tuple[Transfer, ...]
    desk_limits: tuple[LimitCheck, ...]
    greeks_before: Mapping[str, Mapping[str, float]]
    greeks_after: Mapping[str, Mapping[str, float]]
    binding: tuple[BindingLimit, ...] = ()
    #: the desk's margin after the best moves-only allocation (calculator), None when not solved
    moves_only_margin_usd: float | None = None
    solver: str | None = None
    problem_class: str | None = None
    solver_margin_usd: float | None = None
    verified_by: str = ""
    attempts: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ figures
    @property
    def margin_before_usd(self) -> float:
        return float(sum(a.margin_before.initial_margin_usd for a in self.accounts))

    @property
    def margin_after_usd(self) -> float:
        return float(sum(a.margin_after.initial_margin_usd for a in self.accounts))

    @property
    def margin_saved_usd(self) -> float:
        return self.margin_before_usd - self.margin_after_usd

    @property
    def margin_saved_pct(self) -> float:
        b = self.margin_before_usd
        return 100.0 * self.margin_saved_usd / b if b else 0.0

    @property
    def cost_usd(self) -> float:
        return float(sum(a.cost_usd for a in self.accounts))

    @property
    def fees_usd(self) -> float:
        return float(sum(m.fee_usd for m in self.moves) + sum(t.fee_usd for t in self.transfers))

    @property
    def saving_from_moves_usd(self) -> float | None:
        """What the best allocation by moves (and transfers) alone saves."""
        if self.moves_only_margin_usd is None:
            return None
        return self.margin_before_usd - self.moves_only_margin_usd

    @property
    def saving_from_trades_usd(self) -> float | None:
        """What trades add to the moves-only saving."""
        alone = self.saving_from_moves_usd
        return None if alone is None else self.margin_saved_usd - alone

    def account(self, name: str) -> AccountAllocation:
        for a in self.accounts:
            if a.name == name:
                return a
        raise KeyError(name)

    # ------------------------------------------------------------------ exports
    def to_frame(self) -> pd.DataFrame:
        """One row per account."""
        cols = ["account", "venue", "main_account", "model", "margin_before_usd", "margin_after_usd",
                "margin_saved_usd", "n_trades", "n_moves", "cost_usd", "equity_usd",
                "equity_after_usd", "buffer_usd", "headroom_usd"]
        rows = [{"account": a.name, "venue": a.venue, "main_account": a.main_account, "model": a.model,
                 "margin_before_usd": a.margin_before.initial_margin_usd,
                 "margin_after_usd": a.margin_after.initial_margin_usd,
                 "margin_saved_usd": a.margin_saved_usd, "n_trades": len(a.trades),
                 "n_moves": sum(1 for q in a.moves.values() if q), "cost_usd": a.cost_usd,
                 "equity_usd": a.equity_usd, "equity_after_usd": a.equity_after_usd,
                 "buffer_usd": a.buffer_usd, "headroom_usd": a.headroom_usd} for a in self.accounts]
        return pd.DataFrame(rows, columns=cols)

    def moves_frame(self) -> pd.DataFrame:
        cols = ["instrument_name", "from_account", "to_account", "quantity", "mark_price",
                "notional_usd", "fee_usd"]
        return pd.DataFrame([asdict(m) for m in self.moves], columns=cols)

    def trades_frame(self) -> pd.DataFrame:
        cols = ["account", "instrument_name", "side", "quantity", "price", "cost", "notional_usd"]
        return pd.DataFrame([{"account": a.name, **asdict(t)} for a in self.accounts for t in a.trades],
                            columns=cols)

    def limits_frame(self) -> pd.DataFrame:
        cols = ["name", "lower", "upper", "before", "after", "breached_before", "binding", "shadow_price"]
        return pd.DataFrame([asdict(l) for l in self.desk_limits], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "status": str(self.status),
            "reason": self.reason,
            "margin_before_usd": self.margin_before_usd,
            "margin_after_usd": self.margin_after_usd,
            "margin_saved_usd": self.margin_saved_usd,
            "margin_saved_pct": self.margin_saved_pct,
            "cost_usd": self.cost_usd,
            "fees_usd": self.fees_usd,
            "moves_only_margin_usd": self.moves_only_margin_usd,
            "saving_from_moves_usd": self.saving_from_moves_usd,
            "saving_from_trades_usd": self.saving_from_trades_usd,
            "accounts": [a.to_dict() for a in self.accounts],
            "moves": [asdict(m) for m in self.moves],
            "transfers": [asdict(t) for t in self.transfers],
            "desk_limits": [asdict(l) for l in self.desk_limits],
            "greeks_before": {k: dict(v) for k, v in self.greeks_before.items()},
            "greeks_after": {k: dict(v) for k, v in self.greeks_after.items()},
            "binding_limits": [asdict(b) for b in self.binding],
            "solver": {"name": self.solver, "problem_class": self.problem_class,
                       "solver_margin_usd": self.solver_margin_usd,
                       "attempts": [list(a) for a in self.attempts]},
            "verified_by": self.verified_by,
            "timings": dict(self.timings),
            "notes": list(self.notes),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(_finite(self.to_dict()), allow_nan=False, **kwargs)

    def to_markdown(self) -> str:
        from .._format import limit_decimals, limit_unit, num, price_decimals, price_unit
        lines = [
            "# Desk allocation", "",
            f"**Status:** {self.status} ({STATUS_WORDS[str(self.status)]}). {self.reason}", "",
            "| | initial margin (USD) |", "|---|---:|",
            f"| before | {num(self.margin_before_usd)} |",
            f"| after | {num(self.margin_after_usd)} |",
            f"| saved | {num(self.margin_saved_usd)} ({self.margin_saved_pct:.2f}%) |",
        ]
        if self.saving_from_moves_usd is not None:
            lines += [f"| of which moves alone | {num(self.saving_from_moves_usd)} |",
                      f"| of which trades add | {num(self.saving_from_trades_usd)} |"]
        lines += ["", f"Estimated trading cost {num(self.cost_usd)} USD; move and transfer fees "
                  f"{num(self.fees_usd)} USD.", "", "## Accounts", "",
                  "| account | venue | model | margin before (USD) | margin after (USD) | saved (USD) | "
                  "trades | moves | equity after (USD) | headroom (USD) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for a in self.accounts:
            lines.append(f"| {a.name} | {a.venue} ({a.main_account}) | {a.model} | "
                         f"{num(a.margin_before.initial_margin_usd)} | {num(a.margin_after.initial_margin_usd)} | "
                         f"{num(a.margin_saved_usd)} | {len(a.trades)} | "
                         f"{sum(1 for q in a.moves.values() if q)} | {num(a.equity_after_usd)} | "
                         f"{num(a.headroom_usd)} |")
        lines += ["", "## Moves", ""]
        if self.moves:
            lines += ["Positions moved at mark between subaccounts of one main account (quantity in "
                      "coin; negative: a short position).", "",
                      "| instrument | from | to | quantity (coin) | mark | notional (USD) | fee (USD) |",
                      "|---|---|---|---:|---:|---:|---:|"]
            for m in self.moves:
                unit = price_unit(m.instrument_name)
                lines.append(f"| {m.instrument_name} | {m.from_account} | {m.to_account} | "
                             f"{num(m.quantity, 6, sign=True)} | {num(m.mark_price, price_decimals(unit))} {unit} | "
                             f"{num(m.notional_usd)} | {num(m.fee_usd)} |")
        else:
            lines.append("No move.")
        lines += ["", "## Trades", ""]
        trades = [(a.name, t) for a in self.accounts for t in a.trades]
        if trades:
            lines += ["| account | instrument | side | quantity (coin) | price | cost (USD) |",
                      "|---|---|---|---:|---:|---:|"]
            for name, t in trades:
                unit = price_unit(t.instrument_name)
                lines.append(f"| {name} | {t.instrument_name} | {t.side} | {num(t.quantity, 6, sign=True)} | "
                             f"{num(t.price, price_decimals(unit))} {unit} | {num(t.cost)} |")
        else:
            lines.append("No trade.")
        if self.transfers:
            lines += ["", "## Collateral transfers", "",
                      "| currency | from | to | amount | USD | fee (USD) |", "|---|---|---|---:|---:|---:|"]
            lines += [f"| {t.currency} | {t.from_account} | {t.to_account} | {num(t.amount, 6)} | "
                      f"{num(t.amount_usd)} | {num(t.fee_usd)} |" for t in self.transfers]
        lines += ["", "## Desk greeks", "",
                  "| underlying | delta before (coin) | delta after (coin) | vega before (USD per vol point) | "
                  "vega after | gamma before (coin per 1%) | gamma after |", "|---|---:|---:|---:|---:|---:|---:|"]
        for u, gb in self.greeks_before.items():
            ga = self.greeks_after.get(u, {})
            lines.append(f"| {u} | {num(gb['delta'], 4)} | {num(ga.get('delta', 0), 4)} | {num(gb['vega'])} | "
                         f"{num(ga.get('vega', 0))} | {num(gb['gamma'], 4)} | {num(ga.get('gamma', 0), 4)} |")
        if self.desk_limits:
            lines += ["", "## Desk limits", "",
                      "| limit | unit | lower | upper | before | after | binding | shadow price (USD per unit) |",
                      "|---|---|---:|---:|---:|---:|---|---:|"]
            for l in self.desk_limits:
                d = limit_decimals(l.name)
                lines.append(f"| {l.name} | {limit_unit(l.name)} | {num(l.lower, d)} | {num(l.upper, d)} | "
                             f"{num(l.before, d)}{' (breached)' if l.breached_before else ''} | "
                             f"{num(l.after, d)} | {'yes' if l.binding else ''} | "
                             f"{(num(l.shadow_price) if math.isfinite(l.shadow_price) else 'n/a') if l.binding else ''} |")
        if self.binding:
            lines += ["", "## Binding limits", "",
                      "| kind | account | limit | value | bound | shadow price (USD per unit) |",
                      "|---|---|---|---:|---:|---:|"]
            lines += [f"| {b.kind} | {b.account or ''} | {b.name} | {num(b.value, 4)} | {num(b.bound, 4)} | "
                      f"{'n/a' if b.shadow_price is None else num(b.shadow_price, 4)} |" for b in self.binding]
            if any(b.shadow_price is None for b in self.binding):
                lines += ["", f"Shadow prices n/a: {self.solver} gives no duals."]
        if self.solver:
            lines += ["", f"Solver: {self.solver} ({self.problem_class}); verified: {self.verified_by}; "
                      + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.timings.items()) + "."]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"
