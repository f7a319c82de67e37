"""The convex PM2 terms (``CONVEXITY``) as cvxpy expressions of a position variable ``x``.

Each builder returns the same number as its numpy counterpart in ``_pm2`` when ``x`` takes a
value, and is DCP-convex, so an optimizer can minimise ``sum of terms(x0 + t)``. The scenario
losses use the static-discount kink form::

    loss_s(x) = C[s] @ x + sum_e K[s, e] * pos(V[s, e] @ x),    K = damp (neg - pos) >= 0

(``scenario_loss_lp_data`` returns ``C, K, V`` for a direct LP build: one epigraph variable per
kinked (scenario, expiry) pair). Non-convex terms (skew loss, oracle contingency) have no builder.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from marginopt.derive._pm2 import DeriveRiskArrays, term_is_convex

FloatArray = NDArray[np.float64]


class NotConvexError(ValueError):
    """The requested term is not convex for this account's data."""


def scenario_loss_lp_data(arrays: DeriveRiskArrays, kind: str
                          ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(C, K, V)`` with ``loss = C @ x + sum_e K[:, e] pos(V[:, e] @ x)`` for the scenarios of
    ``kind`` (regular or tail): ``C`` (R, N), ``K`` (R, E), ``V`` (R, E, N)."""
    if kind not in ("regular", "tail"):
        raise NotConvexError(f"no kink form for {kind!r} scenarios")
    rows = arrays.indices(kind)
    d = arrays.dampening[rows]
    V = arrays.expiry_value[rows]
    neg, pos = arrays.static_neg, arrays.static_pos
    C = -arrays.linear_pnl[rows] - np.einsum(
        "r,ren->rn", d, neg[None, :, None] * V - arrays.expiry_mark[None, :, :])
    K = d[:, None] * (neg - pos)[None, :]
    return C, K, V


def cvx_worst_loss(x: cp.Expression, arrays: DeriveRiskArrays, kind: str) -> cp.Expression:
    """``max`` over the ``kind`` scenarios of their loss (``-P&L``); convex when
    ``term_is_convex(f"worst_{kind}_loss", arrays)``, else ``NotConvexError``."""
    term = f"worst_{kind}_loss"
    if kind not in ("regular", "tail") or not term_is_convex(term, arrays):
        raise NotConvexError(f"{term} is not convex for this account")
    C, K, V = scenario_loss_lp_data(arrays, kind)
    R, E, N = V.shape
    losses = C @ x
    if E:
        pick = sp.csr_matrix((K.ravel(), (np.repeat(np.arange(R), E), np.arange(R * E))),
                             shape=(R, R * E))
        losses = losses + pick @ cp.pos(V.reshape(R * E, N) @ x)
    return cp.max(losses)


def cvx_forward_contingency(x: cp.Expression, arrays: DeriveRiskArrays) -> cp.Expression:
    """``sum_e factor_e max(0, -(U - M)_e x, -(D - M)_e x)``."""
    if not len(arrays.basis_factor):
        return cp.Constant(0.0)
    worst = cp.maximum(-(arrays.basis_up @ x), -(arrays.basis_down @ x), 0.0)
    return arrays.basis_factor @ worst


def cvx_mark_to_market(x: cp.Expression, arrays: DeriveRiskArrays) -> cp.Expression:
    """Linear mark-to-market (a credit: enters the margin with a plus sign)."""
    return arrays.mark @ x + arrays.mtm_offset


def cvx_perp_contingency(x: cp.Expression, arrays: DeriveRiskArrays,
                         percent: float) -> cp.Expression:
    """``percent spot |perp|``."""
    return percent * arrays.spot * cp.abs(x[arrays.perp_col])


def cvx_option_contingency(x: cp.Expression, arrays: DeriveRiskArrays,
                           percent: float) -> cp.Expression:
    """``percent spot sum_groups pos(-(amounts at one expiry and strike))``."""
    if not arrays.strike_groups.shape[0]:
        return cp.Constant(0.0)
    return percent * arrays.spot * cp.sum(cp.pos(-(arrays.strike_groups @ x)))


def cvx_base_contingency(x: cp.Expression, arrays: DeriveRiskArrays,
                         haircut: FloatArray) -> cp.Expression:
    """Collateral haircuts, linear."""
    w = np.zeros(arrays.n_columns)
    w[arrays.collateral_cols] = arrays.collateral_value * np.asarray(haircut, dtype=float)
    return w @ x
