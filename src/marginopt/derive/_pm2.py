"""Derive PM2 portfolio margin, vectorised, as per-unit arrays evaluable at any position vector.

Reproduces the exchange's published golden cases (docs/margin-methods.md section 2; every
scenario P&L, contingency, MM and IM to 1e-8 relative). Method: docs.derive.xyz (PM2) and the public
derivexyz/v2-core contracts (PMRMLib_2 / PMRM_2); where those and the case files disagree the case
files win (listed below).

Position vector ``x`` (columns of ``DeriveRiskArrays.columns``)::

    [ option_0 .. option_{n-1} | perp | collateral_0 .. collateral_{c-1} | cash ]

options in contracts, perp in contracts, collaterals in asset units, cash in USD.

Rules implemented
-----------------
* Marks: SVI volatility per expiry (log-moneyness clipped to +/- 4 sqrt(a + b sigma), total
  variance capped at 20), Black-76 on the expiry forward, discounted at the expiry rate floored
  at 0. Collateral value ``amount * price / stable price``; perp contributes its unrealised P&L
  and funding (a constant of the account; a trade at the mark adds none).
* Scenarios (regular, tail, skew), each ``(spot shock, vol direction, dampening)``:
  options re-priced on ``forward * shock`` with vol x (1 + up) (floored at ``MIN_VOL_EVAL_SHOCKED``)
  or x max(0, 1 - down), the multipliers ``range * (30d / max(dte, floor))^power``; skew
  scenarios keep the forward and scale each vol by ``max(0, 1 + clip(k cap / k*, -cap, cap))``.
  Each expiry's shocked value is statically discounted (x ``BASE_STATIC_DISCOUNT e^{-tau(r m + a)}``
  when >= 0, x ``min(1/discount, BASE_STATIC_DISCOUNT_NEG e^{tau(r m + a)})`` when < 0) before
  subtracting its mark; the difference is dampened. In skew scenarios each expiry contributes
  ``-|difference|``. Perp: ``position (shock - 1) perp price``; risk-cancelling collaterals:
  ``value (shock - 1)``; both dampened. Non-cancelling collaterals, cash: no scenario P&L.
* Forward (basis) contingency per expiry ``min(V(up) - V, V(down) - V, 0) (add + mult tau)``
  (vol unshocked, no static discount); it floors the worst scenario P&L.
* ``margin = MtM - factor * worst loss - contingencies``; factor ``MM_LOSS_FACTOR`` for MM,
  ``IM_LOSS_FACTOR + max(0, PEG_LOSS_THRESHOLD - stable) PEG_LOSS_FACTOR`` for IM.
* Contingencies (MM: MM percent; IM: MM + IM percent): perp ``|perp| spot``; options: naked
  shorts per (expiry, strike) ``max(0, -(sum of amounts at that strike)) spot``; base (collateral)
  haircuts ``value x haircut``; oracle (IM only) ``(1 - conf) CONF_MARGIN notional`` whenever
  ``conf < CONF_THRESHOLD``, for the perp (conf = min(spot, perp)), each expiry
  (conf = min(spot, perp if held, forward, rate, vol); notional ``sum |amount| spot``) and each
  collateral (conf = min(its own, spot)).

Where the case files disagree with the public code/docs (the case files win)
---------------------------------------------------------------------------
* SVI total variance is capped at 20 (lyra-utils SVI caps at 144; older releases 25): test_45.
* A skew scenario with a spot shock (rejected on-chain by ``setScenarios``; the Solidity test
  skips test_67 as invalid) is labelled ``<DIR>_SPOT_SHOCK`` by the reference model, which then
  ignores the spot move for options, uses the *signed* log-moneyness and the *ABS* cap
  parameters. Inferred from the one case (test_67); kept so the case reproduces.
* Confidence of collaterals excludes the perp confidence (on-chain ordering: it is read before
  the perp's confidence is folded in); the golden cases agree (test_33).

Not implemented
---------------
* Feeds with less than 30 minutes to expiry (the forward's fixed/variable split of the on-chain
  feed): no golden case covers it; such expiries are treated as a plain forward times the shock.
* Settlement of expired options, open-interest fees, liquidation, trusted-assessor MM-only
  checks (not margin), and the exchange's 18-decimal fixed-point rounding (float64 is used;
  agreement with the golden cases is ~1e-12).

Convexity (as a *cost*, i.e. the amount the term takes off the margin; ``CONVEXITY``)
----------------------------------------------------------------------------------------
* ``mtm``: linear.
* ``worst_regular_loss``/``worst_tail_loss``: ``max_s`` of ``C_s x + sum_e K_se pos(V_se x)``
  with ``K = damp (neg_disc - pos_disc) >= 0`` whenever every expiry's negative static discount
  is >= its positive one (true for the published parameters; checked per case by
  ``term_is_convex``): convex. Without the static discount kink it is the plain LP ``max -(P x)``.
* ``worst_skew_loss``: ``sum_e |g_e(x)|`` with ``g_e`` concave piecewise linear (the static
  discount kink inside the absolute value): not convex.
* ``forward_contingency``: ``sum_e f_e max(0, (M - U) x, (M - D) x)``: convex.
* ``perp_contingency`` (abs), ``option_contingency`` (pos of linear), ``base_contingency``
  (linear): convex.
* ``oracle_contingency``: jumps when the perp position crosses 0 (the perp's confidence then
  joins every expiry's): not convex (convex on each side of ``perp = 0``).
* ``worst_loss`` (max over everything incl. skew), hence ``maintenance_margin`` and
  ``initial_margin``: not convex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from marginopt.derive._case import DeriveCase
from marginopt.derive._params import (
    DeriveParams,
    MarginParams,
    OtherContingencyParams,
    SkewShockParams,
    VolShockParams,
)
from marginopt.pricing import black76_price

FloatArray = NDArray[np.float64]

SECONDS_PER_YEAR = 365.0 * 86400.0
_THIRTY_DAYS = 30.0 * 86400.0

#: Convexity in x of each term as a cost (see the module docstring). For the two scenario-loss
#: terms the claim holds when ``term_is_convex`` says so for the case (static discounts ordered).
CONVEXITY: dict[str, bool] = {
    "mtm": True,
    "worst_regular_loss": True,
    "worst_tail_loss": True,
    "worst_skew_loss": False,
    "forward_contingency": True,
    "perp_contingency": True,
    "option_contingency": True,
    "base_contingency": True,
    "oracle_contingency": False,
    "worst_loss": False,
    "maintenance_margin": False,
    "initial_margin": False,
}

KINDS = ("regular", "tail", "skew")


# --------------------------------------------------------------------------------------------
# Market pieces
# --------------------------------------------------------------------------------------------

def svi_vol(strike: ArrayLike, a: ArrayLike, b: ArrayLike, rho: ArrayLike, m: ArrayLike,
            sigma: ArrayLike, forward: ArrayLike, tau: ArrayLike, *,
            k_bound_scale: float = 4.0, max_total_variance: float = 20.0) -> FloatArray:
    """SVI implied vol ``sqrt(w(k) / tau)``, ``w = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``.

    ``k = ln(K / F)`` clipped to ``+/- k_bound_scale sqrt(a + b sigma)``; ``w`` capped at
    ``max_total_variance``. Not convex in anything the optimizer controls (market data)."""
    strike, a, b, rho, m, sigma, forward, tau = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (strike, a, b, rho, m, sigma, forward, tau)))
    bound = k_bound_scale * np.sqrt(np.maximum(a + b * sigma, 0.0))
    k = np.clip(np.log(strike / forward), -bound, bound)
    km = k - m
    w = np.minimum(a + b * (rho * km + np.sqrt(km * km + sigma * sigma)), max_total_variance)
    return np.sqrt(np.maximum(w, 0.0) / tau)


def vol_shock_multipliers(sec_to_expiry: ArrayLike, vs: VolShockParams
                          ) -> tuple[FloatArray, FloatArray]:
    """Vol-up and vol-down multipliers per expiry: ``1 + up m`` and ``max(0, 1 - down m)`` with
    ``m = (30d / max(dte, floor))^power``, the short-term power up to 30 days inclusive."""
    sec = np.asarray(sec_to_expiry, dtype=float)
    dte = np.maximum(sec, vs.dte_floor_days * 86400.0)
    power = np.where(sec <= _THIRTY_DAYS, vs.short_term_power, vs.long_term_power)
    mult = (_THIRTY_DAYS / dte) ** power
    return 1.0 + vs.vol_range_up * mult, np.maximum(0.0, 1.0 - vs.vol_range_down * mult)


def skew_vol_multiplier(log_moneyness: ArrayLike, tau: ArrayLike, sk: SkewShockParams, *,
                        linear_cap: ArrayLike, abs_moneyness: ArrayLike) -> FloatArray:
    """Skew-scenario vol multiplier ``max(0, 1 + clip(k cap / k*, -cap, cap))``.

    ``cap = CBASE sqrt(tau) + SCALE_CAP`` of the LINEAR or ABS set (``linear_cap`` selects, per
    element); ``k* = max(MIN_K_STAR, sqrt(tau) WIDTH (STATIC + SCALE sqrt(tau)))``; ``k`` is the
    log-moneyness, made absolute where ``abs_moneyness``."""
    k = np.asarray(log_moneyness, dtype=float)
    st = np.sqrt(np.asarray(tau, dtype=float))
    k = np.where(abs_moneyness, np.abs(k), k)
    cap = np.where(linear_cap, sk.linear_cbase * st + sk.linear_scale_cap,
                   sk.abs_cbase * st + sk.abs_scale_cap)
    k_star = np.maximum(sk.min_k_star,
                        st * sk.width_scale * (sk.vol_param_static + st * sk.vol_param_scale))
    ratio = k * cap / k_star
    bump = np.where(k >= 0.0, np.minimum(cap, ratio), np.maximum(-cap, ratio))
    return np.maximum(1.0 + bump, 0.0)


def static_discounts(sec_to_expiry: ArrayLike, rate: ArrayLike, mp: MarginParams
                     ) -> tuple[FloatArray, FloatArray]:
    """Static discount factors applied to a shocked expiry value: (for values >= 0, for < 0).

    ``rate`` is floored at 0 (the exchange does so on reading the feed); the negative-value factor
    is capped at the inverse of the expiry's discount factor."""
    tau = np.asarray(sec_to_expiry, dtype=float) / SECONDS_PER_YEAR
    r = np.maximum(np.asarray(rate, dtype=float), 0.0)
    pos = mp.base_static_discount * np.exp(-tau * (r * mp.long_rate_mult_scale
                                                   + mp.long_rate_add_scale))
    neg = mp.base_static_discount_neg * np.exp(tau * (r * mp.short_rate_mult_scale
                                                      + mp.short_rate_add_scale))
    return pos, np.minimum(np.exp(r * tau), neg)


def confidence_charge(confidence: ArrayLike, notional: ArrayLike,
                      other: OtherContingencyParams) -> FloatArray:
    """Oracle contingency ``(1 - conf) CONF_MARGIN notional`` where ``conf < CONF_THRESHOLD``."""
    conf = np.asarray(confidence, dtype=float)
    rate = np.where(conf < other.conf_threshold, (1.0 - conf) * other.conf_margin, 0.0)
    return rate * np.asarray(notional, dtype=float)


# --------------------------------------------------------------------------------------------
# Risk arrays
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeriveRiskArrays:
    """Per-unit inputs of every PM2 term for the position columns of one account.

    Scenario P&L of a position vector ``x`` (``scenario_pnl``)::

        v[s, e]  = expiry_value[s, e] @ x            (shocked value of expiry e's options)
        d[s, e]  = static_pos[e] if v >= 0 else static_neg[e]
        ep[s, e] = dampening[s] (d v - expiry_mark[e] @ x)     (-|ep| in skew scenarios)
        pnl[s]   = sum_e ep[s, e] + linear_pnl[s] @ x

    ``P`` is that map linearised at ``x0`` (exact at ``x0`` and wherever no expiry value, nor a
    skew scenario's expiry P&L, changes sign): ``pnl(x) = P @ x`` there.
    """

    columns: tuple[str, ...]
    column_kind: tuple[str, ...]
    n_options: int
    perp_col: int
    collateral_cols: slice
    cash_col: int
    x0: FloatArray
    # scenarios
    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    spot_shock: FloatArray
    dampening: FloatArray
    is_skew: NDArray[np.bool_]
    expiry_value: FloatArray  # (S, E, N)
    expiry_mark: FloatArray  # (E, N)
    static_pos: FloatArray  # (E,)
    static_neg: FloatArray  # (E,)
    linear_pnl: FloatArray  # (S, N)
    P: FloatArray  # (S, N) at x0
    # mark to market
    mark: FloatArray  # (N,)
    mtm_offset: float
    # forward contingency
    basis_up: FloatArray  # (E, N): V(up) - V per unit
    basis_down: FloatArray  # (E, N)
    basis_factor: FloatArray  # (E,)
    # other contingencies
    spot: float
    stable_price: float
    strike_groups: FloatArray  # (G, N) 0/1
    expiry_membership: FloatArray  # (E, N) 0/1
    expiry_confidence: FloatArray  # (E,) excluding the perp's
    spot_confidence: float
    perp_confidence: float
    collateral_value: FloatArray  # (C,) USD per unit
    collateral_confidence: FloatArray  # (C,)
    collateral_mm_haircut: FloatArray
    collateral_im_haircut: FloatArray
    params: DeriveParams
    # diagnostics
    expiry_sec: NDArray[np.int64]
    option_expiry_index: NDArray[np.intp]  # (n,) row of each option's expiry
    option_forward: FloatArray  # (n,)
    option_vol: FloatArray
    vol_up: FloatArray  # (E,)
    vol_down: FloatArray  # (E,)
    discount: FloatArray  # (E,)

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def indices(self, kind: str) -> NDArray[np.intp]:
        """Scenario row indices of one kind (``regular``/``tail``/``skew``)."""
        return np.flatnonzero(np.asarray(self.kinds) == kind)


def _ro(a: NDArray) -> NDArray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def build_risk_arrays(case: DeriveCase, params: DeriveParams | None = None) -> DeriveRiskArrays:
    """Per-unit scenario, mark and contingency arrays of ``case``'s positions (market frozen)."""
    p = params or case.params
    sc = p.scenarios
    n = len(case.option_amount)
    c = len(case.collateral_amount)
    N = n + c + 2
    perp_col, cash_col = n, n + 1 + c
    coll = slice(n + 1, n + 1 + c)

    # expiries: those holding options, in order of first appearance (as the exchange reports)
    uniq, first, inv = np.unique(case.option_expiry, return_index=True, return_inverse=True)
    appearance = np.argsort(first)
    rank = np.empty_like(appearance)
    rank[appearance] = np.arange(len(appearance))
    expiry_sec, opt_e = uniq[appearance], rank[np.asarray(inv).reshape(-1)]
    E = len(expiry_sec)
    order = np.argsort(case.feed_expiry)
    feed_row = order[np.searchsorted(case.feed_expiry, expiry_sec, sorter=order)]
    fwd_e = case.feed_forward[feed_row]
    rate_e = np.maximum(case.feed_rate[feed_row], 0.0)
    tau_e = expiry_sec / SECONDS_PER_YEAR
    disc_e = np.exp(-rate_e * tau_e)
    up_e, down_e = vol_shock_multipliers(expiry_sec, p.vol_shock)
    pos_e, neg_e = static_discounts(expiry_sec, rate_e, p.margin)

    svi = case.feed_svi[feed_row][opt_e] if n else np.zeros((0, 7))
    strike = case.option_strike
    vol = svi_vol(strike, *svi.T, k_bound_scale=p.svi.k_bound_scale,
                  max_total_variance=p.svi.max_total_variance) if case.option_vol is None \
        else np.asarray(case.option_vol, dtype=float)
    F, t, disc = fwd_e[opt_e], tau_e[opt_e], disc_e[opt_e]
    call = case.option_is_call

    # scenario x option grids of forward and vol, one Black-76 call for all of them
    shock = sc.spot_shock[:, None]
    direction = np.asarray(sc.vol_direction)[:, None]
    skew = np.asarray([k == "skew" for k in sc.kind])[:, None]
    flat = np.abs(sc.spot_shock - 1.0)[:, None] < 1e-15
    skew_mult = skew_vol_multiplier(np.log(strike / F), t, p.skew_shock,
                                    linear_cap=(direction == "LINEAR") & flat,
                                    abs_moneyness=(direction == "ABS") & flat)
    vol_up = np.maximum(p.vol_shock.min_vol_up_shock, vol * up_e[opt_e])
    vol_sv = np.where(skew, vol * skew_mult,
                      np.where(direction == "Up", vol_up,
                               np.where(direction == "Down", vol * down_e[opt_e], vol)))
    fwd_sv = F * np.where(skew, 1.0, shock)
    price_sv = black76_price(fwd_sv, strike, t, vol_sv, call, disc)  # (S, n)
    basis_shock = np.array([[1.0], [p.basis.scenario_spot_up], [p.basis.scenario_spot_down]])
    mark_opt, up_opt, down_opt = black76_price(F * basis_shock, strike, t, vol, call, disc)

    member = np.zeros((E, N))
    member[opt_e, np.arange(n)] = 1.0
    expiry_value = price_sv[:, None, :] * member[None, :, :n]
    expiry_value = np.concatenate([expiry_value, np.zeros((len(sc), E, N - n))], axis=2)
    expiry_mark = member * np.concatenate([mark_opt, np.zeros(N - n)])[None, :]

    value_c = case.collateral_price / case.stable_price
    linear_pnl = np.zeros((len(sc), N))
    move = (sc.spot_shock - 1.0) * sc.dampening
    linear_pnl[:, perp_col] = move * case.perp_price
    linear_pnl[:, coll] = move[:, None] * (value_c * case.collateral_risk_cancelling)[None, :]

    mark = np.zeros(N)
    mark[:n] = mark_opt
    mark[coll] = value_c
    mark[cash_col] = 1.0

    pad = np.zeros(N - n)
    basis_up = member * np.concatenate([up_opt - mark_opt, pad])[None, :]
    basis_down = member * np.concatenate([down_opt - mark_opt, pad])[None, :]
    basis_factor = p.basis.add_factor + p.basis.mult_factor * tau_e

    # naked-short netting groups: same expiry and strike (calls and puts together)
    keys = np.stack([case.option_expiry.astype(float), strike], axis=1) if n else np.zeros((0, 2))
    _, grp = np.unique(keys, axis=0, return_inverse=True)
    grp = np.asarray(grp).reshape(-1)
    G = int(grp.max()) + 1 if n else 0
    groups = np.zeros((G, N))
    groups[grp, np.arange(n)] = 1.0

    conf_e = np.minimum.reduce([
        np.full(E, case.spot_confidence),
        case.feed_forward_confidence[feed_row],
        case.feed_rate_confidence[feed_row],
        case.feed_vol_confidence[feed_row],
    ]) if E else np.zeros(0)

    x0 = np.concatenate([case.option_amount, [case.perp_position], case.collateral_amount,
                         [case.cash]])
    columns = (
        tuple(f"option:{int(e)}:{k:g}:{'C' if cl else 'P'}"
              for e, k, cl in zip(case.option_expiry, strike, call))
        + ("perp",) + tuple(f"collateral:{nm}" for nm in case.collateral_name) + ("cash",)
    )
    kinds = ("option",) * n + ("perp",) + ("collateral",) * c + ("cash",)

    arrays = DeriveRiskArrays(
        columns=columns, column_kind=kinds, n_options=n, perp_col=perp_col,
        collateral_cols=coll, cash_col=cash_col, x0=_ro(x0),
        labels=sc.label, kinds=sc.kind, spot_shock=_ro(sc.spot_shock.copy()),
        dampening=_ro(sc.dampening.copy()), is_skew=_ro(skew[:, 0].copy()),
        expiry_value=_ro(expiry_value), expiry_mark=_ro(expiry_mark),
        static_pos=_ro(pos_e), static_neg=_ro(neg_e), linear_pnl=_ro(linear_pnl),
        P=_ro(np.zeros((len(sc), N))),
        mark=_ro(mark), mtm_offset=float(case.unrealised_perp_pnl + case.unrealised_funding),
        basis_up=_ro(basis_up), basis_down=_ro(basis_down), basis_factor=_ro(basis_factor),
        spot=float(case.spot), stable_price=float(case.stable_price),
        strike_groups=_ro(groups), expiry_membership=_ro(member),
        expiry_confidence=_ro(conf_e), spot_confidence=float(case.spot_confidence),
        perp_confidence=float(case.perp_confidence),
        collateral_value=_ro(value_c.copy()),
        collateral_confidence=_ro(np.minimum(case.collateral_confidence, case.spot_confidence)),
        collateral_mm_haircut=_ro(case.collateral_mm_haircut.copy()),
        collateral_im_haircut=_ro(case.collateral_im_haircut.copy()),
        params=p, expiry_sec=_ro(expiry_sec), option_expiry_index=_ro(opt_e.astype(np.intp)),
        option_forward=_ro(F.copy()), option_vol=_ro(vol),
        vol_up=_ro(up_e), vol_down=_ro(down_e), discount=_ro(disc_e),
    )
    object.__setattr__(arrays, "P", _ro(linearised_pnl_matrix(arrays, x0)))
    return arrays


# --------------------------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------------------------

def _x(x: ArrayLike | None, arrays: DeriveRiskArrays) -> FloatArray:
    v = arrays.x0 if x is None else np.asarray(x, dtype=float)
    if v.shape != (arrays.n_columns,):
        raise ValueError(f"x must have shape ({arrays.n_columns},), got {v.shape}")
    return v


def _expiry_pnl(x: FloatArray, arrays: DeriveRiskArrays) -> tuple[FloatArray, FloatArray]:
    vals = arrays.expiry_value @ x  # (S, E)
    disc = np.where(vals >= 0.0, arrays.static_pos, arrays.static_neg)
    ep = arrays.dampening[:, None] * (disc * vals - (arrays.expiry_mark @ x)[None, :])
    return vals, ep


def scenario_pnl(x: ArrayLike | None, arrays: DeriveRiskArrays) -> FloatArray:
    """P&L of every scenario, in the order of ``arrays.labels`` (negative = loss).

    Regular/tail rows are concave in x when static discounts are ordered (see ``CONVEXITY``);
    skew rows are not."""
    v = _x(x, arrays)
    _, ep = _expiry_pnl(v, arrays)
    ep = np.where(arrays.is_skew[:, None], -np.abs(ep), ep)
    return ep.sum(axis=1) + arrays.linear_pnl @ v


def linearised_pnl_matrix(arrays: DeriveRiskArrays, x_ref: ArrayLike | None = None) -> FloatArray:
    """Per-unit P&L matrix ``P`` (S x N) with ``scenario_pnl(x) == P @ x`` for every x whose
    expiry values and skew expiry P&Ls have the signs they have at ``x_ref`` (default x0)."""
    v = _x(x_ref, arrays)
    vals, ep = _expiry_pnl(v, arrays)
    disc = np.where(vals >= 0.0, arrays.static_pos, arrays.static_neg)  # (S, E)
    sign = np.where(arrays.is_skew[:, None], np.where(ep >= 0.0, -1.0, 1.0), 1.0)  # (S, E)
    w = sign * arrays.dampening[:, None]  # (S, E)
    per_expiry = (w * disc)[:, :, None] * arrays.expiry_value - w[:, :, None] * arrays.expiry_mark
    return per_expiry.sum(axis=1) + arrays.linear_pnl


def worst_losses(x: ArrayLike | None, arrays: DeriveRiskArrays) -> dict[str, float]:
    """Worst loss (``-min P&L``) per scenario kind; NaN for a kind without scenarios.

    Convex for regular and tail (``term_is_convex``), not for skew."""
    loss = -scenario_pnl(x, arrays)
    kinds = np.asarray(arrays.kinds)
    return {k: float(loss[kinds == k].max()) if (kinds == k).any() else float("nan")
            for k in KINDS}


def forward_contingency(x: ArrayLike | None, arrays: DeriveRiskArrays) -> float:
    """Forward (basis) contingency as a loss: ``sum_e factor_e max(0, -(U-M)_e x, -(D-M)_e x)``.
    Convex (a non-negative sum of maxima of linear functions)."""
    v = _x(x, arrays)
    worst = np.maximum(0.0, np.maximum(-(arrays.basis_up @ v), -(arrays.basis_down @ v)))
    return float(arrays.basis_factor @ worst)


def mark_to_market(x: ArrayLike | None, arrays: DeriveRiskArrays) -> float:
    """Cash + option marks + collateral values + the perp's unrealised P&L and funding. Linear."""
    return float(arrays.mark @ _x(x, arrays) + arrays.mtm_offset)


def perp_contingency(x: ArrayLike | None, arrays: DeriveRiskArrays, percent: float) -> float:
    """``percent |perp| spot``. Convex."""
    return float(percent * abs(_x(x, arrays)[arrays.perp_col]) * arrays.spot)


def naked_shorts(x: ArrayLike | None, arrays: DeriveRiskArrays) -> float:
    """Contracts short net of longs at the same expiry and strike (calls and puts together)."""
    return float(np.maximum(0.0, -(arrays.strike_groups @ _x(x, arrays))).sum())


def option_contingency(x: ArrayLike | None, arrays: DeriveRiskArrays, percent: float) -> float:
    """``percent spot naked_shorts(x)``. Convex."""
    return float(percent * arrays.spot * naked_shorts(x, arrays))


def base_contingency(x: ArrayLike | None, arrays: DeriveRiskArrays, haircut: ArrayLike) -> float:
    """Collateral haircuts ``sum_c value_c x_c haircut_c``. Linear (convex)."""
    v = _x(x, arrays)[arrays.collateral_cols]
    return float((arrays.collateral_value * np.asarray(haircut, dtype=float)) @ v)


def oracle_contingency(x: ArrayLike | None, arrays: DeriveRiskArrays,
                       other: OtherContingencyParams | None = None) -> float:
    """Low-confidence charge (IM only) on the perp, each expiry's options and each collateral.

    Not convex: holding any perp folds the perp's confidence into every expiry's."""
    v = _x(x, arrays)
    o = other or arrays.params.other
    perp = v[arrays.perp_col]
    conf = min(arrays.spot_confidence, arrays.perp_confidence) if perp != 0 \
        else arrays.spot_confidence
    gross = arrays.expiry_membership @ np.abs(v)
    total = confidence_charge(conf, abs(perp) * arrays.spot, o)
    total = total + confidence_charge(np.minimum(arrays.expiry_confidence, conf),
                                      gross * arrays.spot, o).sum()
    total = total + confidence_charge(arrays.collateral_confidence,
                                      arrays.collateral_value * v[arrays.collateral_cols], o).sum()
    return float(total)


# --------------------------------------------------------------------------------------------
# Margins
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeriveMarginBreakdown:
    """One margin figure and its parts. Losses and contingencies are >= 0 charges;
    ``margin = mtm - loss_factor * worst_loss - contingencies`` (negative = under margin)."""

    kind: str  # "maintenance" | "initial"
    mtm: float
    option_mtm: float
    collateral_mtm: float
    worst_regular_loss: float
    worst_tail_loss: float
    worst_skew_loss: float
    forward_contingency: float
    worst_loss: float
    worst_scenario: str
    loss_factor: float
    perp_contingency: float
    option_contingency: float
    base_contingency: float
    oracle_contingency: float
    contingencies: float
    margin: float

    @property
    def requirement(self) -> float:
        """``loss_factor * worst_loss + contingencies`` = ``mtm - margin``: what the account's
        value must cover (marginopt's margin of the account's tradable positions)."""
        return self.loss_factor * self.worst_loss + self.contingencies


def im_loss_factor(arrays: DeriveRiskArrays, params: DeriveParams | None = None) -> float:
    """``IM_LOSS_FACTOR`` plus the stable-coin peg-loss add-on."""
    p = params or arrays.params
    o = p.other
    peg = max(0.0, o.peg_loss_threshold - arrays.stable_price) * o.peg_loss_factor
    return p.margin.im_loss_factor + peg


def _margin(x: ArrayLike | None, arrays: DeriveRiskArrays, params: DeriveParams | None,
            initial: bool) -> DeriveMarginBreakdown:
    p = params or arrays.params
    o = p.other
    v = _x(x, arrays)
    pnl = scenario_pnl(v, arrays)
    kinds = np.asarray(arrays.kinds)
    worst = {k: float(-pnl[kinds == k].min()) if (kinds == k).any() else float("nan")
             for k in KINDS}
    fwd = forward_contingency(v, arrays)
    i = int(np.argmin(pnl))
    worst_loss, worst_name = (float(-pnl[i]), arrays.labels[i]) if -pnl[i] >= fwd \
        else (fwd, "forward_contingency")
    if initial:
        factor = im_loss_factor(arrays, p)
        perp_pct = o.mm_perp_percent + o.im_perp_percent
        opt_pct = o.mm_option_percent + o.im_option_percent
        haircut = arrays.collateral_mm_haircut + arrays.collateral_im_haircut
        oracle = oracle_contingency(v, arrays, o)
    else:
        factor = p.margin.mm_loss_factor
        perp_pct, opt_pct = o.mm_perp_percent, o.mm_option_percent
        haircut = arrays.collateral_mm_haircut
        oracle = 0.0
    perp_c = perp_contingency(v, arrays, perp_pct)
    opt_c = option_contingency(v, arrays, opt_pct)
    base_c = base_contingency(v, arrays, haircut)
    conts = perp_c + opt_c + base_c + oracle
    mtm = mark_to_market(v, arrays)
    return DeriveMarginBreakdown(
        kind="initial" if initial else "maintenance",
        mtm=mtm,
        option_mtm=float(arrays.mark[: arrays.n_options] @ v[: arrays.n_options]),
        collateral_mtm=float(arrays.mark[arrays.collateral_cols] @ v[arrays.collateral_cols]),
        worst_regular_loss=worst["regular"], worst_tail_loss=worst["tail"],
        worst_skew_loss=worst["skew"], forward_contingency=fwd,
        worst_loss=worst_loss, worst_scenario=worst_name, loss_factor=factor,
        perp_contingency=perp_c, option_contingency=opt_c, base_contingency=base_c,
        oracle_contingency=oracle, contingencies=conts,
        margin=mtm - factor * worst_loss - conts,
    )


def maintenance_margin(x: ArrayLike | None, arrays: DeriveRiskArrays,
                       params: DeriveParams | None = None) -> DeriveMarginBreakdown:
    """PM2 maintenance margin of position vector ``x`` (None: the account's own x0).

    ``params`` (default: those the arrays were built with) supplies the loss factors and
    contingency percentages; scenario-shaping parameters are baked into ``arrays``.
    Not convex (skew scenarios)."""
    return _margin(x, arrays, params, initial=False)


def initial_margin(x: ArrayLike | None, arrays: DeriveRiskArrays,
                   params: DeriveParams | None = None) -> DeriveMarginBreakdown:
    """PM2 initial margin of ``x``: IM loss factor (with peg loss), MM + IM contingencies and the
    oracle contingency. Not convex (skew scenarios, oracle contingency)."""
    return _margin(x, arrays, params, initial=True)


def requirement_gradient(x: ArrayLike | None, arrays: DeriveRiskArrays,
                         params: DeriveParams | None = None, *, initial: bool) -> FloatArray:
    """A subgradient, per column, of ``requirement = loss_factor * worst_loss + contingencies``
    (``mtm - margin``) at ``x``: the worst scenario's P&L row at ``x`` (or the active branch of
    each expiry's forward contingency when that is the worst loss), plus the slopes of the
    contingencies (``|.|`` and ``pos`` take slope 0 at their kink). It is the gradient wherever
    the requirement is differentiable; at a kink it is the slope of one active piece. The
    oracle contingency's jump when the perp crosses 0 has no slope (the confidence in force at
    ``x`` is used)."""
    p = params or arrays.params
    o = p.other
    v = _x(x, arrays)
    g = np.zeros(arrays.n_columns)
    # worst loss (the same tie rule as _margin: a scenario wins ties with the forward contingency)
    pnl = scenario_pnl(v, arrays)
    fwd = forward_contingency(v, arrays)
    i = int(np.argmin(pnl))
    if -pnl[i] >= fwd:
        g -= linearised_pnl_matrix(arrays, v)[i]
    else:
        up, down = -(arrays.basis_up @ v), -(arrays.basis_down @ v)
        pick_up = (up >= down) & (up > 0.0)
        pick_down = ~pick_up & (down > 0.0)
        g -= (arrays.basis_factor * pick_up) @ arrays.basis_up
        g -= (arrays.basis_factor * pick_down) @ arrays.basis_down
    if initial:
        factor = im_loss_factor(arrays, p)
        perp_pct = o.mm_perp_percent + o.im_perp_percent
        opt_pct = o.mm_option_percent + o.im_option_percent
        haircut = arrays.collateral_mm_haircut + arrays.collateral_im_haircut
    else:
        factor = p.margin.mm_loss_factor
        perp_pct, opt_pct = o.mm_perp_percent, o.mm_option_percent
        haircut = arrays.collateral_mm_haircut
    g *= factor
    perp = v[arrays.perp_col]
    g[arrays.perp_col] += perp_pct * arrays.spot * np.sign(perp)
    short = (arrays.strike_groups @ v) < 0.0
    g -= opt_pct * arrays.spot * short.astype(float) @ arrays.strike_groups
    g[arrays.collateral_cols] += arrays.collateral_value * np.asarray(haircut, dtype=float)
    if initial:  # oracle contingency
        conf = min(arrays.spot_confidence, arrays.perp_confidence) if perp != 0 \
            else arrays.spot_confidence
        g[arrays.perp_col] += confidence_charge(conf, arrays.spot, o) * np.sign(perp)
        rate_e = confidence_charge(np.minimum(arrays.expiry_confidence, conf), arrays.spot, o)
        g += (rate_e @ arrays.expiry_membership) * np.sign(v)
        g[arrays.collateral_cols] += confidence_charge(arrays.collateral_confidence,
                                                       arrays.collateral_value, o)
    return g


def term_is_convex(term: str, arrays: DeriveRiskArrays) -> bool:
    """``CONVEXITY[term]``, refined for this account's market data: the regular/tail loss terms
    need every expiry's negative static discount >= its positive one."""
    if not CONVEXITY[term]:
        return False
    if term in ("worst_regular_loss", "worst_tail_loss"):
        rows = arrays.indices(term.split("_")[1])
        ordered = bool(np.all(arrays.static_neg >= arrays.static_pos))
        return bool(rows.size) and ordered and bool(np.all(arrays.dampening[rows] >= 0.0))
    return True
