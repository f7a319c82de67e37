"""What every explain function starts from: the book, the market and the model, loaded and bound."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..margins import BoundModel, MarginModel, load_model
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio

BookLike = Portfolio | str | Path | Mapping[str, Any] | Any
MarketLike = MarketSnapshot | str | Path | Mapping[str, Any]
ModelLike = MarginModel | str | Path


@dataclass(frozen=True)
class Bound:
    """A book bound to a model: the pool and the pool-local column of every position."""

    book: Portfolio
    market: MarketSnapshot
    model: MarginModel
    bound: BoundModel
    x: np.ndarray
    pool_of: np.ndarray    # pool index (into bound.pools) of each position
    local_of: np.ndarray   # the position's column inside its pool


def pool_maps(bound: BoundModel) -> tuple[np.ndarray, np.ndarray]:
    n = len(bound.instruments)
    pool_of = np.full(n, -1, dtype=np.intp)
    local_of = np.full(n, -1, dtype=np.intp)
    for p, pool in enumerate(bound.pools):
        pool_of[pool.columns] = p
        local_of[pool.columns] = np.arange(pool.columns.size)
    return pool_of, local_of


def bind(book: BookLike, market: MarketLike, model: ModelLike) -> Bound:
    portfolio = load_portfolio(book)
    snap = load_market(market)
    rules = load_model(model)
    bound = rules.bind(portfolio.instruments, snap)
    pool_of, local_of = pool_maps(bound)
    return Bound(portfolio, snap, rules, bound, portfolio.quantities, pool_of, local_of)


def pool_initial_usd(bound: BoundModel, x: np.ndarray) -> np.ndarray:
    """Each pool's initial margin in USD at universe positions ``x``."""
    return np.array([p.usd_rate * sum(c.evaluate(x[p.columns]) for c in p.initial)
                     for p in bound.pools], dtype=float)
