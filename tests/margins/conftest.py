"""Every convex component of the shipped models, bound to the whole BTC + ETH universe of the
shared market (the property and cvxpy-agreement tests draw books over it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import marginopt
from marginopt import load_model, parse_instrument
from marginopt.margins import BoundComponent

POOLS = ("BTC", "BTC_USDC", "ETH", "ETH_USDC")
CASES = (
    [f"deribit-pm/{p}/initial/{c}" for p in POOLS for c in ("worst_case", "roll_shock")]
    + [f"deribit-standard/{p}/{w}/{c}" for p in POOLS for w in ("initial", "maintenance")
       for c in ("futures", "short_options")]
    + ["covariance-var/ALL/initial/var", "covariance-var-variance/ALL/initial/var",
       "scenario-max/ALL/initial/worst_case", "scenario-es/ALL/initial/expected_shortfall"]
)


@dataclass(frozen=True)
class Case:
    id: str
    component: BoundComponent
    book: np.ndarray  # the shared book's positions in this pool's columns


def _shipped(name: str) -> dict:
    return yaml.safe_load((Path(marginopt.__file__).parent / "models" / f"{name}.yaml").read_text())


def _models(names: list[str]) -> dict[str, marginopt.MarginModel]:
    variance = _shipped("covariance-var")
    variance["currencies"]["ALL"]["initial"][0] |= {"form": "variance", "variance_coefficient": 0.5}
    rng = np.random.default_rng(11)
    matrix = (rng.standard_t(4, (300, len(names))) * 0.03 * 60_000).tolist()  # USD per unit
    user = {}
    for key in ("scenario-max", "scenario-es"):
        data = _shipped(key)
        data["currencies"]["ALL"]["initial"][0] |= {"matrix": matrix, "instruments": names}
        user[key] = load_model(data)
    return {"deribit-pm": load_model("deribit-pm"), "deribit-standard": load_model("deribit-standard"),
            "covariance-var": load_model("covariance-var"), "covariance-var-variance": load_model(variance),
            **user}


@pytest.fixture(scope="session")
def convex_cases(market, universe, book) -> dict[str, Case]:
    instruments = [parse_instrument(n) for n in universe]
    x_book = np.array([book.quantity(n) for n in universe])
    out = {}
    for key, model in _models(universe).items():
        bound = model.bind(instruments, market)
        for pool in bound.pools:
            for which in ("initial", "maintenance"):
                for comp in getattr(pool, which) or []:
                    assert comp.convex
                    cid = f"{key}/{pool.name}/{which}/{comp.name}"
                    out[cid] = Case(cid, comp, x_book[pool.columns])
    assert sorted(out) == sorted(CASES)
    return out
