"""Black-76 on the forward, vectorised over numpy arrays.

Linear (USD-settled) figures are per one coin of underlying, in USD. Inverse (coin-settled)
figures are the USD figures converted at the forward: ``price_coin = price_usd / F``; the inverse
delta is the coin exposure ``F * d(price_coin)/dF = delta_usd - price_coin`` (Deribit's convention),
and the inverse gamma is ``d(delta_coin)/dF``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price and sensitivities; vega is per 1.00 of volatility (divide by 100 for a vol point),
    theta is the value change per year of calendar time."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray


def _d1_terms(forward, strike, t, sigma):
    sd = sigma * np.sqrt(np.maximum(t, 0.0))
    live = sd > 0.0
    safe_sd = np.where(live, sd, 1.0)
    d1 = (np.log(forward / strike) + 0.5 * safe_sd**2) / safe_sd
    return sd, live, safe_sd, d1


def black76_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> FloatArray:
    """Undiscounted-forward Black-76 price in USD per coin; zero vol or time gives intrinsic."""
    forward, strike, t, sigma, discount = (np.asarray(a, dtype=float) for a in
                                           (forward, strike, t, sigma, discount))
    sign = np.where(np.asarray(is_call, dtype=bool), 1.0, -1.0)
    sd, live, safe_sd, d1 = _d1_terms(forward, strike, t, sigma)
    d2 = d1 - safe_sd
    smooth = sign * (forward * ndtr(sign * d1) - strike * ndtr(sign * d2))
    intrinsic = np.maximum(sign * (forward - strike), 0.0)
    return discount * np.where(live, smooth, intrinsic)


def black76(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
    inverse: ArrayLike = False,
) -> Greeks:
    """Price, delta, gamma, vega and theta; ``inverse`` selects the coin-settled form per element."""
    forward, strike, t, sigma, discount = (np.asarray(a, dtype=float) for a in
                                           (forward, strike, t, sigma, discount))
    is_call = np.asarray(is_call, dtype=bool)
    inverse = np.asarray(inverse, dtype=bool)
    sign = np.where(is_call, 1.0, -1.0)
    sd, live, safe_sd, d1 = _d1_terms(forward, strike, t, sigma)
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1**2)
    sqrt_t = np.sqrt(np.maximum(t, 0.0))

    price = black76_price(forward, strike, t, sigma, is_call, discount)
    delta = discount * np.where(live, sign * ndtr(sign * d1),
                                np.where(sign * (forward - strike) > 0.0, sign, 0.0))
    gamma = np.where(live, discount * pdf / (forward * safe_sd), 0.0)
    vega = np.where(live, discount * forward * pdf * sqrt_t, 0.0)
    # With discount = exp(-r t), dV/d(calendar time) = r V - D F n(d1) sigma / (2 sqrt t).
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(t > 0.0, -np.log(discount) / np.where(t > 0.0, t, 1.0), 0.0)
        decay = np.where(live, discount * forward * pdf * sigma / (2.0 * np.where(live, sqrt_t, 1.0)), 0.0)
    theta = rate * price - decay

    if not inverse.any():
        return Greeks(price, delta, gamma, vega, theta)
    price_c = price / forward
    delta_c = delta - price_c
    gamma_c = (gamma - delta / forward + price / forward**2)
    return Greeks(
        np.where(inverse, price_c, price),
        np.where(inverse, delta_c, delta),
        np.where(inverse, gamma_c, gamma),
        np.where(inverse, vega / forward, vega),
        np.where(inverse, theta / forward, theta),
    )


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> FloatArray:
    """Black-76 implied volatility by vectorised bisection (robust, price in USD per coin)."""
    price = np.asarray(price, dtype=float)
    lo = np.full(np.broadcast(price, forward, strike, t).shape, 1e-6)
    hi = np.full_like(lo, 20.0)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        too_high = black76_price(forward, strike, t, mid, is_call, discount) > price
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
        if np.max(hi - lo) < tol:
            break
    return 0.5 * (lo + hi)
