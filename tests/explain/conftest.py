"""Models and random books for the explain tests, over the shared BTC + ETH market (tests/conftest.py).

``MODELS`` are the shipped models plus the variance form of covariance VaR and the user-matrix
models with a heavy-tailed random P&L matrix over the universe; Derive PM2 margins USDC options
and the USDC perpetual of one underlying, so its books are drawn from those."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import marginopt
from marginopt import Portfolio, load_model

MODELS = ("deribit-pm", "deribit-standard", "covariance-var", "covariance-var-variance",
          "scenario-max", "scenario-es", "derive-pm2")


def shipped(name: str) -> dict:
    return yaml.safe_load((Path(marginopt.__file__).parent / "models" / f"{name}.yaml").read_text())


@pytest.fixture(scope="session")
def universe(market) -> list[str]:
    """Every BTC and ETH instrument of the shared market."""
    return [n for n in market.instrument_names if n.split("-")[0].split("_")[0] in ("BTC", "ETH")]


@pytest.fixture(scope="session")
def derive_universe(market) -> list[str]:
    return [n for n in market.instrument_names if n.startswith("BTC_USDC-") and n != "BTC_USDC"]


@pytest.fixture(scope="session")
def models(universe) -> dict[str, marginopt.MarginModel]:
    variance = shipped("covariance-var")
    variance["currencies"]["ALL"]["initial"][0] |= {"form": "variance", "variance_coefficient": 0.5}
    variance["name"] = "covariance-var-variance"
    rng = np.random.default_rng(5)
    matrix = (rng.standard_t(4, (240, len(universe))) * 0.04 * 60_000).tolist()
    out = {name: load_model(name) for name in ("deribit-pm", "deribit-standard", "covariance-var",
                                               "derive-pm2")}
    out["covariance-var-variance"] = load_model(variance)
    for key in ("scenario-max", "scenario-es"):
        data = shipped(key)
        data["currencies"]["ALL"]["initial"][0] |= {"matrix": matrix, "instruments": universe}
        out[key] = load_model(data)
    return out


def random_book(names: list[str], rng: np.random.Generator, size: int) -> Portfolio:
    """``size`` positions drawn from ``names``: BTC in tenths to a few coin, ETH in coin to tens."""
    pick = rng.choice(len(names), size=min(size, len(names)), replace=False)
    out = {}
    for j in pick:
        name = names[j]
        scale = 2.0 if name.startswith("BTC") else 30.0
        q = float(np.round(rng.normal(0.0, scale), 3))
        out[name] = q if q != 0.0 else scale / 10
    return Portfolio(out)


def book_for(model: str, universe: list[str], derive_universe: list[str], seed: int,
             size: int = 8) -> Portfolio:
    rng = np.random.default_rng(seed)
    return random_book(derive_universe if model == "derive-pm2" else universe, rng, size)
