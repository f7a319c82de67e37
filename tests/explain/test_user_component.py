"""A component marginopt does not know (registered by this test, with no linearisation): the
attribution differentiates it by finite differences and says so, and capacity root-finds on its
own evaluate."""

from __future__ import annotations

from typing import Literal

import cvxpy as cp
import numpy as np
import pytest

from marginopt import Portfolio, load_model, margin
from marginopt.explain import attribute, capacity
from marginopt.explain._capacity import ROOT_CONVEX
from marginopt.explain._line import FINITE_DIFFERENCE
from marginopt.margins import BoundComponent, ComponentSpec, PoolContext, Term, register, unregister
from marginopt.scenarios import delta_in_margin_currency

from .conftest import shipped


class DeltaNorm(BoundComponent):
    """``rate * ||D x||_2`` over each expiry's delta."""

    cone = "soc"
    signed_values = frozenset({"delta"})

    def __init__(self, name: str, delta: np.ndarray, rate: float) -> None:
        self.name, self.delta, self.rate = name, delta, rate

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"delta": scale * self.rate * self.delta}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        return float(np.linalg.norm((values or self.values())["delta"] @ x))

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        return Term(cp.norm(params["delta"] @ x, 2))


class DeltaNormSpec(ComponentSpec):
    type: Literal["explain_toy_delta_norm"]
    implementation = DeltaNorm
    rate: float

    def bind(self, ctx: PoolContext) -> DeltaNorm:
        labels = [i.expiry_label for i in ctx.instruments]
        groups = sorted(set(labels))
        exposure = np.zeros((len(groups), len(labels)))
        exposure[[groups.index(lab) for lab in labels], np.arange(len(labels))] = \
            delta_in_margin_currency(ctx.inputs)
        return DeltaNorm(self.name, exposure, self.rate)


@pytest.fixture
def toy_model():
    register(DeltaNormSpec)
    data = shipped("deribit-pm")
    for rules in data["currencies"].values():
        rules["initial"].append({"type": "explain_toy_delta_norm", "name": "delta_norm", "rate": 0.05})
    data["name"] = "deribit-pm-plus-toy"
    yield load_model(data)
    unregister("explain_toy_delta_norm")


def test_attribution_and_capacity_of_an_unknown_component(toy_model, market):
    book = Portfolio({"BTC-27SEP24-55000-P": -4.0, "BTC-27DEC24": 1.5, "BTC-PERPETUAL": -0.7,
                      "ETH-27DEC24-3000-C": 30.0})
    attr = attribute(book, market, toy_model)
    toy = [c for c in attr.components if c.component == "delta_norm"]
    assert toy and all(c.method == FINITE_DIFFERENCE for c in toy)
    for c in toy:  # a norm is homogeneous: finite differences add up to it within their error
        assert c.marginal_sum_usd == pytest.approx(c.value_usd, rel=1e-6)
    for p in attr.positions:
        alone = margin(Portfolio({p.instrument: p.quantity}), market, toy_model).initial_margin_usd
        assert p.standalone_usd == pytest.approx(alone, rel=1e-12)
    im = attr.initial_margin_usd
    names = ["BTC-27SEP24", "ETH-PERPETUAL", "BTC-28MAR25-50000-P"]
    cap = capacity(book, market, toy_model, budget=1.3 * im, instruments=names)
    assert set(cap.method) == {ROOT_CONVEX}
    for name in names:
        j = cap.instruments.index(name)
        for side, q in ((1.0, cap.buy[j]), (-1.0, cap.sell[j])):
            at = margin(book.apply({name: side * q}), market, toy_model).initial_margin_usd
            assert at == pytest.approx(1.3 * im, rel=1e-8)
            assert margin(book.apply({name: side * q * (1 + 1e-6)}), market,
                          toy_model).initial_margin_usd > 1.3 * im
