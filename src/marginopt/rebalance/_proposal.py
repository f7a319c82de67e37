"""The proposal: trades, margin before/after/saved (recomputed by the calculator), greeks against
limits, binding limits with their shadow prices, and how the solve went."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping

import pandas as pd

from ..margins import MarginResult

SCHEMA_VERSION = "1.0"


class Status(str, Enum):
    """What a proposal is (a ``str``: compares and serialises as its value)."""

    #: trades that lower the initial margin and keep every limit
    OPTIMAL = "optimal"
    #: nothing is proposed; ``reason`` says why
    NO_TRADE = "no_trade"
    #: the book broke a limit; the trades bring it back inside (margin may rise)
    RESTORES_LIMITS = "restores_limits"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Trade:
    instrument_name: str
    side: str                 # "buy" or "sell"
    quantity: float           # signed, coin
    price: float              # ask for a buy, bid for a sell (mark if none), in the quote units
    cost: float               # estimated cost in USD (half spread plus impact)
    notional_usd: float


@dataclass(frozen=True)
class LimitCheck:
    name: str
    lower: float | None
    upper: float | None
    before: float
    after: float
    breached_before: bool
    binding: bool
    #: initial margin (plus cost) saved in USD per unit the binding bound is relaxed
    shadow_price: float

    @property
    def binding_bound(self) -> float | None:
        """The bound the book sits on after the trades (None when no bound binds)."""
        bounds = [b for b in (self.lower, self.upper) if b is not None]
        if not self.binding or not bounds:
            return None
        return min(bounds, key=lambda b: abs(self.after - b))


@dataclass(frozen=True)
class BoundCheck:
    """A trade bound of the spec and where the proposal sits against it: the turnover budget
    (USD), the instrument count, or one instrument's buy or sell bound (coin)."""

    name: str
    value: float
    bound: float
    binding: bool
    #: objective (USD) saved per unit the bound is relaxed, where the solver reports it
    shadow_price: float = 0.0


@dataclass(frozen=True)
class Proposal:
    """A frozen rebalance proposal. ``status``: ``optimal`` (trades that save margin),
    ``no_trade`` (nothing helps; ``reason`` says why) or ``restores_limits`` (the book broke a
    limit and the trades bring it back inside, possibly at a margin cost)."""

    status: Status
    reason: str
    model: str
    trades: tuple[Trade, ...]
    margin_before: MarginResult
    margin_after: MarginResult
    limits: tuple[LimitCheck, ...]
    greeks_before: Mapping[str, Mapping[str, float]]
    greeks_after: Mapping[str, Mapping[str, float]]
    solver: str | None = None
    solver_status: str | None = None
    problem_class: str | None = None
    #: the solver's own margin of the post-trade book (continuous solution, USD), for the check
    solver_margin_usd: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    attempts: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    excluded: Mapping[str, str] = field(default_factory=dict)
    #: trade bounds the proposal sits on or is measured against (turnover, count, per instrument)
    bounds: tuple[BoundCheck, ...] = ()
    #: which answer passed the verifier and was shipped (solver, stage, repair)
    verified_by: str = ""

    # ------------------------------------------------------------------ figures
    @property
    def margin_saved_usd(self) -> float:
        return self.margin_before.initial_margin_usd - self.margin_after.initial_margin_usd

    @property
    def margin_saved_pct(self) -> float:
        before = self.margin_before.initial_margin_usd
        return 100.0 * self.margin_saved_usd / before if before else 0.0

    @property
    def cost_usd(self) -> float:
        return float(sum(t.cost for t in self.trades))

    @property
    def binding_limits(self) -> tuple[LimitCheck, ...]:
        return tuple(l for l in self.limits if l.binding)

    @property
    def trade_quantities(self) -> dict[str, float]:
        return {t.instrument_name: t.quantity for t in self.trades}

    # ------------------------------------------------------------------ exports
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "status": str(self.status),
            "reason": self.reason,
            "model": self.model,
            "margin_before": self.margin_before.to_dict(),
            "margin_after": self.margin_after.to_dict(),
            "margin_saved_usd": self.margin_saved_usd,
            "margin_saved_pct": self.margin_saved_pct,
            "cost_usd": self.cost_usd,
            "trades": [asdict(t) for t in self.trades],
            "greeks_before": {k: dict(v) for k, v in self.greeks_before.items()},
            "greeks_after": {k: dict(v) for k, v in self.greeks_after.items()},
            "limits": [asdict(l) for l in self.limits],
            "binding_limits": [{"name": l.name, "shadow_price": l.shadow_price, "bound": l.binding_bound}
                               for l in self.binding_limits],
            "solver": {"name": self.solver, "status": self.solver_status,
                       "problem_class": self.problem_class, "solver_margin_usd": self.solver_margin_usd,
                       "attempts": [list(a) for a in self.attempts]},
            "bounds": [asdict(b) for b in self.bounds],
            "binding_bounds": [{"name": b.name, "value": b.value, "bound": b.bound,
                                "shadow_price": b.shadow_price} for b in self.bounds if b.binding],
            "verified_by": self.verified_by,
            "timings": dict(self.timings),
            "notes": list(self.notes),
            "excluded": dict(self.excluded),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """The trades, one row each."""
        cols = ["instrument_name", "side", "quantity", "price", "cost", "notional_usd"]
        return pd.DataFrame([asdict(t) for t in self.trades], columns=cols)

    def limits_frame(self) -> pd.DataFrame:
        cols = ["name", "lower", "upper", "before", "after", "breached_before", "binding", "shadow_price"]
        return pd.DataFrame([asdict(l) for l in self.limits], columns=cols)

    def to_markdown(self) -> str:
        from .._format import (bound_decimals, bound_unit, limit_decimals, limit_unit, num,
                               price_decimals, price_unit, status_words)
        b, a = self.margin_before, self.margin_after
        lines = [
            f"# Margin proposal ({self.model})", "",
            f"**Status:** {self.status} ({status_words(self.status)}). {self.reason}", "",
            "| | initial margin (USD) | maintenance margin (USD) |", "|---|---:|---:|",
            f"| before | {num(b.initial_margin_usd)} | {num(b.maintenance_margin_usd)} |",
            f"| after | {num(a.initial_margin_usd)} | {num(a.maintenance_margin_usd)} |",
            f"| saved | {num(self.margin_saved_usd)} ({self.margin_saved_pct:.2f}%) | "
            f"{num(b.maintenance_margin_usd - a.maintenance_margin_usd)} |", "",
            f"Estimated trading cost: {num(self.cost_usd)} USD.", "",
        ]
        lines += ["## Margin by pool and component", "",
                  "| pool | component | before | after | unit |", "|---|---|---:|---:|---|"]
        for pool in sorted(set(b.by_underlying) | set(a.by_underlying)):
            pb, pa = b.by_underlying.get(pool), a.by_underlying.get(pool)
            names = list(dict.fromkeys([*(pb.components if pb else {}), *(pa.components if pa else {})]))
            ccy = (pb or pa).currency
            for n in names:
                vb = pb.components.get(n, 0.0) if pb else 0.0
                va = pa.components.get(n, 0.0) if pa else 0.0
                d = 2 if ccy in ("USD", "USDC") else 6
                lines.append(f"| {pool} | {n} | {num(vb, d)} | {num(va, d)} | {ccy} |")
        lines += ["", "## Trades", ""]
        if self.trades:
            lines += ["Quantities in coin. Prices as the exchange quotes them: coin-settled options "
                      "in their coin, futures and perpetuals in USD, USDC-settled contracts in USDC.",
                      "", "| instrument | side | quantity (coin) | price | price unit | cost (USD) |",
                      "|---|---|---:|---:|---|---:|"]
            for t in self.trades:
                unit = price_unit(t.instrument_name)
                lines.append(f"| {t.instrument_name} | {t.side} | {num(t.quantity, 6, sign=True)} | "
                             f"{num(t.price, price_decimals(unit))} | {unit} | {num(t.cost)} |")
        else:
            lines.append("No trade.")
        lines += ["", "## Limits", "",
                  "| limit | unit | lower | upper | before | after | binding | shadow price (USD per unit) |",
                  "|---|---|---:|---:|---:|---:|---|---:|"]
        for l in self.limits:
            d = limit_decimals(l.name)
            lines.append(f"| {l.name} | {limit_unit(l.name)} | {num(l.lower, d)} | {num(l.upper, d)} | "
                         f"{num(l.before, d)}{' (breached)' if l.breached_before else ''} | "
                         f"{num(l.after, d)} | {'yes' if l.binding else ''} | "
                         f"{num(l.shadow_price) if l.binding else ''} |")
        binding_bounds = [b for b in self.bounds if b.binding]
        if binding_bounds:
            lines += ["", "## Trade bounds that bind", "",
                      "| bound | unit | value | limit | shadow price (USD per unit) |",
                      "|---|---|---:|---:|---:|"]
            lines += [f"| {b.name} | {bound_unit(b.name)} | {num(b.value, bound_decimals(b.name))} | "
                      f"{num(b.bound, bound_decimals(b.name))} | {num(b.shadow_price, 4)} |"
                      for b in binding_bounds]
        lines += ["", "## Greeks", "",
                  "| underlying | delta before (coin) | delta after (coin) | delta before (USD) | "
                  "delta after (USD) | vega before (USD per vol point) | vega after |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for u in self.greeks_before:
            gb, ga = self.greeks_before[u], self.greeks_after.get(u, {})
            lines.append(f"| {u} | {num(gb['delta'], 4)} | {num(ga.get('delta', 0), 4)} | "
                         f"{num(gb.get('delta_usd', 0))} | {num(ga.get('delta_usd', 0))} | "
                         f"{num(gb['vega'])} | {num(ga.get('vega', 0))} |")
        if self.solver:
            lines += ["", f"Solver: {self.solver} ({self.problem_class}, {self.solver_status}); "
                      + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.timings.items()) + "."]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if self.excluded:
            lines += ["", f"{len(self.excluded)} instruments left out of the universe: "
                      + "; ".join(f"{k} ({v})" for k, v in list(self.excluded.items())[:20])
                      + (" ..." if len(self.excluded) > 20 else "") + "."]
        return "\n".join(lines) + "\n"
