"""The convex PM2 terms (``CONVEXITY``) as cvxpy expressions of a position variable ``x``.

Each builder returns the same number as its numpy counterpart in ``_pm2`` when ``x`` takes a
value, and is DCP-convex, so an optimizer can minimise ``sum of terms(x0 + t)``. The scenario
losses use the static-discount kink form::

    loss_s(x) = C[s] @ x + sum_e K[s, e] * pos(V[s, e] @ x),    K = damp (neg - pos) >= 0

(``scenario_loss_lp_data`` returns ``C, K, V`` for a direct LP build: one epigraph variable per
kinked (scenario, expiry) pair). Non-convex terms (skew loss, oracle contingency) have no builder.

The whole (non-convex) requirement enters sequential convex programming as ``requirement_model``:
the max over the near-worst scenario rows (each exact where convex, linearised exactly at the
iterate where not) and the forward contingency, plus the contingencies, exact (convex once the
oracle's confidence is frozen at the iterate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from marginopt.derive._component import DerivePM2Margin
from marginopt.derive._pm2 import (
    DeriveRiskArrays,
    confidence_charge,
    im_loss_factor,
    linearised_pnl_matrix,
    scenario_pnl,
    term_is_convex,
)

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



@dataclass(frozen=True)
class RequirementModel:
    """A convex model of the requirement around an account vector ``v``, exact at ``v``::

        model(y) = loss_factor * max(max_j row_j(y), fwd(y))
                   + abs_weight @ |y| + sum pos(-(short_groups @ y)) + linear @ y
        row_j(y) = rows[j] @ y + sum_e pos(kinks[j, e] @ y)
        fwd(y)   = sum_e max(0, fwd_up[e] @ y, fwd_down[e] @ y)

    ``rows``/``kinks``: the ``k`` near-worst scenarios at ``v``; a regular or tail scenario exact
    (its static-discount kink form, convex when ``term_is_convex``; else linearised exactly at
    ``v``, an upper bound of its concave kinks); a skew scenario as ``sum_e |ep_e|`` with the
    absolute values exact and each expiry's P&L ``ep_e`` linearised at ``v`` (its discount at
    ``v``'s sign);
    ``fwd``: the forward contingency, exact. The contingencies exact, their one non-convex
    feature (the options' oracle charge jumps when the perp crosses 0) frozen at ``v``'s side:
    ``|perp|`` and the oracle's gross notional in ``abs_weight``, naked shorts per (expiry,
    strike) in ``short_groups``, collateral haircuts and their oracle charge in ``linear``."""

    loss_factor: float
    rows: FloatArray          # (k, N)
    kinks: FloatArray         # (k, E, N), each kink's weight folded in (>= 0)
    fwd_up: FloatArray        # (E, N)
    fwd_down: FloatArray      # (E, N)
    abs_weight: FloatArray    # (N,) >= 0
    short_groups: FloatArray  # (G, N), scaled by the option contingency's percent x spot
    linear: FloatArray        # (N,)

    def __call__(self, y: FloatArray) -> float:
        y = np.asarray(y, dtype=float)
        rows = self.rows @ y + np.maximum(self.kinks @ y, 0.0).sum(axis=1)
        fwd = np.maximum(0.0, np.maximum(self.fwd_up @ y, self.fwd_down @ y)).sum()
        return float(self.loss_factor * max(rows.max(), fwd) + self.abs_weight @ np.abs(y)
                     + np.maximum(0.0, -(self.short_groups @ y)).sum() + self.linear @ y)


def requirement_model(v: FloatArray, arrays: DeriveRiskArrays, k: int | None, *, initial: bool
                      ) -> RequirementModel:
    """The ``RequirementModel`` of the ``k`` near-worst scenarios at ``v`` (the worst first, then
    by loss at ``v``; None or more than there are: every scenario). ``model(v)`` is the
    requirement at ``v`` (each row is its scenario's loss where it is exact, and agrees with it
    at ``v`` where linearised: ``linearised_pnl_matrix`` is exact for every ``y`` whose expiry
    values and skew expiry P&Ls keep their signs at ``v``)."""
    v = np.asarray(v, dtype=float)
    S, E, N = arrays.expiry_value.shape
    k = S if k is None else min(k, S)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    p = arrays.params
    o = p.other
    pnl = scenario_pnl(v, arrays)
    order = np.argsort(pnl, kind="stable")[:k]   # the worst first (np.argmin's row)
    rows = -linearised_pnl_matrix(arrays, v)[order]
    kinks = np.zeros((k, E, N))
    kinds = np.asarray(arrays.kinds)[order]
    # a skew row's loss is sum_e |ep_e| - linear_pnl @ y: the absolute value kept exact
    # (|z| = 2 pos(z) - z), each ep_e linearised inside it (its static discount at v's sign)
    skew = np.flatnonzero(arrays.is_skew[order])
    if skew.size:
        s_rows = order[skew]
        vals = arrays.expiry_value[s_rows] @ v  # (s, E)
        disc = np.where(vals >= 0.0, arrays.static_pos, arrays.static_neg)
        a = arrays.dampening[s_rows][:, None, None] * (
            disc[:, :, None] * arrays.expiry_value[s_rows] - arrays.expiry_mark[None, :, :])
        rows[skew] = -arrays.linear_pnl[s_rows] - a.sum(axis=1)
        kinks[skew] = 2.0 * a
    for kind in ("regular", "tail"):
        pick = np.flatnonzero(kinds == kind)
        if not pick.size or not term_is_convex(f"worst_{kind}_loss", arrays):
            continue
        C, K, V = scenario_loss_lp_data(arrays, kind)
        at = np.searchsorted(arrays.indices(kind), order[pick])
        rows[pick] = C[at]
        kinks[pick] = K[at][:, :, None] * V[at]
    # the contingencies, as ``_pm2._margin`` charges them
    if initial:
        factor = im_loss_factor(arrays, p)
        perp_pct = o.mm_perp_percent + o.im_perp_percent
        opt_pct = o.mm_option_percent + o.im_option_percent
        haircut = arrays.collateral_mm_haircut + arrays.collateral_im_haircut
    else:
        factor = p.margin.mm_loss_factor
        perp_pct, opt_pct = o.mm_perp_percent, o.mm_option_percent
        haircut = arrays.collateral_mm_haircut
    weight = np.zeros(N)
    weight[arrays.perp_col] = perp_pct * arrays.spot
    linear = np.zeros(N)
    linear[arrays.collateral_cols] = arrays.collateral_value * np.asarray(haircut, dtype=float)
    if initial:  # the oracle charge
        # the perp's own charge is |perp| at the perp's confidence: exact on both sides of 0
        held = min(arrays.spot_confidence, arrays.perp_confidence)
        weight[arrays.perp_col] += confidence_charge(held, arrays.spot, o)
        # the options' charge jumps when the perp crosses 0 (its confidence joins every
        # expiry's): frozen at v's side
        conf = held if v[arrays.perp_col] != 0 else arrays.spot_confidence
        weight += confidence_charge(np.minimum(arrays.expiry_confidence, conf), arrays.spot, o) \
            @ arrays.expiry_membership
        linear[arrays.collateral_cols] += confidence_charge(arrays.collateral_confidence,
                                                            arrays.collateral_value, o)
    f = arrays.basis_factor[:, None]
    return RequirementModel(float(factor), rows, kinks, -f * arrays.basis_up, -f * arrays.basis_down,
                            weight, opt_pct * arrays.spot * arrays.strike_groups, linear)


def component_model(comp: DerivePM2Margin, x: FloatArray, values: dict[str, np.ndarray] | None,
                    k: int | None) -> dict[str, Any]:
    """``comp``'s ``RequirementModel`` at pool positions ``x`` in the pool's coordinates (USD, the
    account's other columns held at their values), as the arrays of
    ``marginopt.rebalance._scp.ComponentModel``."""
    scale = float(values["scale"][0]) if values else 1.0
    m = requirement_model(comp.account(x), comp.arrays, k, initial=comp.initial)
    cols, base = comp.columns, comp.base
    lf = scale * m.loss_factor
    # the other columns (cash, collaterals) hold no option: no expiry value, basis, short group
    # or oracle gross notional reaches them; only the rows' linear parts and the haircuts do
    return {"consts": lf * (m.rows @ base), "grads": lf * m.rows[:, cols],
            "kinks": lf * m.kinks[:, :, cols], "fwd_up": lf * m.fwd_up[:, cols],
            "fwd_down": lf * m.fwd_down[:, cols], "abs_weight": scale * m.abs_weight[cols],
            "short_groups": scale * m.short_groups[:, cols],
            "offset": float(scale * (m.linear @ base + m.abs_weight @ np.abs(base)))}
