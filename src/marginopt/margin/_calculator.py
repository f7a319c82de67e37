"""The calculator: ``margin(portfolio, market, model)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ._model import MarginModel, MarginResult, load_model


def margin(
    portfolio: Portfolio | str | Path | Any,
    market: MarketSnapshot | str | Path | Mapping[str, Any],
    model: MarginModel | str | Path = "deribit-pm",
) -> MarginResult:
    """Initial and maintenance margin of a book as the model's exchange computes it."""
    book = load_portfolio(portfolio)
    snap = load_market(market)
    rules = load_model(model)
    return rules.bind(book.instruments, snap).evaluate(book.quantities)
