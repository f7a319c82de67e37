"""Derive PM2 as a marginopt margin component: ``type: derive_pm2`` in a model file.

The spec carries the rule parameters (the exchange's ``Parameters`` block, merged over the shipped
set), the account's non-tradable columns (cash, collaterals, the perp's unrealised P&L and
funding: held at these values) and, optionally, the account's market (spot, perp and stable
prices and confidences, one SVI feed per expiry). ``bind`` maps the pool's instruments by name
onto PM2 position columns: USDC options of ``underlying`` (``ETH_USDC-28FEB25-3000-C``) whose
expiry has a feed, and the USDC perpetual (``ETH_USDC-PERPETUAL``). Anything else cannot be
margined by PM2 and is refused with ``UnsupportedInstrument`` (an expiry without a feed with
``MissingMarketData``, an expired option with ``ExpiredInstrument``); the rebalancer then leaves
such a candidate out, naming the reason.

What the component's value is
-----------------------------
Derive publishes ``IM``/``MM`` as the account's *surplus*: ``mtm - loss_factor * worst_loss -
contingencies`` (cash and collaterals included in ``mtm``). marginopt's margin is a requirement
that a rebalance lowers; the component evaluates ``requirement = mtm - IM = loss_factor *
worst_loss + contingencies`` (USD), so the exchange's figure is ``account value - requirement``
(``exchange_margin`` and ``details`` give it directly). A trade at the mark moves cash and the
option marks by equal and opposite amounts, so the account value is unchanged and lowering the
requirement raises the exchange's IM by the same amount. (Evaluating the surplus itself with cash
held fixed would credit a purchase with the premium it did not pay.)

Not convex (skew scenarios, oracle contingency): ``linearize`` gives the exact value and a
subgradient for the optimizer's sequential convex programming.

Without a ``market`` block (the shipped model), the market comes from the snapshot: each
option's vol is its ``mark_iv`` (instead of an SVI), each expiry's forward its options'
``underlying_price``, spot the index, the perp's price its mark; rates 0, every confidence 1, the
stable coin at 1.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal

import cvxpy as cp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from marginopt.derive._case import DeriveCase, case_from_mapping
from marginopt.derive._params import DeriveParams, load_params
from marginopt.derive._pm2 import (
    DeriveMarginBreakdown,
    DeriveRiskArrays,
    build_risk_arrays,
    initial_margin,
    maintenance_margin,
    requirement_gradient,
    scenario_pnl,
)
from marginopt.errors import ExpiredInstrument, MissingMarketData, UnsupportedInstrument
from marginopt.instruments import Instrument, Kind, Settlement
from marginopt.margins._base import BoundComponent, ComponentSpec, PoolContext, Term, register

_CFG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- bound component
class DerivePM2Margin(BoundComponent):
    """PM2 requirement (``mtm - IM`` or ``mtm - MM``, USD) of the pool's positions ``x`` with the
    account's other columns at ``base``. ``columns[j]`` is pool instrument j's PM2 column."""

    convex = False
    cone = "linear"  # its tangent: the optimizer linearises it

    def __init__(self, name: str, which: str, arrays: DeriveRiskArrays, columns: np.ndarray,
                 base: np.ndarray, instruments: tuple[str, ...]) -> None:
        self.name, self.which, self.arrays = name, which, arrays
        self.columns = np.asarray(columns, dtype=np.intp)
        self.base = np.asarray(base, dtype=float)
        self.instruments = instruments

    @property
    def initial(self) -> bool:
        return self.which == "initial"

    def account(self, x: np.ndarray) -> np.ndarray:
        """The full PM2 position vector: ``x`` on the pool's columns, the rest at ``base``."""
        v = self.base.copy()
        v[self.columns] = np.asarray(x, dtype=float)
        return v

    def breakdown(self, x: np.ndarray) -> DeriveMarginBreakdown:
        rule = initial_margin if self.initial else maintenance_margin
        return rule(self.account(x), self.arrays)

    def exchange_margin(self, x: np.ndarray) -> float:
        """The figure Derive publishes as ``IM``/``MM``: account value minus the requirement."""
        return self.breakdown(x).margin

    def values(self, scale: float = 1.0) -> dict[str, np.ndarray]:
        return {"scale": np.array([float(scale)])}

    @staticmethod
    def _scale(values: dict[str, np.ndarray] | None) -> float:
        return float(values["scale"][0]) if values else 1.0

    def evaluate(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None) -> float:
        return self._scale(values) * self.breakdown(x).requirement

    def convex_model(self, x: np.ndarray, values: dict[str, np.ndarray] | None,
                     pieces: int | None) -> dict[str, Any] | None:
        """PM2's convex model at ``x``: the near-worst scenario rows, the forward contingency
        and the contingencies (``_convex.component_model``), for sequential convex programming."""
        from ._convex import component_model  # _convex imports this module
        return component_model(self, x, values, pieces)

    def linearize(self, x: np.ndarray, values: dict[str, np.ndarray] | None = None
                  ) -> tuple[float, np.ndarray]:
        """Exact value and a subgradient (per unit of each pool instrument) at ``x``."""
        scale = self._scale(values)
        v = self.account(x)
        rule = initial_margin if self.initial else maintenance_margin
        value = rule(v, self.arrays).requirement
        grad = requirement_gradient(v, self.arrays, initial=self.initial)[self.columns]
        return scale * value, scale * grad

    def term(self, x: cp.Expression, params: dict[str, cp.Parameter]) -> Term:
        raise TypeError(f"{self.name} is not convex: linearise it instead")

    def details(self, x: np.ndarray) -> dict[str, Any]:
        v = self.account(x)
        b = self.breakdown(x)
        return {
            "worst_scenario": b.worst_scenario,
            "scenario_labels": list(self.arrays.labels),
            "scenario_pnl": scenario_pnl(v, self.arrays).tolist(),
            "derive_margin": b.margin,
            "account_value": b.mtm,
            "requirement": b.requirement,
            "loss_factor": b.loss_factor,
            "worst_loss": b.worst_loss,
            "worst_regular_loss": b.worst_regular_loss,
            "worst_tail_loss": b.worst_tail_loss,
            "worst_skew_loss": b.worst_skew_loss,
            "forward_contingency": b.forward_contingency,
            "perp_contingency": b.perp_contingency,
            "option_contingency": b.option_contingency,
            "base_contingency": b.base_contingency,
            "oracle_contingency": b.oracle_contingency,
        }


# --------------------------------------------------------------------------- spec (YAML)
class DeriveCollateral(BaseModel):
    """One collateral balance (held, not traded), in the exchange's keys."""

    model_config = _CFG
    Name: str
    Amount: float = Field(ge=0)
    Price: float = Field(ge=0)
    Confidence: float = Field(1.0, ge=0, le=1)
    IsRiskCancelling: bool = False
    IMHaircut: float = 0.0
    MMHaircut: float = 0.0


class DeriveAccount(BaseModel):
    """The account's columns the optimizer does not trade: cash (USD), collaterals, and the
    perp's unrealised P&L and funding (constants of the account)."""

    model_config = _CFG
    Cash: float = 0.0
    Collaterals: list[DeriveCollateral] = []
    UnrealisedPerpPNL: float = 0.0
    UnrealisedFunding: float = 0.0


class DeriveFeed(BaseModel):
    """One expiry's feed; ``FeedExpiry`` in seconds after the spec's ``valuation_time``;
    ``SVIparam`` = ``a, b, rho, m, sigma, forward, tau``."""

    model_config = _CFG
    FeedExpiry: int
    Forward: float
    ForwardConfidence: float = 1.0
    Rate: float = 0.0
    RateConfidence: float = 1.0
    SVIparam: tuple[float, float, float, float, float, float, float]
    OptionVolConfidences: float = 1.0


class DeriveMarket(BaseModel):
    """The account's market as the exchange's oracles give it."""

    model_config = _CFG
    SpotPrice: float
    SpotConfidence: float = 1.0
    PerpPrice: float = 0.0
    PerpConfidence: float = 1.0
    StablePrice: float = 1.0
    StableConfidence: float = 1.0
    OptionFeeds: list[DeriveFeed] = []


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


@register
class DerivePM2Spec(ComponentSpec):
    """Derive PM2 portfolio margin of one subaccount (one underlying), ``which`` = initial or
    maintenance; see ``marginopt.derive._component``."""

    type: Literal["derive_pm2"]
    implementation = DerivePM2Margin
    convex: bool = False
    which: Literal["initial", "maintenance"]
    #: the subaccount's underlying; None: whatever single underlying the pool holds
    underlying: str | None = None
    #: the time the feeds' ``FeedExpiry`` count from (default: the snapshot's valuation time)
    valuation_time: datetime | None = None
    #: the exchange's ``Parameters`` block, merged over the shipped set (``Scenarios`` replaced)
    parameters: dict[str, Any] = Field(default_factory=dict)
    account: DeriveAccount = DeriveAccount()
    #: None: the market comes from the snapshot (see the module docstring)
    market: DeriveMarket | None = None

    @field_validator("underlying")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return None if v is None else v.strip().upper()

    @field_validator("valuation_time")
    @classmethod
    def _to_utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    @model_validator(mode="after")
    def _check_account(self) -> "DerivePM2Spec":
        self.params, self.template  # validate parameters, account and market at load time
        return self

    @cached_property
    def params(self) -> DeriveParams:
        return load_params(override=self.parameters)

    def _scenario(self, market: DeriveMarket) -> dict[str, Any]:
        return {**self.account.model_dump(), **market.model_dump(), "NumPerps": 0.0,
                "Options": []}

    @cached_property
    def template(self) -> DeriveCase | None:
        """The account without options (None without a market block)."""
        if self.market is None:
            return None
        return case_from_mapping({"Scenario": self._scenario(self.market)},
                                 source=f"component {self.name}", params=self.params)

    # ------------------------------------------------------------------ binding
    def bind(self, ctx: PoolContext) -> DerivePM2Margin:
        insts = ctx.instruments
        underlying = self.underlying or (insts[0].underlying if insts else "")
        now = self.valuation_time or ctx.market.valuation_time
        options: list[int] = []
        perp: int | None = None
        for j, inst in enumerate(insts):
            why = None
            if inst.underlying != underlying:
                why = f"Derive PM2 margins one underlying per subaccount ({underlying})"
            elif inst.settlement is not Settlement.LINEAR:
                why = "Derive PM2 margins USDC-settled contracts only"
            elif inst.kind is Kind.OPTION:
                options.append(j)
            elif inst.kind is Kind.PERPETUAL:
                perp = j
            else:
                why = f"Derive PM2 has no {inst.kind.value} positions (options and the perpetual)"
            if why is not None:
                raise UnsupportedInstrument(why, row=inst.name, field="instrument")
        seconds = [self._seconds(insts[j], now) for j in options]
        case = self._case(ctx, underlying, options, seconds, perp)
        arrays = build_risk_arrays(case)
        columns = np.empty(len(insts), dtype=np.intp)
        columns[options] = np.arange(len(options))
        if perp is not None:
            columns[perp] = arrays.perp_col
        base = np.asarray(arrays.x0, dtype=float).copy()
        base[columns] = 0.0
        return DerivePM2Margin(self.name, self.which, arrays, columns, base,
                               tuple(i.name for i in insts))

    @staticmethod
    def _seconds(inst: Instrument, now: datetime) -> int:
        sec = (inst.expiry - now).total_seconds()
        if sec <= 0:
            raise ExpiredInstrument(f"expired at {inst.expiry:%Y-%m-%d %H:%M} UTC, before the "
                                    f"account's valuation time {now:%Y-%m-%d %H:%M:%S} UTC",
                                    row=inst.name, field="expiry")
        return int(round(sec))

    def _case(self, ctx: PoolContext, underlying: str, options: list[int], seconds: list[int],
              perp: int | None) -> DeriveCase:
        insts = ctx.instruments
        strike = np.array([insts[j].strike for j in options], dtype=float)
        is_call = np.array([bool(insts[j].is_call) for j in options], dtype=bool)
        expiry = np.array(seconds, dtype=np.int64)
        if self.template is not None:
            case = self.template
            known = set(case.feed_expiry.tolist())
            for j, sec in zip(options, seconds):
                if sec not in known:
                    raise MissingMarketData("the Derive account's market has no option feed for "
                                            "this expiry", row=insts[j].name, field="expiry")
            if perp is not None and not case.perp_price > 0:
                raise MissingMarketData("the Derive account's market has no perp price",
                                        row=insts[perp].name, field="PerpPrice")
            vol = None
        else:
            case, vol = self._snapshot_case(ctx, underlying, options, expiry, perp)
        return replace(case, option_expiry=_ro(expiry), option_strike=_ro(strike),
                       option_is_call=_ro(is_call), option_amount=_ro(np.zeros(len(options))),
                       option_vol=vol)

    def _snapshot_case(self, ctx: PoolContext, underlying: str, options: list[int],
                       expiry: np.ndarray, perp: int | None) -> tuple[DeriveCase, np.ndarray]:
        inp = ctx.inputs
        index = ctx.market.index_prices.get(underlying)
        if index is None and not options and perp is None:
            index = 1.0  # no position is valued at spot: any price gives the same requirement
        if index is None:
            raise MissingMarketData(f"no index price for {underlying}", row=underlying,
                                    field="index_prices")
        feeds: dict[int, dict[str, Any]] = {}
        for j, sec in zip(options, expiry.tolist()):
            if sec in feeds:
                continue
            fwd, tau, sig = float(inp.forward[j]), sec / (365.0 * 86400.0), float(inp.sigma[j])
            # a flat SVI (b = 0) at the first option's vol; every option's own vol overrides it
            feeds[sec] = {"FeedExpiry": sec, "Forward": fwd, "SVIparam": [sig * sig * tau, 0.0, 0.0,
                                                                         0.0, 1.0, fwd, tau]}
        perp_price = float(index)
        if perp is not None:
            mark = float(ctx.market.column([ctx.instruments[perp].name], "mark_price")[0])
            perp_price = mark if np.isfinite(mark) and mark > 0 else perp_price
        market = DeriveMarket(SpotPrice=float(index), PerpPrice=perp_price,
                              OptionFeeds=[DeriveFeed(**f) for f in feeds.values()])
        case = case_from_mapping({"Scenario": self._scenario(market)},
                                 source=f"component {self.name}", params=self.params)
        return case, _ro(np.array([inp.sigma[j] for j in options], dtype=float))


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


__all__ = ["DeriveAccount", "DeriveCollateral", "DeriveFeed", "DeriveMarket", "DerivePM2Margin",
           "DerivePM2Spec"]
