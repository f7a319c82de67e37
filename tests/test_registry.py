"""The component registry: a new component is one module registered from anywhere (here, this
test), its term says which cone it needs, and the optimizer picks its solver chain from that."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

import cvxpy as cp
import numpy as np
import pytest
import yaml

import marginopt as mo
from marginopt.errors import ModelError
from marginopt.margins import (BoundComponent, ComponentSpec, PoolContext, Term, register,
                              registered_components, unregister)
from marginopt.margins._model import _models_dir
from marginopt.scenarios import delta_in_margin_currency

from marginopt.cli import sample_paths

from .rebalance.conftest import assert_sound

MARGIN_PACKAGE = Path(mo.__file__).parent / "margins"


# --------------------------------------------------------------------------- a toy component
class DeltaNorm(BoundComponent):
    """``rate * ||D x||_2`` over each expiry's delta (a second-order cone)."""

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
    type: Literal["toy_delta_norm"]
    implementation = DeltaNorm
    rate: float

    def bind(self, ctx: PoolContext) -> DeltaNorm:
        labels = [i.expiry_label for i in ctx.instruments]
        groups = sorted(set(labels))
        exposure = np.zeros((len(groups), len(labels)))
        exposure[[groups.index(l) for l in labels], np.arange(len(labels))] = \
            delta_in_margin_currency(ctx.inputs)
        return DeltaNorm(self.name, exposure, self.rate)


@pytest.fixture(scope="module")
def sample():
    paths = sample_paths()
    return (mo.load_portfolio(paths["portfolio"]), mo.load_market(paths["market"]),
            mo.load_spec(paths["spec"]))


@pytest.fixture
def toy_registered():
    register(DeltaNormSpec)
    yield DeltaNormSpec
    unregister("toy_delta_norm")


def toy_model(rate: float = 0.05) -> mo.MarginModel:
    data = yaml.safe_load((_models_dir() / "deribit-pm.yaml").read_text())
    for rules in data["currencies"].values():
        rules["initial"].append({"type": "toy_delta_norm", "name": "delta_norm", "rate": rate})
    data["name"] = "deribit-pm+toy"
    return mo.load_model(data)


def test_a_component_registered_from_outside_the_package_margins_and_optimises(toy_registered, sample):
    book, market, spec = sample
    model = toy_model()
    before = mo.margin(book, market, model)
    assert before.by_underlying["BTC"].components["delta_norm"] > 0
    p = mo.optimize(book, market, model, spec)
    assert_sound(p, before)
    # the toy term declares a second-order cone: the SOCP chain solves it, not the LP one
    assert p.problem_class.startswith("SOCP")
    assert p.margin_saved_usd > 0


def test_an_unregistered_type_is_named_with_the_registered_ones():
    data = {"name": "m", "currencies": {"BTC": {"initial": [{"type": "toy_delta_norm", "name": "n",
                                                              "rate": 1.0}], "maintenance_factor": 1.0}}}
    with pytest.raises(ModelError, match="unknown component type 'toy_delta_norm'") as err:
        mo.load_model(data)
    assert "risk_matrix" in str(err.value) and err.value.field == "currencies.BTC.initial.0"


def test_registered_spec_errors_keep_their_location(toy_registered):
    data = {"name": "m", "currencies": {"BTC": {"initial": [{"type": "toy_delta_norm", "name": "n",
                                                              "rate": "x"}], "maintenance_factor": 1.0}}}
    with pytest.raises(ModelError) as err:
        mo.load_model(data)
    assert err.value.field == "currencies.BTC.initial.0.rate"


def test_a_model_round_trips_through_its_dump_with_every_component_key():
    model = mo.load_model("deribit-pm")
    again = mo.load_model(model, name="copy")
    assert again.currencies == model.currencies
    assert again.currencies["BTC"].initial[0].type == "risk_matrix"


def test_registration_rules(toy_registered):
    register(DeltaNormSpec)  # the same class again: a no-op

    class Other(DeltaNormSpec):
        type: Literal["toy_delta_norm"]

    with pytest.raises(ValueError, match="already registered"):
        register(Other)
    with pytest.raises(TypeError, match="cone"):
        class NoCone(BoundComponent):  # noqa: F841  (a term that does not say what it is)
            pass


def test_every_shipped_component_type_is_registered_derive_included():
    assert {"risk_matrix", "roll_shock", "futures_size", "short_option", "calendar_spread",
            "covariance_var", "scenario_max", "scenario_es", "derive_pm2"} <= set(registered_components())
    for path in _models_dir().glob("*.yaml"):
        rules = yaml.safe_load(path.read_text())["currencies"].values()
        for r in rules:
            for comp in [*r["initial"], *(r.get("maintenance") or [])]:
                assert comp["type"] in registered_components(), (path.name, comp["type"])


def test_the_margin_core_does_not_import_any_venue_package():
    """The core is imported by the venues (Derive's component subclasses its spec base), never
    the other way round: no cycle margin -> derive -> margin."""
    files = sorted(MARGIN_PACKAGE.glob("*.py"))
    assert len(files) >= 4, MARGIN_PACKAGE  # the folder is there: the check reads real files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert "derive" not in target, f"{path.name} imports {target}"
            elif isinstance(node, ast.Import):
                assert not any("derive" in a.name for a in node.names), path.name
