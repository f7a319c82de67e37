"""Attribution: standalone and incremental margin equal direct margin calls; marginal (Euler)
contributions add up to the margin where the model is positively homogeneous, agree with finite
differences of the calculator, and leave the residual the model's form implies where it is not."""

from __future__ import annotations

import numpy as np
import pytest

import marginopt
from marginopt import Portfolio, margin
from marginopt.explain import attribute
from marginopt.margins._components import RiskMatrix

from .conftest import MODELS, book_for

SEEDS = range(6)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_standalone_and_incremental_equal_direct_margin_calls(models, universe, derive_universe,
                                                             market, model, seed):
    book = book_for(model, universe, derive_universe, seed)
    rules = models[model]
    attr = attribute(book, market, rules)
    total = margin(book, market, rules).initial_margin_usd
    assert attr.initial_margin_usd == pytest.approx(total, rel=1e-12, abs=1e-9)
    for p in attr.positions:
        alone = margin(Portfolio({p.instrument: p.quantity}), market, rules).initial_margin_usd
        rest = Portfolio({k: v for k, v in book.positions.items() if k != p.instrument})
        without = margin(rest, market, rules).initial_margin_usd
        scale = max(total, 1.0)
        assert abs(p.standalone_usd - alone) <= 1e-9 * max(scale, abs(alone)), p.instrument
        assert abs(p.incremental_usd - (total - without)) <= 1e-9 * scale, p.instrument


def _worst_dampener_usd(book, market, rules) -> float:
    """The dampener of each risk matrix's worst scenario (what Euler leaves over), in USD."""
    bound = rules.bind(book.instruments, market)
    out = 0.0
    for pool in bound.pools:
        x = book.quantities[pool.columns]
        for comp in pool.initial:
            if isinstance(comp, RiskMatrix):
                v = comp.values()
                p = v["pnl"] @ x
                losses = np.maximum(-p, -comp.pnl_offset * p) - v["dampener"]
                if losses.max() > 0:
                    out += v["dampener"][int(np.argmax(losses))] * pool.usd_rate
    return out


@pytest.mark.parametrize("model", ["scenario-max", "scenario-es", "covariance-var", "deribit-pm"])
@pytest.mark.parametrize("seed", SEEDS)
def test_euler_contributions_add_up_on_homogeneous_models(models, universe, market, model, seed):
    rules = models[model]
    book = book_for(model, universe, [], seed, size=10)
    attr = attribute(book, market, rules)
    damp = _worst_dampener_usd(book, market, rules) if model == "deribit-pm" else 0.0
    total = attr.initial_margin_usd
    if damp == 0.0:
        # positively homogeneous at this book: the contributions are the margin (Euler)
        assert abs(attr.marginal_total_usd - total) <= 1e-9 * total
        assert attr.homogeneous and abs(attr.residual_usd) <= 1e-9 * total
    else:
        # an extended-table scenario is the worst: its fixed dampener is the residual
        assert attr.residual_usd == pytest.approx(-damp, rel=1e-9)
        assert not attr.homogeneous
        assert any("dampened" in c.note for c in attr.components)
    for c in attr.components:
        assert c.residual_usd == pytest.approx(c.value_usd - c.marginal_sum_usd, abs=1e-9 * max(total, 1))


def test_options_only_standard_margin_is_homogeneous(models, universe, market):
    options = [n for n in universe if n.endswith(("-C", "-P"))]
    for seed in SEEDS:
        book = book_for("deribit-standard", options, [], seed, size=12)
        attr = attribute(book, market, models["deribit-standard"])
        assert abs(attr.marginal_total_usd - attr.initial_margin_usd) <= 1e-9 * attr.initial_margin_usd


@pytest.mark.parametrize("model", ["deribit-pm", "deribit-standard", "covariance-var", "scenario-es",
                                   "covariance-var-variance"])
def test_marginal_contributions_match_finite_differences(models, universe, market, model):
    """q_i dM/dq_i from the components' structure against central differences of the calculator."""
    rules = models[model]
    book = book_for(model, universe, [], 42, size=10)
    attr = attribute(book, market, rules)
    bound = rules.bind(book.instruments, market)
    x = book.quantities
    for j, p in enumerate(attr.positions):
        h = 1e-6 * max(abs(x[j]), 1.0)
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        fd = x[j] * (bound.initial_margin_usd(up) - bound.initial_margin_usd(down)) / (2 * h)
        assert p.marginal_usd == pytest.approx(fd, rel=1e-5, abs=1e-6 * attr.initial_margin_usd), p.instrument


def test_residual_of_non_homogeneous_components(models, universe, market):
    # futures under standard margin: a|q| + b q^2; q * derivative = a|q| + 2 b q^2
    book = Portfolio({"BTC-27DEC24": 7.5, "BTC-PERPETUAL": -3.0, "ETH-27SEP24": 40.0,
                      "BTC-27SEP24-55000-P": -2.0})
    attr = attribute(book, market, models["deribit-standard"])
    bound = models["deribit-standard"].bind(book.instruments, market)
    expected = {}
    for pool in bound.pools:
        comp = next(c for c in pool.initial if c.name == "futures")
        x = book.quantities[pool.columns]
        expected[pool.name] = -float(comp.values()["quadratic"] @ (x * x)) * pool.usd_rate
    for c in attr.components:
        if c.component == "futures":
            assert c.residual_usd == pytest.approx(expected[c.pool], rel=1e-9)
            assert not c.homogeneous and "quadratic" in c.note
        else:
            assert c.homogeneous
    # the variance form of VaR is 2-homogeneous: contributions are twice the value
    book = book_for("covariance-var", universe, [], 3, size=8)
    var = attribute(book, market, models["covariance-var-variance"])
    assert var.marginal_total_usd == pytest.approx(2 * var.initial_margin_usd, rel=1e-9)
    assert var.residual_usd == pytest.approx(-var.initial_margin_usd, rel=1e-9)


def test_derive_uses_its_own_linearisation(models, derive_universe, market):
    book = book_for("derive-pm2", [], derive_universe, 1)
    attr = attribute(book, market, models["derive-pm2"])
    (comp,) = attr.components
    assert comp.method == "component's own linearisation"
    assert comp.residual_usd == pytest.approx(comp.value_usd - comp.marginal_sum_usd, abs=1e-9)


def test_frames_and_dict(models, universe, market):
    book = book_for("deribit-pm", universe, [], 2, size=6)
    attr = attribute(book, market, "deribit-pm")
    frame = attr.to_frame()
    assert list(frame["marginal_usd"]) == sorted(frame["marginal_usd"], reverse=True)
    assert set(frame["instrument"]) == set(book.names)
    pools = attr.pools_frame()
    assert pools["value_usd"].sum() == pytest.approx(attr.initial_margin_usd, rel=1e-12)
    matrix = attr.matrix_frame()
    assert matrix.to_numpy().sum() == pytest.approx(attr.marginal_total_usd, rel=1e-12)
    d = attr.to_dict()
    assert len(d["positions"]) == len(book) and d["model"] == "deribit-pm"
    with pytest.raises(AttributeError):
        attr.model = "x"  # frozen
    assert isinstance(marginopt.attribute, type(attribute))


def test_dampened_worst_scenario_is_the_residual(market):
    """A large short linear put: the -66% extended move is the worst scenario, and its fixed
    dampener is exactly what the Euler contributions leave over."""
    rules = marginopt.load_model("deribit-pm")
    for q in (-100.0, -60.0):
        book = Portfolio({"BTC_USDC-27SEP24-55000-P": q, "BTC_USDC-PERPETUAL": 5.0})
        damp = _worst_dampener_usd(book, market, rules)
        assert damp > 0
        attr = attribute(book, market, rules)
        assert attr.residual_usd == pytest.approx(-damp, rel=1e-9)
        assert attr.marginal_total_usd == pytest.approx(attr.initial_margin_usd + damp, rel=1e-9)
        (worst,) = [c for c in attr.components if c.component == "worst_case"]
        assert not worst.homogeneous and "extended" in worst.note
