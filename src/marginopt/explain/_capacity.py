"""Capacity: per instrument and side, the largest quantity that can be traded before the book's
initial margin reaches the budget (the account's equity, or a given amount) or a spec limit
breaks.

Along one trade direction a piecewise-linear model (risk matrix, roll shock, per-position linear
charges: ``deribit-pm``, ``scenario-max``, an options-only or linear-size ``deribit-standard``) is
a maximum of affine functions of the quantity ``q``: ``M(q) = max_a alpha_a + beta_a q`` (the sum
of two such maxima is one over the pairs). The capacity is then exact and closed-form,
``min over beta_a > 0 of (budget - alpha_a) / beta_a``, computed for every instrument at once
from the scenario matrix. Other models (a quadratic size charge, covariance VaR, expected
shortfall, Derive PM2, a user component) are solved by a root-find on the margin along the
direction: a geometric bracket (1e-6 coin doubling up to the largest accepted quantity), then
bisection to the last floating-point step, vectorised over instruments. For a convex model the
crossing is unique, so the answer is exact; for a non-convex one it is the first crossing the
bracket finds (a dip of margin back under the budget between two bracket points is not seen), and
the result says so per instrument.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError, InvalidValue, UnknownInstrument
from ..instruments import Instrument, canonical_name, parse_instrument
from ..margins import BoundPool, load_model
from ..market import load_market
from ..portfolio import load_portfolio
from ..rebalance._data import bind_priced, foreign, limit_rows, unmargined
from ..rebalance._spec import RebalanceSpec, load_spec
from ..thresholds import MAX_ABS_QUANTITY
from ._common import BookLike, MarketLike, ModelLike, pool_initial_usd
from ._line import affine_columns, affine_pieces, along

EXACT = "piecewise-linear (exact, closed form)"
ROOT_CONVEX = "root-find on the calculator (convex: exact)"
ROOT_NONCONVEX = ("root-find on the calculator (not convex: the first crossing of a geometric "
                  "bracket, then bisection)")

#: the bracket of the root-find: from this many coin, doubling up to the largest accepted quantity
_FIRST_STEP = 1e-6


@dataclass(frozen=True)
class Capacity:
    """Per instrument: the largest buy and sell (coin) before the budget or a limit is reached,
    what stops each side, and how it was computed."""

    model: str
    budget_usd: float
    initial_margin_usd: float
    instruments: tuple[str, ...]
    position: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    buy_limited_by: tuple[str, ...]
    sell_limited_by: tuple[str, ...]
    method: tuple[str, ...]
    #: instruments asked for but left out, with the reason
    excluded: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("position", "buy", "sell"):
            arr = np.array(getattr(self, name), dtype=float)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def to_frame(self) -> pd.DataFrame:
        """One row per instrument: position, the largest buy and sell (coin; inf: no bound up to
        the largest accepted quantity), what limits each, and the method."""
        return pd.DataFrame({"instrument": list(self.instruments), "position": self.position,
                             "buy_max": self.buy, "buy_limited_by": list(self.buy_limited_by),
                             "sell_max": self.sell, "sell_limited_by": list(self.sell_limited_by),
                             "method": list(self.method)})

    def headroom_usd(self) -> float:
        return self.budget_usd - self.initial_margin_usd

    def to_dict(self) -> dict[str, Any]:
        rows = self.to_frame().replace({np.inf: None}).to_dict(orient="records")
        return {"model": self.model, "budget_usd": self.budget_usd,
                "initial_margin_usd": self.initial_margin_usd, "instruments": rows,
                "excluded": dict(self.excluded)}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


# --------------------------------------------------------------------------- margin capacity
def _pwl_capacity(pool: BoundPool, x: np.ndarray, local: np.ndarray, side: float,
                  budget: float) -> np.ndarray:
    """Closed-form capacity (coin) of directions every component writes as affine pieces."""
    alpha = np.zeros((1, local.size))
    beta = np.zeros((1, local.size))
    sides = np.full(local.size, side)
    for comp in pool.initial:
        pieces = affine_pieces(comp, x, local, sides)
        assert pieces is not None  # affine_columns said so
        a, b = pieces
        # the sum of two maxima of affine functions is the maximum over pairs of pieces
        alpha = (alpha[:, None, :] + a[None, :, :]).reshape(-1, local.size)
        beta = (beta[:, None, :] + b[None, :, :]).reshape(-1, local.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(beta > 0.0, (budget - alpha) / beta, np.inf)
    cap = np.maximum(reach.min(axis=0), 0.0)
    # beyond the largest quantity marginopt accepts, as the root-find's bracket: no bound
    return np.where(cap > MAX_ABS_QUANTITY, np.inf, cap)


def _root_capacity(pool: BoundPool, x: np.ndarray, local: np.ndarray, side: float,
                   budget: float) -> np.ndarray:
    """Capacity by a bracketed bisection on the pool's margin along each direction."""
    def over(idx: np.ndarray, q: np.ndarray) -> np.ndarray:
        value = np.zeros(idx.size)
        for comp in pool.initial:
            value += along(comp, x, local[idx], side * q)
        return value > budget

    k = local.size
    lo = np.zeros(k)
    hi = np.full(k, np.inf)
    active = np.arange(k)
    step, previous = _FIRST_STEP, 0.0
    while active.size and step <= MAX_ABS_QUANTITY:
        hit = over(active, np.full(active.size, step))
        hi[active[hit]] = step
        lo[active[hit]] = previous
        active = active[~hit]
        previous, step = step, 2.0 * step
    # bisection to the last floating-point step between a feasible and an infeasible quantity
    todo = np.flatnonzero(np.isfinite(hi))
    while todo.size:
        mid = 0.5 * (lo[todo] + hi[todo])
        done = (mid <= lo[todo]) | (mid >= hi[todo])
        todo, mid = todo[~done], mid[~done]
        if not todo.size:
            break
        hit = over(todo, mid)
        hi[todo[hit]] = mid[hit]
        lo[todo[~hit]] = mid[~hit]
    lo[~np.isfinite(hi)] = np.inf  # margin never reaches the budget up to the largest quantity
    return lo


# --------------------------------------------------------------------------- the universe
def _universe(book_names: list[str], wanted: Sequence[str] | None, market: Any, model: Any
              ) -> tuple[list[Instrument], dict[str, str], Any, Any]:
    held = set(book_names)
    listed = set(market.rows.index)
    excluded: dict[str, str] = {}
    if wanted is None:
        candidates = [n for n in market.instrument_names if n not in held]
    else:
        candidates = []
        for raw in wanted:
            name = canonical_name(raw)
            if name not in listed and name not in held:
                raise UnknownInstrument("instrument is not in the market snapshot",
                                        source=market.source, row=name, field="instruments")
            if name not in held and name not in candidates:
                candidates.append(name)
    keep = [parse_instrument(n) for n in book_names]
    for name in candidates:
        try:
            inst = parse_instrument(name)
        except InputError as exc:
            excluded[name] = exc.message
            continue
        why = foreign(inst, model) or unmargined(inst, model)
        if why:
            excluded[name] = why
        else:
            keep.append(inst)
    keep, bound, inputs = bind_priced(keep, held, excluded, market, model)
    return keep, excluded, bound, inputs


def capacity(book: BookLike, market: MarketLike, model: ModelLike = "deribit-pm", *,
             equity: float | None = None, budget: float | None = None,
             instruments: Sequence[str] | None = None,
             spec: RebalanceSpec | str | Mapping[str, Any] | None = None) -> Capacity:
    """For each instrument (the book's and ``instruments``; default every instrument of the
    snapshot the model can margin) and each side, the largest quantity that keeps initial margin
    at most ``budget`` (default ``equity``) and, with a ``spec``, inside its greek limits and
    trade bounds (``max_quantity``, ``max_quantity_by_instrument``, ``do_not_trade``)."""
    limit = budget if budget is not None else equity
    if limit is None:
        raise InvalidValue("capacity needs the account's equity or a margin budget (USD)",
                           field="budget")
    limit = float(limit)
    if not np.isfinite(limit) or limit < 0:
        raise InvalidValue(f"the margin budget must be a finite amount of USD at least 0, got {limit}",
                           field="budget" if budget is not None else "equity", value=limit)
    portfolio = load_portfolio(book)
    snap = load_market(market)
    rules = load_model(model)
    rules_spec = load_spec(spec) if spec is not None else None
    keep, excluded, bound, inputs = _universe(portfolio.names, instruments, snap, rules)
    names = [i.name for i in keep]
    x = np.array([portfolio.quantity(n) for n in names])
    n = len(names)
    pool_usd = pool_initial_usd(bound, x)
    total = float(pool_usd.sum())

    caps = {1.0: np.full(n, np.inf), -1.0: np.full(n, np.inf)}
    why = {1.0: np.full(n, "unbounded", dtype=object), -1.0: np.full(n, "unbounded", dtype=object)}
    method = np.full(n, EXACT, dtype=object)
    over_budget = total > limit
    for p, pool in enumerate(bound.pools):
        xp = x[pool.columns]
        local = np.arange(pool.columns.size)
        pool_budget = (limit - (total - pool_usd[p])) / pool.usd_rate
        convex = all(c.convex for c in pool.initial)
        # directions every component can write as affine pieces are exact in closed form; the
        # others (e.g. a future under a quadratic size charge) are root-found
        closed = np.logical_and.reduce([affine_columns(c, local) for c in pool.initial]
                                       + [np.ones(local.size, dtype=bool)])
        method[pool.columns[~closed]] = ROOT_CONVEX if convex else ROOT_NONCONVEX
        for side in (1.0, -1.0):
            cap = np.zeros(local.size)
            if not over_budget:
                if closed.any():
                    cap[closed] = _pwl_capacity(pool, xp, local[closed], side, pool_budget)
                if (~closed).any():
                    cap[~closed] = _root_capacity(pool, xp, local[~closed], side, pool_budget)
            caps[side][pool.columns] = cap
            why[side][pool.columns] = np.where(np.isfinite(cap), "over budget" if over_budget
                                               else "margin budget", "unbounded")

    if rules_spec is not None:
        _apply_spec(rules_spec, inputs, keep, x, caps, why)
    return Capacity(rules.name, limit, total, tuple(names), x, caps[1.0], caps[-1.0],
                    tuple(why[1.0]), tuple(why[-1.0]), tuple(method), excluded)


def _apply_spec(spec: RebalanceSpec, inputs: Any, keep: list[Instrument], x: np.ndarray,
                caps: dict[float, np.ndarray], why: dict[float, np.ndarray]) -> None:
    """Tighten each side by the spec's greek limits and trade bounds, naming what binds."""
    rows = limit_rows(spec, inputs, x)
    names = [i.name for i in keep]
    gx = rows.matrix @ x
    for side in (1.0, -1.0):
        if rows.names:
            slope = side * rows.matrix                                      # R x N
            with np.errstate(divide="ignore", invalid="ignore"):
                up = np.where(slope > 0, (rows.upper[:, None] - gx[:, None]) / slope, np.inf)
                down = np.where(slope < 0, (rows.lower[:, None] - gx[:, None]) / slope, np.inf)
            reach = np.maximum(np.minimum(up, down), 0.0)
            r = np.argmin(reach, axis=0)
            t = reach[r, np.arange(len(names))]
            tighter = t < caps[side]
            caps[side] = np.where(tighter, t, caps[side])
            why[side] = np.where(tighter, np.array([f"limit {nm}" for nm in rows.names], dtype=object)[r],
                                 why[side])
        bound = np.full(len(names), np.inf)
        label = np.full(len(names), "", dtype=object)
        tb = spec.trade_bounds
        if tb.max_quantity is not None:
            bound[:] = tb.max_quantity
            label[:] = "max_quantity"
        position = {n: j for j, n in enumerate(names)}
        for n, q in tb.max_quantity_by_instrument.items():
            j = position.get(canonical_name(n))
            if j is not None and q < bound[j]:
                bound[j], label[j] = q, "max_quantity_by_instrument"
        for n in spec.do_not_trade:
            j = position.get(n)
            if j is not None:
                bound[j], label[j] = 0.0, "do_not_trade"
        tighter = bound < caps[side]
        caps[side] = np.where(tighter, bound, caps[side])
        why[side] = np.where(tighter, label, why[side])


__all__ = ["Capacity", "EXACT", "ROOT_CONVEX", "ROOT_NONCONVEX", "capacity"]
