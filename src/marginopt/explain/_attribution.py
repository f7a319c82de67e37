"""Attribution: what each position adds to the book's initial margin, three ways.

* **standalone**: the margin of the position alone (the book reduced to it);
* **incremental**: the margin the book would save without it (total less the book without it);
* **marginal** (Euler): quantity times the derivative of margin, per component from its structure
  (``_line.gradient``): for a risk matrix the worst scenario's per-unit loss. For a positively
  homogeneous component (margin of ``k x`` is ``k`` times margin of ``x``) the contributions add
  up to the component's value exactly (Euler's theorem); where a component is not homogeneous
  (a risk matrix whose worst scenario carries an extended-table dampener, a quadratic futures
  size charge, a variance-form VaR, a floor) the difference is reported as its ``residual``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..margins._components import FactorRisk, RiskMatrix, SizeCharge
from ._common import BookLike, MarketLike, ModelLike, bind
from ._line import along, gradient

#: a component's contributions "add up" when the residual is within this fraction of its value
HOMOGENEITY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PositionAttribution:
    """One position's share of the initial margin, in USD."""

    instrument: str
    pool: str
    quantity: float
    standalone_usd: float
    incremental_usd: float
    marginal_usd: float
    #: the marginal (Euler) contribution per component of the position's pool
    by_component: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentAttribution:
    """One component of one pool: its value, the sum of its positions' marginal contributions,
    and what is left (zero for a positively homogeneous component)."""

    pool: str
    component: str
    value_usd: float
    marginal_sum_usd: float
    residual_usd: float
    #: how the derivative was obtained (analytic, the component's linearisation, finite difference)
    method: str
    homogeneous: bool
    #: why the contributions do not add up (empty when they do)
    note: str = ""


@dataclass(frozen=True)
class Attribution:
    """Attribution of a book's initial margin under one model (USD)."""

    model: str
    initial_margin_usd: float
    positions: tuple[PositionAttribution, ...]
    components: tuple[ComponentAttribution, ...]

    @property
    def marginal_total_usd(self) -> float:
        return float(sum(p.marginal_usd for p in self.positions))

    @property
    def residual_usd(self) -> float:
        """Initial margin less the sum of the marginal contributions."""
        return float(sum(c.residual_usd for c in self.components))

    @property
    def homogeneous(self) -> bool:
        return all(c.homogeneous for c in self.components)

    def to_frame(self) -> pd.DataFrame:
        """One row per position, largest marginal contribution first."""
        rows = [{"instrument": p.instrument, "pool": p.pool, "quantity": p.quantity,
                 "standalone_usd": p.standalone_usd, "incremental_usd": p.incremental_usd,
                 "marginal_usd": p.marginal_usd,
                 "marginal_share": p.marginal_usd / self.initial_margin_usd
                 if self.initial_margin_usd else np.nan}
                for p in self.positions]
        cols = ["instrument", "pool", "quantity", "standalone_usd", "incremental_usd",
                "marginal_usd", "marginal_share"]
        frame = pd.DataFrame(rows, columns=cols)
        return frame.sort_values("marginal_usd", ascending=False, kind="stable").reset_index(drop=True)

    def components_frame(self) -> pd.DataFrame:
        """One row per pool and component: value, sum of contributions, residual, method."""
        return pd.DataFrame([asdict(c) for c in self.components],
                            columns=["pool", "component", "value_usd", "marginal_sum_usd",
                                     "residual_usd", "method", "homogeneous", "note"])

    def pools_frame(self) -> pd.DataFrame:
        """One row per pool: initial margin, sum of contributions, residual (USD)."""
        frame = self.components_frame()
        if frame.empty:
            return pd.DataFrame(columns=["pool", "value_usd", "marginal_sum_usd", "residual_usd"])
        return frame.groupby("pool", sort=False)[["value_usd", "marginal_sum_usd", "residual_usd"]].sum().reset_index()

    def matrix_frame(self) -> pd.DataFrame:
        """Marginal contributions by position (rows) and pool component (columns), USD."""
        data = {p.instrument: {f"{p.pool}.{k}": v for k, v in p.by_component.items()}
                for p in self.positions}
        return pd.DataFrame.from_dict(data, orient="index").fillna(0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "initial_margin_usd": self.initial_margin_usd,
                "marginal_total_usd": self.marginal_total_usd, "residual_usd": self.residual_usd,
                "positions": [{**asdict(p), "by_component": dict(p.by_component)} for p in self.positions],
                "components": [asdict(c) for c in self.components]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _residual_note(comp: Any, x: np.ndarray, residual: float, tol: float) -> str:
    """Why a component's contributions do not add up to its value, in the trade's words."""
    if abs(residual) <= tol:
        return ""
    if isinstance(comp, RiskMatrix):
        v = comp.values()
        p = v["pnl"] @ x
        losses = np.maximum(-p, -comp.pnl_offset * p) - v["dampener"]
        s = int(np.argmax(losses))
        return (f"the worst scenario ({comp.labels[s]}) is dampened by {v['dampener'][s]:,.6g} "
                f"(a fixed amount, not proportional to the book)")
    if isinstance(comp, SizeCharge):
        return "the size charge's quadratic term grows faster than the position (not 1-homogeneous)"
    if isinstance(comp, FactorRisk) and comp.form != "norm":
        return "the variance form is 2-homogeneous: contributions add up to twice the value"
    return "the component is not positively homogeneous at this book"


def attribute(book: BookLike, market: MarketLike, model: ModelLike = "deribit-pm") -> Attribution:
    """Standalone, incremental and marginal (Euler) initial margin of each position, by pool and
    component. Figures are in USD (each pool's currency at its USD rate)."""
    b = bind(book, market, model)
    names = b.book.names
    n = len(names)
    standalone = np.zeros(n)
    incremental = np.zeros(n)
    marginal = np.zeros(n)
    per_comp: list[dict[str, float]] = [{} for _ in range(n)]
    components: list[ComponentAttribution] = []
    total = 0.0
    for pool in b.bound.pools:
        cols = pool.columns
        x = b.x[cols]
        local = np.arange(cols.size)
        usd = pool.usd_rate
        alone = np.zeros(cols.size)
        without = np.zeros(cols.size)
        pool_value = 0.0
        for comp in pool.initial:
            value, grad, method = gradient(comp, x)
            contrib = x * grad * usd
            alone += along(comp, np.zeros_like(x), local, x)
            without += along(comp, x, local, -x)
            pool_value += value
            for j, c in zip(cols, contrib):
                per_comp[j][comp.name] = float(c)
            marginal[cols] += contrib
            value_usd = value * usd
            euler = float(contrib.sum())
            residual = value_usd - euler
            tol = HOMOGENEITY_TOLERANCE * max(abs(value_usd), abs(euler), 1e-9)
            components.append(ComponentAttribution(
                pool.name, comp.name, value_usd, euler, residual, method, abs(residual) <= tol,
                _residual_note(comp, x, residual, tol)))
        standalone[cols] = alone * usd
        incremental[cols] = (pool_value - without) * usd
        total += pool_value * usd
    pool_name = {int(j): p.name for p in b.bound.pools for j in p.columns}
    positions = tuple(
        PositionAttribution(names[j], pool_name[j], float(b.x[j]), float(standalone[j]),
                            float(incremental[j]), float(marginal[j]), per_comp[j])
        for j in range(n))
    return Attribution(b.model.name, float(total), positions, tuple(components))


__all__ = ["Attribution", "ComponentAttribution", "HOMOGENEITY_TOLERANCE", "PositionAttribution",
           "attribute"]
