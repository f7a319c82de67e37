"""``explain``: attribution, capacity and distance to liquidation of one book in one call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from ..margins import MarginResult, load_model, margin
from ..market import load_market
from ..portfolio import load_portfolio
from ..rebalance._spec import RebalanceSpec
from ._attribution import Attribution, attribute
from ._capacity import Capacity, capacity
from ._common import BookLike, MarketLike, ModelLike
from ._liquidation import Liquidation, liquidation


@dataclass(frozen=True)
class Explanation:
    """What drives a book's margin (attribution), how much room is left (capacity) and how far
    the market can move before maintenance margin exceeds equity (liquidation)."""

    model: str
    margin: MarginResult
    attribution: Attribution
    equity_usd: float | None = None
    capacity: Capacity | None = None
    liquidation: Liquidation | None = None
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """The attribution, one row per position (largest marginal contribution first)."""
        return self.attribution.to_frame()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "equity_usd": self.equity_usd,
                "margin": self.margin.to_dict(), "attribution": self.attribution.to_dict(),
                "capacity": self.capacity.to_dict() if self.capacity else None,
                "liquidation": self.liquidation.to_dict() if self.liquidation else None,
                "notes": list(self.notes)}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def explain(book: BookLike, market: MarketLike, model: ModelLike = "deribit-pm", *,
            equity: float | None = None, budget: float | None = None,
            instruments: Sequence[str] | None = None,
            spec: RebalanceSpec | str | Mapping[str, Any] | None = None) -> Explanation:
    """Attribution of the book's initial margin; with ``equity`` (USD) or a ``budget``, each
    instrument's capacity (``instruments``, default every instrument of the snapshot the model
    margins; ``spec`` adds its limits); with ``equity``, the distance to liquidation."""
    portfolio = load_portfolio(book)
    snap = load_market(market)
    rules = load_model(model)
    notes: list[str] = []
    result = margin(portfolio, snap, rules)
    attr = attribute(portfolio, snap, rules)
    for c in attr.components:
        if not c.homogeneous:
            notes.append(f"{c.pool} {c.component}: the marginal contributions leave a residual of "
                         f"{c.residual_usd:,.2f} USD ({c.note})")
    cap = None
    if equity is not None or budget is not None:
        cap = capacity(portfolio, snap, rules, equity=equity, budget=budget, instruments=instruments,
                       spec=spec)
        if cap.excluded:
            notes.append(f"capacity: {len(cap.excluded)} instruments left out (the model cannot "
                         "margin them or the snapshot cannot price them); see capacity.excluded")
    else:
        notes.append("no equity or budget given: capacity not computed")
    liq = None
    if equity is not None:
        liq = liquidation(portfolio, snap, rules, equity=equity)
    else:
        notes.append("no equity given: distance to liquidation not computed")
    return Explanation(rules.name, result, attr, None if equity is None else float(equity), cap,
                       liq, tuple(notes))


__all__ = ["Explanation", "explain"]
