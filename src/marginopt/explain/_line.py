"""Each margin component along trade directions, vectorised over many directions at once.

Every question the explain package answers is about the margin of the book moved along one
instrument: standalone (from zero to the position), incremental (from the book to the book without
it), capacity (from the book outwards). ``along`` evaluates a bound component at ``x + t_k e_{c_k}``
for many pairs ``(c_k, t_k)`` in one pass, using each built-in component's structure (a scenario
matrix moves by one column, a per-position charge by one term). A component marginopt does not know
(a user's registered rule) is evaluated by its own ``evaluate``, one direction at a time.

``gradient`` is a (sub)gradient of a component at ``x`` from its structure, and ``affine_pieces``
writes a piecewise-linear component along each direction as a maximum of affine functions of the
quantity traded (what makes capacity exact in one pass).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..margins._base import BoundComponent
from ..margins._components import (AbsExposure, CalendarSpreadCharge, ExpectedShortfall, FactorRisk,
                                   RiskMatrix, ShortCharge, SizeCharge)

#: temporaries of ``along`` are kept near this many float64 elements (a scenario matrix times many
#: directions would otherwise grow as scenarios x instruments)
_BLOCK_ELEMENTS = 2_000_000

#: how each component's derivative is obtained, by kind (``gradient``'s third value)
ANALYTIC = "analytic"
LINEARIZED = "component's own linearisation"
FINITE_DIFFERENCE = "finite difference (no analytic derivative)"


def _blocks(rows: int, k: int) -> list[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(rows, 1))
    return [slice(s, min(s + step, k)) for s in range(0, k, step)] or [slice(0, 0)]


def _rank_one(base: np.ndarray, matrix: np.ndarray, cols: np.ndarray, t: np.ndarray,
              reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``reduce(base[:, None] + matrix[:, cols] * t)`` by blocks of directions."""
    out = np.empty(cols.size)
    for sl in _blocks(base.size, cols.size):
        out[sl] = reduce(base[:, None] + matrix[:, cols[sl]] * t[None, sl])
    return out


def _es_of_losses(losses: np.ndarray, level: float) -> np.ndarray:
    """Expected shortfall per column of a (scenarios x K) loss matrix, floored at zero, as
    ``ExpectedShortfall.evaluate`` computes it."""
    s = losses.shape[0]
    tail = (1.0 - level) * s
    whole = int(np.floor(tail + 1e-12))
    ordered = -np.sort(-losses, axis=0)
    total = ordered[:whole].sum(axis=0)
    if whole < s:
        total = total + (tail - whole) * ordered[whole]
    return np.maximum(total / tail, 0.0)


def along(comp: BoundComponent, x: np.ndarray, cols: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``comp``'s value at ``x + t[k] * e[cols[k]]`` for each k (pool positions ``x``)."""
    x = np.asarray(x, dtype=float)
    cols = np.asarray(cols, dtype=np.intp)
    t = np.asarray(t, dtype=float)
    if isinstance(comp, RiskMatrix):
        v = comp.values()
        pnl, damp, k = v["pnl"], v["dampener"], comp.pnl_offset

        def worst(p: np.ndarray) -> np.ndarray:
            losses = np.maximum(-p, -k * p) - damp[:, None]
            return np.maximum(losses.max(axis=0, initial=0.0), 0.0)
        return _rank_one(pnl @ x, pnl, cols, t, worst)
    if isinstance(comp, AbsExposure):
        e = comp.values()["exposure"]
        return _rank_one(e @ x, e, cols, t, lambda m: np.abs(m).sum(axis=0))
    if isinstance(comp, SizeCharge):
        v = comp.values()
        a, b = v["linear"], v["quadratic"]
        y = x[cols] + t
        return comp.evaluate(x) - a[cols] * np.abs(x[cols]) - b[cols] * x[cols] ** 2 + a[cols] * np.abs(y) + b[cols] * y * y
    if isinstance(comp, ShortCharge):
        c = comp.values()["charge"]
        y = x[cols] + t
        return comp.evaluate(x) - c[cols] * np.maximum(-x[cols], 0.0) + c[cols] * np.maximum(-y, 0.0)
    if isinstance(comp, FactorRisk):
        r = comp.values()["root_exposure"]
        norm = comp.form == "norm"
        return _rank_one(r @ x, r, cols, t,
                         lambda m: np.sqrt((m * m).sum(axis=0)) if norm else (m * m).sum(axis=0))
    if isinstance(comp, ExpectedShortfall):
        pnl = comp.values()["pnl"]
        return _rank_one(pnl @ x, pnl, cols, t, lambda p: _es_of_losses(-p, comp.level))
    if isinstance(comp, CalendarSpreadCharge):
        d = comp.values()["delta"]
        return _rank_one(d @ x, d, cols, t, lambda m: np.minimum(np.maximum(m, 0.0).sum(axis=0),
                                                                 np.maximum(-m, 0.0).sum(axis=0)))
    # a component whose structure is not known here: its own evaluate, one direction at a time
    out = np.empty(cols.size)
    for k in range(cols.size):
        y = x.copy()
        y[cols[k]] += t[k]
        out[k] = comp.evaluate(y)
    return out


def structured(comp: BoundComponent) -> bool:
    """Whether ``along`` evaluates ``comp`` from its structure (vectorised over directions)."""
    return isinstance(comp, (RiskMatrix, AbsExposure, SizeCharge, ShortCharge, FactorRisk,
                             ExpectedShortfall, CalendarSpreadCharge))


def gradient(comp: BoundComponent, x: np.ndarray) -> tuple[float, np.ndarray, str]:
    """Value, a (sub)gradient per pool position at ``x``, and how the gradient was obtained.

    Risk matrix: the worst scenario's per-unit loss (its active branch: the loss, or the gain
    scaled by the P&L offset), zero where the floor at zero binds. Expected shortfall: the
    tail scenarios' average per-unit loss. Absolute exposures, size and short charges, factor
    risk: their closed forms. Non-convex components (calendar spread, Derive PM2) and user
    components: their own ``linearize`` when they have one, else central finite differences."""
    x = np.asarray(x, dtype=float)
    value = comp.evaluate(x)
    if isinstance(comp, RiskMatrix):
        v = comp.values()
        p = v["pnl"] @ x
        k = comp.pnl_offset
        losses = np.maximum(-p, -k * p) - v["dampener"]
        g = np.zeros_like(x)
        if losses.size and losses.max() > 0.0:
            s = int(np.argmax(losses))
            g = -v["pnl"][s] if p[s] <= 0.0 else -k * v["pnl"][s]
        return value, g, ANALYTIC
    if isinstance(comp, AbsExposure):
        e = comp.values()["exposure"]
        return value, np.sign(e @ x) @ e, ANALYTIC
    if isinstance(comp, SizeCharge):
        v = comp.values()
        return value, v["linear"] * np.sign(x) + 2.0 * v["quadratic"] * x, ANALYTIC
    if isinstance(comp, ShortCharge):
        return value, -comp.values()["charge"] * (x < 0.0), ANALYTIC
    if isinstance(comp, FactorRisk):
        r = comp.values()["root_exposure"]
        rx = r @ x
        if comp.form != "norm":
            return value, 2.0 * (r.T @ rx), ANALYTIC
        norm = float(np.linalg.norm(rx))
        return value, (r.T @ rx) / norm if norm > 0.0 else np.zeros_like(x), ANALYTIC
    if isinstance(comp, ExpectedShortfall):
        pnl = comp.values()["pnl"]
        losses = -(pnl @ x)
        s = losses.size
        tail = (1.0 - comp.level) * s
        whole = int(np.floor(tail + 1e-12))
        order = np.argsort(-losses, kind="stable")
        w = np.zeros(s)
        w[order[:whole]] = 1.0
        if whole < s:
            w[order[whole]] = tail - whole
        g = -(w @ pnl) / tail if value > 0.0 else np.zeros_like(x)
        return value, g, ANALYTIC
    try:
        lin_value, g = comp.linearize(x)
        return float(lin_value), np.asarray(g, dtype=float), LINEARIZED
    except TypeError:
        pass  # a convex user component without linearize: finite differences below
    g = np.empty_like(x)
    for j in range(x.size):
        h = 1e-6 * max(abs(x[j]), 1.0)
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        g[j] = (comp.evaluate(up) - comp.evaluate(down)) / (2.0 * h)
    return value, g, FINITE_DIFFERENCE


def affine_columns(comp: BoundComponent, cols: np.ndarray) -> np.ndarray:
    """Which directions ``affine_pieces`` can write as a maximum of affine pieces."""
    cols = np.asarray(cols, dtype=np.intp)
    if isinstance(comp, (RiskMatrix, ShortCharge)):
        return np.ones(cols.size, dtype=bool)
    if isinstance(comp, AbsExposure):
        return (comp.values()["exposure"][:, cols] != 0.0).sum(axis=0) <= 1
    if isinstance(comp, SizeCharge):
        return comp.values()["quadratic"][cols] == 0.0
    return np.zeros(cols.size, dtype=bool)


def affine_pieces(comp: BoundComponent, x: np.ndarray, cols: np.ndarray, side: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """``comp`` along ``x + side[k] * q * e[cols[k]]`` for ``q >= 0`` as ``max_a alpha[a, k] +
    beta[a, k] q`` (exact), or None when it is not such a maximum (a quadratic size charge,
    expected shortfall, factor risk, a non-convex or unknown component, or an exposure that moves
    several groups at once)."""
    x = np.asarray(x, dtype=float)
    cols = np.asarray(cols, dtype=np.intp)
    side = np.asarray(side, dtype=float)
    if isinstance(comp, RiskMatrix):
        v = comp.values()
        pnl, damp, k = v["pnl"], v["dampener"], comp.pnl_offset
        p = (pnl @ x)[:, None]
        dp = pnl[:, cols] * side[None, :]
        alpha = np.vstack([np.broadcast_to(-p - damp[:, None], dp.shape),
                           np.broadcast_to(-k * p - damp[:, None], dp.shape), np.zeros((1, cols.size))])
        beta = np.vstack([-dp, -k * dp, np.zeros((1, cols.size))])
        return alpha, beta
    if isinstance(comp, AbsExposure):
        e = comp.values()["exposure"]
        moved = e[:, cols] != 0.0
        if np.any(moved.sum(axis=0) > 1):
            return None
        ex = e @ x
        g = np.argmax(moved, axis=0)   # the group each direction moves (any, where none)
        has = moved.any(axis=0)
        eg = np.where(has, ex[g], 0.0)
        slope = np.where(has, e[g, cols], 0.0) * side
        rest = np.abs(ex).sum() - np.abs(eg)
        return np.vstack([rest + eg, rest - eg]), np.vstack([slope, -slope])
    if isinstance(comp, SizeCharge):
        v = comp.values()
        if np.any(v["quadratic"][cols]):
            return None
        a = v["linear"][cols]
        rest = comp.evaluate(x) - a * np.abs(x[cols])
        return np.vstack([rest + a * x[cols], rest - a * x[cols]]), np.vstack([a * side, -a * side])
    if isinstance(comp, ShortCharge):
        c = comp.values()["charge"][cols]
        rest = comp.evaluate(x) - c * np.maximum(-x[cols], 0.0)
        return np.vstack([rest, rest - c * x[cols]]), np.vstack([np.zeros(cols.size), -c * side])
    return None


__all__ = ["ANALYTIC", "FINITE_DIFFERENCE", "LINEARIZED", "affine_columns", "affine_pieces", "along", "gradient",
           "structured"]
