"""The calculator: ``margin(portfolio, market, model)``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping


from ..errors import InvalidValue
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
    result = rules.bind(book.instruments, snap).evaluate(book.quantities)
    if not (math.isfinite(result.initial_margin_usd) and math.isfinite(result.maintenance_margin_usd)):
        # inputs are bounded (thresholds), so only a model's parameters can get here
        raise InvalidValue(f"margin is not a finite number (initial {result.initial_margin_usd}, "
                           f"maintenance {result.maintenance_margin_usd} USD): check the model's "
                           "parameters", source=str(rules.path) if rules.path else rules.name,
                           field="currencies")
    return result
