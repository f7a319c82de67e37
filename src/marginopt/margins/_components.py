"""The built-in margin components: one rule each, evaluated in numpy and compiled to cvxpy from
the same arrays (the interface and the registry are in ``marginopt.margins._base``). Each spec
registers itself with ``@register``; a model file names it by its ``type``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Union

import cvxpy as cp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .._io import read_matrix
from ..thresholds import MAX_COVARIANCE_ENTRY, MAX_SCENARIO_PNL_USD
from ..errors import ModelError, UnsupportedCurrency, UnsupportedInstrument
from ..instruments import Instrument, Kind
from ..scenarios import ScenarioGrid, VolShock, delta_in_margin_currency, revalue
from ._base import BoundComponent, ComponentSpec, Cone, Coo, LinearRows, PoolContext, Term, register


def _abs_rows(matrix: Coo, groups: int) -> LinearRows:
    """``sum_g |M_g x|`` (``M`` as coordinates, ``groups`` rows): one column ``a_g`` per row with
    ``a_g - M_g x >= 0`` and ``a_g + M_g x >= 0``; the value is ``sum_g a_g`` at the optimum."""
    r, c, v = matrix
    k = np.arange(groups)
    return LinearRows(
        x_matrix=(np.concatenate([r, groups + r]), np.concatenate([c, c]), np.concatenate([-v, v])),
        a_matrix=(np.arange(2 * groups), np.concatenate([k, k]), np.ones(2 * groups)),
        row_lower=np.zeros(2 * groups), row_upper=np.full(2 * groups, np.inf),
        col_lower=np.zeros(groups), col_upper=np.full(groups, np.inf), cost=np.ones(groups),
        pattern=(r.tobytes(), c.tobytes()))


def matvec_columns(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix @ x``; for a few points (the columns of ``x``) one product each, which BLAS
    does faster than one product with a thin matrix."""
    if x.ndim == 1 or x.shape[1] > 8:
        return matrix @ x
    return np.column_stack([matrix @ x[:, j] for j in range(x.shape[1])])


class RiskMatrix(BoundComponent):
    """Worst loss over a scenario grid. Gains count at ``pnl_offset`` of their size; each
    scenario's loss is weighted and reduced by its dampener; the worst case is floored at zero:
    ``max(0, max_s w_s * max(-p_s, -k p_s) - d_s)`` with ``p = P x``. Convex for 0 <= k <= 1."""

    cone = "linear"
    signed_values = frozenset({"pnl"})

    def __init__(self, name: str, labels: tuple[str, ...], pnl: np.ndarray, weight: np.ndarray,
                 dampener: np.ndarray, pnl_offset: float) -> None:
        self.name, self.labels, self.pnl_offset = name, labels, float(pnl_offset)
        self.raw_pnl = pnl  # per-unit, unweighted, for reporting
        self.weight, self.dampener = weight, dampener

    @cached_property
    def _weighted(self) -> np.ndarray:
        """``weight_s P_s`` once, read-only (the matrix itself when every weight is one): a large
        user matrix is not copied again by each evaluation."""
        w = self.weight
        out = (1.0 * w)[:, None] * self.raw_pnl if np.any(w != 1.0) else self.raw_pnl.view()
        out.flags.writeable = False
        return out

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        if scale == 1.0:
            return {"pnl": self._weighted, "dampener": self.dampener}
        return {"pnl": (scale * self.weight)[:, None] * self.raw_pnl,
                "dampener": scale * self.dampener}

    @property
    def n_scenarios(self) -> int:
        return int(self.raw_pnl.shape[0])

    def _losses(self, x: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
        p = v["pnl"] @ x
        return np.maximum(-p, -self.pnl_offset * p) - v["dampener"]

    def losses(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Each scenario's loss at ``x`` (weighted and dampened; the margin is their maximum,
        floored at zero); with ``x`` positions x points, one column per point."""
        v = values or self.values()
        p = matvec_columns(v["pnl"], x)
        damp = v["dampener"][:, None] if p.ndim == 2 else v["dampener"]
        return np.maximum(-p, -self.pnl_offset * p) - damp

    def restricted(self, rows: np.ndarray, capacity: int | None = None) -> "RiskMatrix":
        """The same rule over the scenarios ``rows`` only: at most this one everywhere, equal
        wherever the worst scenario is among them. Padded to ``capacity`` rows (so a growing
        set keeps one problem structure) with scenarios of no P&L and no dampener, whose loss
        of zero is never above the floor at zero."""
        rows = np.asarray(rows, dtype=np.intp)
        pad = max(int(capacity or 0) - rows.size, 0)
        n = self.raw_pnl.shape[1]
        pnl = np.zeros((rows.size + pad, n))
        pnl[: rows.size] = self.raw_pnl[rows]
        return RiskMatrix(self.name, tuple(self.labels[r] for r in rows) + ("(padding)",) * pad, pnl,
                          np.r_[self.weight[rows], np.ones(pad)], np.r_[self.dampener[rows], np.zeros(pad)],
                          self.pnl_offset)

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        losses = self._losses(x, values or self.values())
        return float(max(losses.max(initial=0.0), 0.0))

    def structure_key(self) -> tuple:
        return (self.pnl_offset != 0.0,)

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        p = params["pnl"] @ x
        losses = cp.maximum(-p, -self.pnl_offset * p) - params["dampener"] if self.pnl_offset else -p - params["dampener"]
        return Term(cp.maximum(cp.max(losses), 0.0))

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows:
        """One epigraph column ``m >= 0`` and a row per scenario, ``m + p_s >= -d_s`` (and
        ``m + k p_s >= -d_s`` with a P&L offset ``k``). With ``k = 0`` the gain branch
        ``max(-p_s, 0) - d_s`` is at most ``-d_s``: a lower bound of ``m``."""
        pnl, damp = values["pnl"], values["dampener"]
        k = self.pnl_offset
        x = np.vstack([pnl, k * pnl]) if k else pnl
        lower = np.concatenate([-damp, -damp]) if k else -damp
        floor = 0.0 if k or not damp.size else max(0.0, float(-damp.min()))
        rows = x.shape[0]
        return LinearRows(x, (np.arange(rows), np.zeros(rows, dtype=int), np.ones(rows)),
                          lower, np.full(rows, np.inf), np.array([floor]), np.array([np.inf]),
                          np.ones(1), (bool(k),))

    def details(self, x: np.ndarray) -> dict[str, Any]:
        losses = self._losses(x, self.values())
        worst = int(np.argmax(losses)) if losses.size else None
        return {
            "worst_scenario": self.labels[worst] if worst is not None and losses[worst] > 0 else None,
            "scenario_labels": list(self.labels),
            "scenario_pnl": (self.raw_pnl @ x).tolist(),
        }


class AbsExposure(BoundComponent):
    """``sum_g |E_g x|``: e.g. roll shock, each expiry's delta times its shock, no netting."""

    cone = "linear"
    signed_values = frozenset({"exposure"})

    def __init__(self, name: str, exposure: np.ndarray, labels: tuple[str, ...]) -> None:
        self.name, self.exposure, self.labels = name, exposure, labels

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"exposure": scale * self.exposure}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        return float(np.abs(v["exposure"] @ x).sum())

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        return Term(cp.sum(cp.abs(params["exposure"] @ x)))

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows:
        e = values["exposure"]
        r, c = np.nonzero(self.exposure)  # the groups' members (not this snapshot's zeros)
        return _abs_rows((r, c, e[r, c]), e.shape[0])


class SizeCharge(BoundComponent):
    """Per-position ``a_i |x_i| + b_i x_i^2`` (Deribit futures: rate grows with size)."""

    cone = "quadratic"

    def __init__(self, name: str, linear: np.ndarray, quadratic: np.ndarray) -> None:
        self.name, self.linear, self.quadratic = name, linear, quadratic

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"linear": scale * self.linear, "quadratic": scale * self.quadratic}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        return float(v["linear"] @ np.abs(x) + v["quadratic"] @ (x * x))

    def term_cone(self) -> Cone:
        return "quadratic" if np.any(self.quadratic) else "linear"

    def structure_key(self) -> tuple:
        return (bool(np.any(self.quadratic)),)

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        expr = params["linear"] @ cp.abs(x)
        if np.any(self.quadratic):
            expr = expr + params["quadratic"] @ cp.square(x)
        return Term(expr)

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows | None:
        """``a_i |x_i|`` by one column per charged position; none when a quadratic part is set."""
        if np.any(values["quadratic"]):
            return None
        nz = np.flatnonzero(self.linear)
        k = nz.size
        rows = _abs_rows((np.arange(k), nz, np.ones(k)), k)
        return LinearRows(rows.x_matrix, rows.a_matrix, rows.row_lower, rows.row_upper,
                          rows.col_lower, rows.col_upper, values["linear"][nz], (nz.tobytes(),))


class ShortCharge(BoundComponent):
    """Per-position ``c_i * max(-x_i, 0)``: a charge per unit short, nothing for longs."""

    cone = "linear"

    def __init__(self, name: str, charge: np.ndarray) -> None:
        self.name, self.charge = name, charge

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"charge": scale * self.charge}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        return float(v["charge"] @ np.maximum(-x, 0.0))

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        return Term(params["charge"] @ cp.neg(x))

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows:
        """``c_i max(-x_i, 0)`` by one column ``s_i >= 0`` per charged position, ``s_i + x_i >= 0``."""
        nz = np.flatnonzero(self.charge)
        k = nz.size
        one = np.ones(k)
        return LinearRows((np.arange(k), nz, one), (np.arange(k), np.arange(k), one),
                          np.zeros(k), np.full(k, np.inf), np.zeros(k), np.full(k, np.inf),
                          values["charge"][nz], (nz.tobytes(),))


class FactorRisk(BoundComponent):
    """Parametric VaR ``z * ||R' G x||`` (norm form, SOCP) or ``c * ||R' G x||^2`` (variance form,
    QP), with G the per-unit factor exposures and R R' the factor covariance."""

    cone = "soc"
    signed_values = frozenset({"root_exposure"})

    def __init__(self, name: str, root_exposure: np.ndarray, multiplier: float, form: str) -> None:
        self.name, self.root_exposure, self.multiplier, self.form = name, root_exposure, multiplier, form

    def term_cone(self) -> Cone:
        return "soc" if self.form == "norm" else "quadratic"

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        # the norm form is 1-homogeneous in the root, the variance form 2-homogeneous
        factor = self.multiplier * scale
        return {"root_exposure": (factor if self.form == "norm" else np.sqrt(factor)) * self.root_exposure}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        r = v["root_exposure"] @ x
        return float(np.linalg.norm(r) if self.form == "norm" else r @ r)

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        r = params["root_exposure"] @ x
        return Term(cp.norm(r, 2) if self.form == "norm" else cp.sum_squares(r))


class ExpectedShortfall(BoundComponent):
    """Expected shortfall of the loss ``-P x`` at ``level`` over equally likely scenarios
    (Rockafellar-Uryasev: ``min_z z + sum_s max(L_s - z, 0) / ((1-level) S)``), floored at zero."""

    cone = "linear"
    signed_values = frozenset({"pnl"})

    def __init__(self, name: str, labels: tuple[str, ...], pnl: np.ndarray, level: float) -> None:
        self.name, self.labels, self.raw_pnl, self.level = name, labels, pnl, level

    @property
    def n_scenarios(self) -> int:
        return int(self.raw_pnl.shape[0])

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        if scale == 1.0:  # the matrix itself, read-only: a large one is not copied per evaluation
            pnl = self.raw_pnl.view()
            pnl.flags.writeable = False
            return {"pnl": pnl}
        return {"pnl": scale * self.raw_pnl}

    def _tail(self, s: int) -> tuple[float, int]:
        """The tail's size ``(1 - level) S`` and its whole scenarios (as ``evaluate`` counts them)."""
        tail = (1.0 - self.level) * s
        return tail, int(np.floor(tail + 1e-12))

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        losses = np.sort(-(v["pnl"] @ x))[::-1]
        tail, whole = self._tail(losses.size)
        total = losses[:whole].sum() + (tail - whole) * (losses[whole] if whole < losses.size else 0.0)
        return float(max(total / tail, 0.0))

    def worst_tail(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The tail at ``x`` as a cut (Kunzi-Bay and Mayer): its scenarios and their weights, the
        ``whole`` worst at ``1 / tail`` and the next at ``(tail - whole) / tail``, exactly as
        ``evaluate`` counts them. The cut's loss ``-(w @ P[rows]) y`` is at most the expected
        shortfall at every ``y`` (before the floor at zero) and equals it at ``x``."""
        v = values or self.values()
        return self.tail_of(-(v["pnl"] @ x))

    def tail_of(self, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``worst_tail`` from the scenario losses at a point (``-P x``)."""
        tail, whole = self._tail(losses.size)
        if whole >= losses.size:
            rows = np.arange(losses.size)
            weights = np.ones(losses.size)
        else:
            # the worst ``whole`` first (in any order: ties give the same sum), then the boundary one
            rows = np.argpartition(-losses, whole)[: whole + 1]
            weights = np.r_[np.ones(whole), tail - whole]
        return rows, weights / tail

    def cuts(self, tails: list[tuple[np.ndarray, np.ndarray]], capacity: int | None = None,
             rows: np.ndarray | None = None) -> RiskMatrix:
        """Expected shortfall as the worst of the cuts ``tails`` (each from ``worst_tail``):
        ``max(0, max_k -g_k y)`` with ``g_k = w_k @ P[rows_k]``, at most the expected shortfall
        everywhere and equal to it at each cut's point. A ``RiskMatrix`` over the cut rows,
        padded to ``capacity`` with rows of no P&L (a loss of zero, never above the floor).
        ``rows``: the cut rows already computed (``g_k``), if they are."""
        k = len(tails)
        pad = max(int(capacity or 0) - k, 0)
        g = np.zeros((k + pad, self.raw_pnl.shape[1]))
        if rows is not None and k:
            g[:k] = rows
        else:
            for i, (scen, weights) in enumerate(tails):
                g[i] = weights @ self.raw_pnl[scen]
        labels = tuple(f"tail cut {i + 1}" for i in range(k)) + ("(padding)",) * pad
        return RiskMatrix(self.name, labels, g, np.ones(k + pad), np.zeros(k + pad), 0.0)

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        z = cp.Variable(name=f"{self.name}_var")
        losses = -(params["pnl"] @ x)
        tail = (1.0 - self.level) * self.raw_pnl.shape[0]
        return Term(cp.maximum(z + cp.sum(cp.pos(losses - z)) / tail, 0.0))

    def linear_rows(self, values: dict[str, np.ndarray]) -> LinearRows:
        """Rockafellar-Uryasev: columns ``u_s >= 0`` (one per scenario), ``z`` free and ``e >= 0``;
        rows ``p_s + u_s + z >= 0`` and ``e - z - sum(u) / tail >= 0``; the value is ``e``."""
        pnl = values["pnl"]
        s = pnl.shape[0]
        tail = (1.0 - self.level) * s
        k = np.arange(s)
        a = (np.concatenate([k, k, [s, s], np.full(s, s)]),
             np.concatenate([k, np.full(s, s), [s + 1, s], k]),
             np.concatenate([np.ones(2 * s), [1.0, -1.0], np.full(s, -1.0 / tail)]))
        cost = np.zeros(s + 2)
        cost[s + 1] = 1.0
        return LinearRows(pnl, a, np.zeros(s + 1), np.full(s + 1, np.inf),
                          np.r_[np.zeros(s), -np.inf, 0.0], np.full(s + 2, np.inf), cost)

    def details(self, x: np.ndarray) -> dict[str, Any]:
        pnl = self.raw_pnl @ x
        worst = int(np.argmin(pnl)) if pnl.size else None
        return {"worst_scenario": self.labels[worst] if worst is not None else None,
                "scenario_labels": list(self.labels), "scenario_pnl": pnl.tolist()}


class CalendarSpreadCharge(BoundComponent):
    """SPAN-style intra-commodity spread charge, ``rate * min(long delta, short delta)`` summed
    over pairs of expiries: NOT convex. It is concave only while every expiry keeps the sign of
    its delta (a min of two linear functions there); across sign changes it is neither, so the
    linearisation is a local supergradient. The optimizer handles it by sequential convex
    programming (linearise at the current book, re-solve, re-check)."""

    cone = "linear"  # its tangent: the optimizer linearises it
    convex = False
    signed_values = frozenset({"delta"})

    def __init__(self, name: str, delta: np.ndarray, labels: tuple[str, ...], rate: float) -> None:
        self.name, self.delta, self.labels, self.rate = name, delta, labels, float(rate)

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"delta": scale * self.rate * self.delta}

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        v = values or self.values()
        d = v["delta"] @ x
        return float(min(np.maximum(d, 0).sum(), np.maximum(-d, 0).sum()))

    def linearize(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
        v = values or self.values()
        d = v["delta"] @ x
        longs, shorts = np.maximum(d, 0).sum(), np.maximum(-d, 0).sum()
        # supergradient of the concave min(longs, shorts): the side that binds
        side = (d > 0) if longs <= shorts else -(d < 0).astype(float)
        return float(min(longs, shorts)), v["delta"].T @ side.astype(float)

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        raise TypeError(f"{self.name} is not convex: linearise it instead")


# --------------------------------------------------------------------------- specs (YAML)
SettledFloat = Union[float, dict[Literal["inverse", "linear"], float]]


def _settled(value: SettledFloat, ctx: PoolContext) -> float:
    if isinstance(value, dict):
        if ctx.settlement_key not in value:
            raise UnsupportedCurrency(f"model gives no {ctx.settlement_key} value for pool {ctx.pool}",
                                      row=ctx.pool, field="settlement")
        return float(value[ctx.settlement_key])
    return float(value)


class VolShockSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    volatility_range_up: float = Field(ge=0)
    volatility_range_down: float = Field(ge=0, le=1)
    short_term_vega_power: float
    long_term_vega_power: float
    min_volatility_for_shock_up: float = Field(0.0, ge=0)
    term_days: float = Field(30.0, gt=0)
    dte_floor_days: float = Field(1.0, gt=0)

    def build(self) -> VolShock:
        return VolShock(self.volatility_range_up, self.volatility_range_down,
                        self.short_term_vega_power, self.long_term_vega_power,
                        self.min_volatility_for_shock_up, self.term_days, self.dte_floor_days)


@register
class RiskMatrixSpec(ComponentSpec):
    """Deribit-style risk matrix: 2 x buckets_count + 1 moves over +/- price_range, each in the
    down/flat/up vol states, plus an extended table of large moves (vol up only) weighted
    ``extended_table_factor * price_range / |m|`` and dampened by
    ``(|m| / price_range - 1) * extended_dampener``."""

    type: Literal["risk_matrix"]
    implementation = RiskMatrix
    price_range: float = Field(gt=0, lt=1)
    buckets_count: int = Field(ge=1)
    vol_scenarios_count: Literal[1, 3] = 3
    vol_shock: VolShockSpec | None = None
    extended_moves: list[float] = Field(default_factory=list)
    extended_table_factor: float = Field(1.0, ge=0)
    extended_dampener: SettledFloat = 0.0
    pnl_offset: SettledFloat = 0.0

    def grid(self, ctx: PoolContext) -> ScenarioGrid:
        moves = np.linspace(-self.price_range, self.price_range, 2 * self.buckets_count + 1)
        states = (-1, 0, 1) if self.vol_scenarios_count == 3 else (0,)
        regular = ScenarioGrid.price_vol_grid(moves, states)
        if not self.extended_moves:
            return regular
        ext = np.asarray(self.extended_moves, dtype=float)
        ratio = np.abs(ext) / self.price_range
        extended = ScenarioGrid(
            tuple(f"{m:+.0%} vol up (extended)" for m in ext), ext,
            np.ones(ext.size, dtype=np.int8) if self.vol_shock else np.zeros(ext.size, dtype=np.int8),
            self.extended_table_factor / ratio,
            (ratio - 1.0) * _settled(self.extended_dampener, ctx))
        return ScenarioGrid.concat(regular, extended)

    def bind(self, ctx: PoolContext) -> RiskMatrix:
        offset = _settled(self.pnl_offset, ctx)
        if not 0.0 <= offset <= 1.0:
            raise ModelError(f"pnl_offset must be in [0, 1] for a convex risk matrix, got {offset}",
                             field=f"{self.name}.pnl_offset")
        grid = self.grid(ctx)
        vol = self.vol_shock.build() if self.vol_shock else None
        return RiskMatrix(self.name, grid.labels, revalue(ctx.inputs, grid, vol),
                          grid.weight, grid.dampener, offset)


def _expiry_groups(instruments: tuple[Instrument, ...], *, spot: bool
                   ) -> tuple[tuple[str, ...], np.ndarray]:
    """Expiry labels in order, and each instrument's row among them (-1: spot, left out when
    ``spot`` is false)."""
    labels = [i.expiry_label for i in instruments]
    groups = tuple(sorted({l for l, i in zip(labels, instruments) if spot or i.kind is not Kind.SPOT}))
    at = {g: r for r, g in enumerate(groups)}
    row = np.array([at.get(l, -1) for l in labels], dtype=np.intp)
    row.flags.writeable = False
    return groups, row


@register
class RollShockSpec(ComponentSpec):
    """Per expiry ``max(min_annualised_move, exp(annualised_move_risk * T) - 1) * |delta_expiry|``,
    expiries not netted; perpetuals get the minimum move; spot carries no roll risk."""

    type: Literal["roll_shock"]
    implementation = AbsExposure
    min_annualised_move: float = Field(ge=0)
    annualised_move_risk: float = Field(ge=0)

    def bind(self, ctx: PoolContext) -> AbsExposure:
        inputs = ctx.inputs
        groups, row = ctx.memo("expiry_groups_without_spot", lambda: _expiry_groups(ctx.instruments, spot=False))
        delta = delta_in_margin_currency(inputs)
        shock = np.maximum(self.min_annualised_move, np.expm1(self.annualised_move_risk * inputs.t))
        exposure = np.zeros((len(groups), len(ctx.instruments)))
        cols = np.flatnonzero(row >= 0)
        exposure[row[cols], cols] = (shock * delta)[cols]
        return AbsExposure(self.name, exposure, groups)


@register
class FuturesSizeSpec(ComponentSpec):
    """Deribit standard futures margin: ``|q| * (base_rate + size_rate * |q|)`` for futures and
    perpetuals, in coin for inverse contracts and times the index for linear ones."""

    type: Literal["futures_size"]
    implementation = SizeCharge
    base_rate: float = Field(ge=0)
    size_rate: float = Field(ge=0)

    def bind(self, ctx: PoolContext) -> SizeCharge:
        inp = ctx.inputs
        is_future = ~inp.is_option & ~inp.is_spot
        level = np.where(inp.is_inverse, 1.0, inp.index) * is_future
        return SizeCharge(self.name, self.base_rate * level, self.size_rate * level)


@register
class ShortOptionSpec(ComponentSpec):
    """Deribit standard option margin per unit short (longs: 0), with OTM = out-of-the-money
    amount in USD, S = the option's underlying (forward) price and the mark from the snapshot:
    initial ``max(otm_rate - OTM/S, floor_rate) + mark`` (short puts: at least the maintenance
    figure); maintenance ``maintenance_rate + mark`` (puts: ``max(mm, mm * mark) + mark``) in coin
    for inverse options; the USD form ``max(otm_rate S - OTM, floor_rate S) + mark`` and
    ``maintenance_rate S + mark`` for linear ones."""

    type: Literal["short_option"]
    implementation = ShortCharge
    which: Literal["initial", "maintenance"]
    otm_rate: float = 0.15
    floor_rate: float = 0.10
    maintenance_rate: float = 0.075

    def bind(self, ctx: PoolContext) -> ShortCharge:
        inp = ctx.inputs
        opt = inp.is_option
        names = [i.name for i in ctx.instruments]
        mark = np.where(opt, ctx.market.column(names, "mark_price"), 0.0)
        s = inp.forward
        strike = np.where(opt, inp.strike, s)
        otm = np.where(inp.is_call, np.maximum(strike - s, 0.0), np.maximum(s - strike, 0.0))
        inv = inp.is_inverse
        mm_put = np.maximum(self.maintenance_rate, self.maintenance_rate * mark) + mark
        mm_inv = np.where(inp.is_call, self.maintenance_rate + mark, mm_put)
        im_inv = np.maximum(self.otm_rate - otm / s, self.floor_rate) + mark
        im_inv = np.where(inp.is_call, im_inv, np.maximum(im_inv, mm_put))
        mm_lin = self.maintenance_rate * s + mark
        im_lin = np.maximum(self.otm_rate * s - otm, self.floor_rate * s) + mark
        charge = np.where(inv, im_inv, im_lin) if self.which == "initial" else np.where(inv, mm_inv, mm_lin)
        return ShortCharge(self.name, np.where(opt, charge, 0.0))


@register
class CalendarSpreadSpec(ComponentSpec):
    """SPAN-style calendar spread charge ``rate * min(sum of long expiry deltas, sum of short
    expiry deltas)`` in the pool's currency per unit of coin delta. Concave: non-convex."""

    type: Literal["calendar_spread"]
    implementation = CalendarSpreadCharge
    convex: bool = False
    rate: float = Field(ge=0)

    def bind(self, ctx: PoolContext) -> CalendarSpreadCharge:
        groups, row = ctx.memo("expiry_groups", lambda: _expiry_groups(ctx.instruments, spot=True))
        delta = delta_in_margin_currency(ctx.inputs)
        exposure = np.zeros((len(groups), len(ctx.instruments)))
        exposure[row, np.arange(len(ctx.instruments))] = delta
        return CalendarSpreadCharge(self.name, exposure, groups, self.rate)


@register
class CovarianceVarSpec(ComponentSpec):
    """Parametric VaR over factor exposures: per underlying U in ``underlyings``, the factors
    ``U.delta`` (USD per 1.00 relative move) and ``U.vega`` (USD per vol point). ``covariance`` is
    over those factors in that order (or a file path, CSV/.npy, relative to the model file)."""

    type: Literal["covariance_var"]
    implementation = FactorRisk
    underlyings: list[str]
    factors: list[Literal["delta", "vega"]] = ["delta", "vega"]
    covariance: list[list[float]] | str
    z: float = Field(2.33, gt=0)
    form: Literal["norm", "variance"] = "norm"
    variance_coefficient: float = Field(1.0, gt=0)

    def factor_names(self) -> list[str]:
        return [f"{u}.{f}" for u in self.underlyings for f in self.factors]

    def covariance_matrix(self, model_dir: Path | None) -> np.ndarray:
        cov, source, fld = self.covariance, None, f"{self.name}.covariance"
        if isinstance(cov, str):
            path = Path(cov) if model_dir is None else (model_dir / cov)
            cov, source = read_matrix(path, "covariance file", ModelError, field=fld), str(path)
        try:
            arr = np.asarray(cov, dtype=float)
        except (TypeError, ValueError):
            raise ModelError("covariance must be a square matrix of numbers", field=fld) from None
        k = len(self.factor_names())
        if arr.shape != (k, k):
            raise ModelError(f"covariance must be {k} x {k} over {self.factor_names()}, got {arr.shape}",
                             source=source, field=fld)
        if not np.isfinite(arr).all():
            raise ModelError("covariance has a value that is not a finite number", source=source,
                             field=fld)
        if arr.size and np.abs(arr).max() > MAX_COVARIANCE_ENTRY:
            raise ModelError(f"covariance has an implausibly large value ({np.abs(arr).max():.3g}; "
                             f"at most {MAX_COVARIANCE_ENTRY:g} is accepted)", source=source, field=fld)
        if not np.allclose(arr, arr.T, rtol=0, atol=1e-12 * max(1.0, np.abs(arr).max())):
            raise ModelError("covariance must be symmetric", source=source, field=fld)
        return arr

    def bind(self, ctx: PoolContext) -> FactorRisk:
        cov = self.covariance_matrix(ctx.model_dir)
        w, v = np.linalg.eigh(cov)
        if w.min() < -1e-10 * max(1.0, w.max()):
            raise ModelError("covariance must be positive semidefinite", field=f"{self.name}.covariance")
        root = v * np.sqrt(np.clip(w, 0.0, None))  # cov = root root'
        inp = ctx.inputs
        und = np.array([i.underlying for i in ctx.instruments])
        uncovered = np.flatnonzero(~np.isin(und, self.underlyings))
        if uncovered.size:
            # the row is the instrument, so an optimizer's universe can leave that candidate out
            first = ctx.instruments[int(uncovered[0])]
            raise UnsupportedCurrency(f"covariance has no factors for {first.underlying}",
                                      row=first.name, field=f"{self.name}.underlyings")
        delta_usd = inp.coin_delta() * inp.index
        vega_usd = inp.vega_usd()
        rows = []
        for u in self.underlyings:
            mask = und == u
            for f in self.factors:
                rows.append(np.where(mask, delta_usd if f == "delta" else vega_usd, 0.0))
        exposure = np.vstack(rows) if rows else np.zeros((0, len(und)))
        mult = self.z if self.form == "norm" else self.variance_coefficient
        return FactorRisk(self.name, root.T @ exposure, mult, self.form)


class _ParsedMatrices:
    """A scenario spec's parsed matrix, by source (file path, modification time and size): a
    model reads its file once, not once per binding (an optimize binds the book, the universe
    and the post-trade book). One entry, the newest; not pickled (a process that receives the
    model reads the file itself) and not part of the spec's equality."""

    def __init__(self) -> None:
        self.entries: dict[tuple, tuple[tuple[str, ...], list[str], np.ndarray]] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.entries = {}

    def __deepcopy__(self, memo: dict) -> "_ParsedMatrices":
        return _ParsedMatrices()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ParsedMatrices)

    def __hash__(self) -> int:
        return 0


_LABEL_COLUMNS = ("scenario", "label", "date")


def _fast_scenario_csv(path: Path) -> tuple[tuple[str, ...] | None, list[str], np.ndarray] | None:
    """A scenario CSV by pyarrow's multi-threaded reader, straight into one float64 array: labels
    (when the first column is ``scenario``, ``label`` or ``date``), column names as written and the
    numbers. None for anything but a clean table of numbers under a header (duplicate names,
    text in a number column, labels that are not plain text or numbers, a file it cannot parse):
    the general reader then reads the file and names what is wrong, exactly as before."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    try:
        # blocks of 16 MB: a few chunks per column to join, still one per thread on a large file
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24))
        names = [str(c) for c in table.column_names]  # decoded here: may not be UTF-8
    except (pa.ArrowException, OSError, ValueError):
        return None
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]  # a byte-order mark
    if len({n.strip().upper() for n in names}) != len(names):
        return None  # the general reader renames duplicates (X, X.1): keep its reading
    columns = list(table.columns)
    labels: tuple[str, ...] | None = None
    if names and names[0].lower() in _LABEL_COLUMNS:
        first = columns.pop(0)
        names.pop(0)
        kind = first.type
        if first.null_count:
            return None
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            labels = tuple(first.to_pylist())
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            # as the general reader's numbers print: 3, 0.5
            labels = tuple(str(v) for v in first.to_pylist())
        else:
            return None
    # column-major, as the file's columns arrive: a binding takes its instruments' columns as
    # whole blocks (20 times faster than from rows at 20,000 x 1,000)
    arr = np.empty((table.num_rows, len(columns)), order="F")
    for j, col in enumerate(columns):
        kind = col.type
        if pa.types.is_null(kind):
            arr[:, j] = np.nan
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            arr[:, j] = col.to_numpy()
        else:
            return None
    del table, columns
    pa.default_memory_pool().release_unused()  # the parsed blocks: give the memory back now
    return labels, names, arr


class _UserMatrixSpec(ComponentSpec):
    """A user-supplied scenario P&L matrix, USD per unit, scenarios x instruments: a CSV whose
    header names the instruments (an optional first column ``scenario`` labels the rows) or a
    ``.npy`` with ``instruments`` naming its columns. Paths are relative to the model file.
    The parsed matrix is kept with the spec (one float64 array, read-only) while the file is
    unchanged."""

    matrix: str | list[list[float]]
    instruments: list[str] | None = None
    _parsed: _ParsedMatrices = PrivateAttr(default_factory=_ParsedMatrices)

    def load(self, model_dir: Path | None) -> tuple[tuple[str, ...], list[str], np.ndarray]:
        data = self.matrix
        if isinstance(data, str) and not data:
            raise ModelError("this model needs a scenario P&L matrix: pass scenario_matrix= to "
                             "load_model or --scenarios FILE on the command line",
                             field=f"{self.name}.matrix")
        path: Path | None = None
        key: tuple = ("inline",)
        if isinstance(data, str):
            path = Path(data) if model_dir is None or Path(data).is_absolute() else model_dir / data
            if not path.exists():
                raise ModelError("scenario matrix file not found", source=str(path),
                                 field=f"{self.name}.matrix")
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        found = self._parsed.entries.get(key)
        if found is None:
            found = self._read(path)
            found[2].flags.writeable = False
            self._parsed.entries = {key: found}
        return found

    def _read(self, path: Path | None) -> tuple[tuple[str, ...], list[str], np.ndarray]:
        data, names, labels, source = self.matrix, self.instruments, None, None
        fld = f"{self.name}.matrix"
        if path is not None:
            source = str(path)
            if path.suffix == ".npy":
                try:  # straight from the file into one array (no copy of its bytes first)
                    data = np.load(path, allow_pickle=False)
                except (ValueError, OSError, EOFError, TypeError):
                    data = None
                if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
                    # the general reader names what is wrong with the file
                    data = read_matrix(path, "scenario matrix file", ModelError, field=fld)
            else:
                fast = _fast_scenario_csv(path)
                if fast is not None:
                    labels, names, data = fast
                    names = [n.strip().upper() for n in names]
                else:
                    frame = read_matrix(path, "scenario matrix file", ModelError, field=fld, header=True)
                    if len(frame.columns) and str(frame.columns[0]).lower() in _LABEL_COLUMNS:
                        labels = tuple(frame.iloc[:, 0].astype(str))
                        frame = frame.iloc[:, 1:]
                    names = [str(c).strip().upper() for c in frame.columns]
                    try:
                        data = frame.to_numpy(dtype=float)
                    except (TypeError, ValueError):
                        raise ModelError("scenario matrix holds a value that is not a number",
                                         source=str(path), field=fld) from None
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise ModelError("scenario matrix must be a table of numbers",
                             field=f"{self.name}.matrix") from None
        if names is None or arr.ndim != 2 or arr.shape[1] != len(names):
            raise ModelError("scenario matrix needs one named column per instrument",
                             field=f"{self.name}.instruments")
        # the extremes first (no temporary the size of the matrix); the place only on failure
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            r, c = np.argwhere(~np.isfinite(arr))[0]
            raise ModelError(f"scenario matrix has a non-finite value at scenario {r + 1}",
                             source=source, row=r + 1, field=names[c])
        if max(-lo, hi) > MAX_SCENARIO_PNL_USD:
            r, c = np.argwhere(np.abs(arr) > MAX_SCENARIO_PNL_USD)[0]
            raise ModelError(f"scenario matrix value {arr[r, c]:.3g} USD per coin is implausibly "
                             f"large (at most {MAX_SCENARIO_PNL_USD:g} in absolute value)",
                             source=source, row=r + 1, field=names[c])
        labels = labels or tuple(f"scenario {i + 1}" for i in range(arr.shape[0]))
        return labels, [n.upper() for n in names], arr

    def columns(self, ctx: PoolContext) -> tuple[tuple[str, ...], np.ndarray]:
        labels, names, arr = self.load(ctx.model_dir)
        col = {n: j for j, n in enumerate(names)}
        missing = [i.name for i in ctx.instruments if i.name not in col]
        if missing:
            raise UnsupportedInstrument("the scenario matrix has no column for this instrument",
                                        row=missing[0], field=f"{self.name}.matrix")
        idx = np.fromiter((col[i.name] for i in ctx.instruments), dtype=np.intp, count=len(ctx.instruments))
        if idx.size == arr.shape[1] and np.array_equal(idx, np.arange(idx.size)):
            return labels, arr  # every column in the file's order: the parsed matrix itself
        return labels, arr[:, idx]  # the one copy a binding makes (its instruments' columns)


@register
class ScenarioMaxSpec(_UserMatrixSpec):
    type: Literal["scenario_max"]
    implementation = RiskMatrix

    def bind(self, ctx: PoolContext) -> RiskMatrix:
        labels, pnl = self.columns(ctx)
        s = pnl.shape[0]
        return RiskMatrix(self.name, labels, pnl, np.ones(s), np.zeros(s), 0.0)


@register
class ScenarioEsSpec(_UserMatrixSpec):
    type: Literal["scenario_es"]
    implementation = ExpectedShortfall
    level: float = Field(0.975, gt=0, lt=1)

    def bind(self, ctx: PoolContext) -> ExpectedShortfall:
        labels, pnl = self.columns(ctx)
        if (1.0 - self.level) * pnl.shape[0] < 1.0:
            raise ModelError(f"expected shortfall at {self.level} needs at least "
                             f"{int(np.ceil(1 / (1 - self.level)))} scenarios, the matrix has {pnl.shape[0]}",
                             field=f"{self.name}.level")
        return ExpectedShortfall(self.name, labels, pnl, self.level)


__all__ = [
    "AbsExposure", "CalendarSpreadCharge", "CalendarSpreadSpec", "CovarianceVarSpec",
    "ExpectedShortfall", "FactorRisk", "FuturesSizeSpec", "RiskMatrix", "RiskMatrixSpec",
    "RollShockSpec", "ScenarioEsSpec", "ScenarioMaxSpec", "ShortCharge", "ShortOptionSpec",
    "SizeCharge", "VolShockSpec",
]
