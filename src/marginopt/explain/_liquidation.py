"""Distance to liquidation: how far each underlying's index (down and up), or every option's
implied vol (down and up), can move before maintenance margin exceeds the account's equity.

Both sides move with the market and are computed by full revaluation: the book is repriced at the
moved market (Black-76 at the moved forwards and vols, the same pricing as the scenario engine),
its P&L is added to the equity, and the maintenance margin is recomputed by the model bound to the
moved snapshot (its scenarios re-centred on the moved market, as the exchange does). The equity is
a USD amount (stable-coin or USD-valued collateral); P&L in a coin pool is converted at the moved
index. The search walks a grid of moves outwards from today (finer near zero) and, at the first
grid point where maintenance margin exceeds equity, finds the crossing by Brent's method inside
that bracket: a dip below and back between two grid points nearer today would not be seen.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from ..errors import InvalidValue
from ..margins import MarginModel, load_model
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ..pricing import black76_price
from ._common import BookLike, MarketLike, ModelLike

#: the search grid: this many points from the first step to the largest move, geometric
_GRID_POINTS = 32
_FIRST_MOVE = 0.0025


@dataclass(frozen=True)
class LiquidationPoint:
    """One shock: the move at which maintenance margin reaches equity (None if not within the
    range searched), with equity and maintenance margin there (USD)."""

    shock: str                     # "BTC index down", "vol up", ...
    underlying: str | None         # None for the vol shift (every option's vol moves)
    kind: str                      # "index" (relative move) or "vol" (absolute shift, 0.10 = 10 points)
    direction: str                 # "down" or "up"
    move: float | None
    searched_to: float
    equity_usd: float | None
    maintenance_margin_usd: float | None
    status: str                    # "reached", "not reached", "already below maintenance"


@dataclass(frozen=True)
class Liquidation:
    """Distance to liquidation of a book under one model, for a given equity."""

    model: str
    equity_usd: float
    maintenance_margin_usd: float
    points: tuple[LiquidationPoint, ...]
    #: what the search evaluated, per shock family ("BTC index", "vol"): (move, equity, MM) rows
    curves: Mapping[str, tuple[tuple[float, float, float], ...]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(p) for p in self.points],
                            columns=["shock", "underlying", "kind", "direction", "move", "searched_to",
                                     "equity_usd", "maintenance_margin_usd", "status"])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "equity_usd": self.equity_usd,
                "maintenance_margin_usd": self.maintenance_margin_usd,
                "points": [asdict(p) for p in self.points],
                "curves": {k: [list(r) for r in v] for k, v in self.curves.items()}}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


class Revaluer:
    """The book at a moved market: P&L in USD and the model's margins there."""

    def __init__(self, book: Portfolio, market: MarketSnapshot, model: MarginModel) -> None:
        self.book, self.market, self.model = book, market, model
        self.instruments = book.instruments
        self.names = book.names
        self.x = book.quantities
        self.inputs = market.pricing_inputs(self.instruments)
        self.rows = market.rows.loc[self.names].copy() if self.names else market.rows.iloc[:0].copy()
        self.underlying = np.array([i.underlying for i in self.instruments], dtype=object)
        inp = self.inputs
        self.strike = np.where(inp.is_option, inp.strike, 1.0)
        self.base_option_usd = black76_price(inp.forward, self.strike, inp.t,
                                             np.where(inp.is_option, inp.sigma, 0.0), inp.is_call)

    def state(self, moves: Mapping[str, float], vol_shift: float = 0.0) -> tuple[float, float, float]:
        """(book P&L in USD, maintenance margin in USD, initial margin in USD) with each
        underlying's index and forwards moved by ``moves[u]`` (relative) and every option's vol
        shifted by ``vol_shift`` (absolute)."""
        inp = self.inputs
        factor = np.array([1.0 + moves.get(u, 0.0) for u in self.underlying], dtype=float)
        fwd1 = inp.forward * factor
        idx1 = inp.index * factor
        sigma1 = np.where(inp.is_option, inp.sigma + vol_shift, 0.0)
        opt_usd = black76_price(fwd1, self.strike, inp.t, sigma1, inp.is_call)
        level0 = np.where(inp.is_spot, inp.index, inp.forward)
        level1 = level0 * factor
        pnl_ccy = np.where(
            inp.is_option,
            np.where(inp.is_inverse, opt_usd / fwd1 - self.base_option_usd / inp.forward,
                     opt_usd - self.base_option_usd),
            np.where(inp.is_inverse, 1.0 - level0 / level1, level1 - level0))
        pnl_usd = float((self.x * pnl_ccy * np.where(inp.is_inverse, idx1, 1.0)).sum())
        result = self.model.bind(self.instruments, self._snapshot(moves, factor, fwd1, opt_usd, sigma1)
                                 ).evaluate(self.x)
        return pnl_usd, result.maintenance_margin_usd, result.initial_margin_usd

    def _snapshot(self, moves: Mapping[str, float], factor: np.ndarray, fwd1: np.ndarray,
                  opt_usd: np.ndarray, sigma1: np.ndarray) -> MarketSnapshot:
        inp = self.inputs
        rows = self.rows.copy()
        if len(rows):
            rows["underlying_price"] = rows["underlying_price"].to_numpy(float) * factor
            mark = rows["mark_price"].to_numpy(float)
            # an option's mark moves by its model value's change, so no move is today's snapshot
            change = np.where(inp.is_inverse, opt_usd / fwd1 - self.base_option_usd / inp.forward,
                              opt_usd - self.base_option_usd)
            rows["mark_price"] = np.where(inp.is_option, np.maximum(mark + change, 0.0), mark * factor)
            rows["mark_iv"] = np.where(inp.is_option, 100.0 * sigma1, rows["mark_iv"].to_numpy(float))
        index = {u: px * (1.0 + moves.get(u, 0.0)) for u, px in self.market.index_prices.items()}
        return MarketSnapshot(self.market.valuation_time, index, rows, self.market.source)


def _search(h: Callable[[float], tuple[float, float, float]], largest: float
            ) -> tuple[float | None, list[tuple[float, float, float]]]:
    """The first move in (0, largest] where ``h(s)[0] > 0`` (a grid walk, then Brent's method in
    the bracket), and every point evaluated as (move, equity, MM)."""
    seen: list[tuple[float, float, float]] = []

    def g(s: float) -> float:
        gap, equity, mm = h(s)
        seen.append((s, equity, mm))
        return gap

    grid = np.geomspace(_FIRST_MOVE, largest, _GRID_POINTS) if largest > _FIRST_MOVE else np.array([largest])
    previous = 0.0
    for s in grid:
        if g(float(s)) > 0.0:
            root = brentq(g, previous, float(s), xtol=1e-12, rtol=4 * np.finfo(float).eps, maxiter=200)
            return float(root), seen
        previous = float(s)
    return None, seen


def liquidation(book: BookLike, market: MarketLike, model: ModelLike = "deribit-pm", *,
                equity: float, max_index_up: float = 3.0, max_index_down: float = 0.95,
                max_vol_up: float = 2.0) -> Liquidation:
    """Distance to liquidation for each underlying of the book (index down and up) and a parallel
    shift of every option's implied vol (down and up), given the account's ``equity`` (USD).
    Moves are relative for the index (-0.25: down 25%) and absolute for vol (0.10: up 10 vol
    points); the search goes up to ``max_index_up``, ``max_index_down``, ``max_vol_up`` and down
    to (almost) zero vol."""
    try:
        equity = float(equity)
    except (TypeError, ValueError):
        raise InvalidValue(f"equity is not a number ({equity!r})", field="equity", value=equity) from None
    if not math.isfinite(equity):
        raise InvalidValue("equity must be a finite amount of USD", field="equity", value=equity)
    for name, v, hi in (("max_index_up", max_index_up, 1e3), ("max_index_down", max_index_down, 1.0),
                        ("max_vol_up", max_vol_up, 1e2)):
        if not (0.0 < v < hi):
            raise InvalidValue(f"{name} must be above 0 and below {hi:g}, got {v!r}", field=name, value=v)
    portfolio = load_portfolio(book)
    rules = load_model(model)
    rev = Revaluer(portfolio, load_market(market), rules)
    _, mm0, _ = rev.state({})
    points: list[LiquidationPoint] = []
    curves: dict[str, tuple[tuple[float, float, float], ...]] = {}
    today = (0.0, equity, mm0)

    def run(label: str, underlying: str | None, kind: str, direction: str, largest: float,
            shift: Callable[[float], tuple[dict[str, float], float]]) -> list[tuple[float, float, float]]:
        sign = -1.0 if direction == "down" else 1.0
        if mm0 > equity:
            points.append(LiquidationPoint(label, underlying, kind, direction, 0.0, largest, equity,
                                           mm0, "already below maintenance"))
            return []

        def h(s: float) -> tuple[float, float, float]:
            moves, vol = shift(sign * s)
            pnl, mm, _ = rev.state(moves, vol)
            return mm - (equity + pnl), equity + pnl, mm

        root, seen = _search(h, largest)
        if root is None:
            points.append(LiquidationPoint(label, underlying, kind, direction, None, sign * largest,
                                           None, None, "not reached"))
        else:
            _, eq, mm = h(root)
            points.append(LiquidationPoint(label, underlying, kind, direction, sign * root,
                                           sign * largest, eq, mm, "reached"))
        return [(sign * s, e, m) for s, e, m in seen]

    for u in dict.fromkeys(i.underlying for i in rev.instruments):
        down = run(f"{u} index down", u, "index", "down", max_index_down, lambda m, u=u: ({u: m}, 0.0))
        up = run(f"{u} index up", u, "index", "up", max_index_up, lambda m, u=u: ({u: m}, 0.0))
        curves[f"{u} index"] = tuple(sorted([*down, today, *up]))
    inp = rev.inputs
    if inp.is_option.any():
        lowest = float(np.min(inp.sigma[inp.is_option]))
        down = run("vol down", None, "vol", "down", 0.999 * lowest, lambda v: ({}, v))
        up = run("vol up", None, "vol", "up", max_vol_up, lambda v: ({}, v))
        curves["vol"] = tuple(sorted([*down, today, *up]))
    return Liquidation(rules.name, equity, mm0, tuple(points), curves)


__all__ = ["Liquidation", "LiquidationPoint", "Revaluer", "liquidation"]
