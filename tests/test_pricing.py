"""Black-76: parity, greeks against finite differences (linear and inverse), a textbook value,
implied-vol round trip."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from marginopt.pricing import black76, black76_price, implied_vol

RNG = np.random.default_rng(20240902)
N = 200
F = RNG.uniform(1_000, 100_000, N)
K = F * np.exp(RNG.uniform(-0.6, 0.6, N))
T = RNG.uniform(2 / 365, 2.0, N)
SIG = RNG.uniform(0.2, 1.5, N)
CALL = RNG.random(N) < 0.5


def test_put_call_parity_linear_and_inverse():
    for disc in (1.0, np.exp(-0.05 * T)):
        c = black76(F, K, T, SIG, True, disc)
        p = black76(F, K, T, SIG, False, disc)
        close(c.price - p.price, disc * (F - K), rtol=1e-10, atol=1e-9 * F)
        np.testing.assert_allclose(c.delta - p.delta, disc, rtol=1e-12)
        np.testing.assert_allclose(c.gamma, p.gamma, rtol=1e-12)
        np.testing.assert_allclose(c.vega, p.vega, rtol=1e-12)
        ci = black76(F, K, T, SIG, True, disc, inverse=True)
        pi = black76(F, K, T, SIG, False, disc, inverse=True)
        np.testing.assert_allclose(ci.price - pi.price, disc * (F - K) / F, rtol=1e-9, atol=1e-12)
        # coin delta of (call - put) = delta(D (1 - K/F)) * F = D K / F
        np.testing.assert_allclose(ci.delta - pi.delta, disc * K / F, rtol=1e-9, atol=1e-12)


def test_textbook_value_haug():
    """Haug, The Complete Guide to Option Pricing Formulas, Black-76 example: F = K = 19, T = 0.75,
    r = 10%, sigma = 28%: call = put = 1.7011."""
    disc = math.exp(-0.10 * 0.75)
    c = float(black76_price(19.0, 19.0, 0.75, 0.28, True, disc))
    p = float(black76_price(19.0, 19.0, 0.75, 0.28, False, disc))
    assert c == pytest.approx(1.7011, abs=5e-5)
    assert p == pytest.approx(c, rel=1e-14)
    # and the closed form to machine precision
    d1 = 0.5 * 0.28 * math.sqrt(0.75)
    assert c == pytest.approx(disc * 19.0 * (norm.cdf(d1) - norm.cdf(-d1)), rel=1e-13)


def test_textbook_value_hull():
    """Hull, Options, Futures and Other Derivatives: put on a futures, F = K = 20, T = 4 months,
    r = 9%, sigma = 25%: 1.12."""
    p = float(black76_price(20.0, 20.0, 4 / 12, 0.25, False, math.exp(-0.09 * 4 / 12)))
    assert p == pytest.approx(1.12, abs=5e-3)


def close(actual, desired, rtol, atol):
    """assert_allclose with an array ``atol`` (per-element absolute tolerance)."""
    actual, desired = np.broadcast_arrays(np.asarray(actual, float), np.asarray(desired, float))
    err = np.abs(actual - desired)
    bad = err > np.asarray(atol) + rtol * np.abs(desired)
    assert not bad.any(), f"{bad.sum()} mismatches, worst {err[bad].max():.3g}"


def _fd(fn, x, h):
    return (fn(x + h) - fn(x - h)) / (2 * h)


@pytest.mark.parametrize("rate", [0.0, 0.05])
@pytest.mark.parametrize("inverse", [False, True])
def test_greeks_match_finite_differences(rate, inverse):
    """Linear: delta = dV/dF, gamma = d2V/dF2, vega = dV/dsigma, theta = -dV/dT with D = exp(-rT).
    Inverse: price = V/F; delta = F d(V/F)/dF; gamma = d(delta_coin)/dF; vega = d(V/F)/dsigma;
    theta = -d(V/F)/dT (pricing.py's conventions)."""
    def price(f=F, t=T, s=SIG):
        v = black76_price(f, K, t, s, CALL, np.exp(-rate * t))
        return v / f if inverse else v

    g = black76(F, K, T, SIG, CALL, np.exp(-rate * T), inverse=inverse)
    np.testing.assert_allclose(g.price, price(), rtol=1e-13)
    h_f = 1e-4 * F
    d_price = _fd(lambda f: price(f=f), F, h_f)
    delta_fd = F * d_price if inverse else d_price
    np.testing.assert_allclose(g.delta, delta_fd, rtol=1e-6, atol=1e-8)
    delta_fn = (lambda f: black76(f, K, T, SIG, CALL, np.exp(-rate * T), inverse=True).delta) if inverse \
        else (lambda f: black76(f, K, T, SIG, CALL, np.exp(-rate * T)).delta)
    close(g.gamma, _fd(delta_fn, F, h_f), rtol=1e-5, atol=1e-12 / F)
    if not inverse:
        second = (price(f=F + h_f) - 2 * price() + price(f=F - h_f)) / h_f**2
        close(g.gamma, second, rtol=1e-3, atol=1e-9 / F)
    scale = 1.0 if inverse else F
    close(g.vega, _fd(lambda s: price(s=s), SIG, 1e-5), rtol=1e-6, atol=1e-9 * scale)
    theta_fd = -_fd(lambda t: price(t=t), T, 1e-6)
    close(g.theta, theta_fd, rtol=1e-5, atol=1e-9 * scale)


def test_intrinsic_at_zero_time_or_vol():
    f, k = np.array([100.0, 100.0, 100.0]), np.array([90.0, 110.0, 100.0])
    for t, s in ((0.0, 0.5), (0.5, 0.0)):
        c = black76(f, k, t, s, True)
        p = black76(f, k, t, s, False)
        np.testing.assert_array_equal(c.price, [10.0, 0.0, 0.0])
        np.testing.assert_array_equal(p.price, [0.0, 10.0, 0.0])
        np.testing.assert_array_equal(c.delta, [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(p.delta, [0.0, -1.0, 0.0])
        for g in (c, p):
            assert np.all(g.gamma == 0) and np.all(g.vega == 0) and np.all(g.theta == 0)
        ci = black76(f, k, t, s, True, inverse=True)
        np.testing.assert_allclose(ci.price, [0.1, 0.0, 0.0])
        np.testing.assert_allclose(ci.delta, [0.9, 0.0, 0.0])  # K/F for an ITM call


def test_vectorised_shapes_and_mixed_inverse():
    inv = RNG.random(N) < 0.5
    g = black76(F, K, T, SIG, CALL, inverse=inv)
    lin = black76(F, K, T, SIG, CALL)
    co = black76(F, K, T, SIG, CALL, inverse=True)
    for a, b, c in zip((g.price, g.delta, g.gamma, g.vega, g.theta),
                       (lin.price, lin.delta, lin.gamma, lin.vega, lin.theta),
                       (co.price, co.delta, co.gamma, co.vega, co.theta)):
        assert a.shape == (N,)
        np.testing.assert_array_equal(a, np.where(inv, c, b))


@pytest.mark.parametrize("disc", [1.0, 0.97])
def test_implied_vol_round_trip(disc):
    price = black76_price(F, K, T, SIG, CALL, disc)
    iv = implied_vol(price, F, K, T, CALL, disc)
    assert iv.shape == (N,)
    vega = black76(F, K, T, SIG, CALL, disc).vega
    ok = vega > 1e-8 * F  # where the price pins the vol
    np.testing.assert_allclose(iv[ok], SIG[ok], rtol=1e-8)
    close(black76_price(F, K, T, iv, CALL, disc), price, rtol=1e-9, atol=1e-9 * F)


def test_implied_vol_scalar():
    p = black76_price(60_000.0, 65_000.0, 0.25, 0.55, True)
    assert float(implied_vol(p, 60_000.0, 65_000.0, 0.25, True)) == pytest.approx(0.55, rel=1e-10)
