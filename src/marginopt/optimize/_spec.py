"""The desk's rebalance spec: universe, limits, trade bounds, lots, costs and objective."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError
from ..instruments import Instrument

Bounds = tuple[float | None, float | None]


def _bounds(v: Any) -> Bounds | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return (-abs(float(v)), abs(float(v)))
    lo, hi = v
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"lower bound {lo} is above upper bound {hi}")
    return (lo, hi)


_BUCKET = re.compile(r"^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)?d?$")


class UnderlyingLimits(BaseModel):
    """Limits on one underlying's net greeks. ``delta`` in coin, ``vega`` in USD per vol point,
    ``gamma`` in coin of delta per 1% move; ``vega_buckets`` keyed by days to expiry ``"0-30"``,
    ``"30-90"``, ``"90-"``. A single number x means [-x, x]. With ``relative: true`` the bounds
    are offsets from the book's current value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    delta: Bounds | None = None
    vega: Bounds | None = None
    gamma: Bounds | None = None
    vega_buckets: dict[str, Bounds] = Field(default_factory=dict)
    relative: bool = False

    @field_validator("delta", "vega", "gamma", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Bounds | None:
        return _bounds(v)

    @field_validator("vega_buckets", mode="before")
    @classmethod
    def _buckets(cls, v: Any) -> dict[str, Bounds]:
        out = {}
        for key, b in (v or {}).items():
            if not _BUCKET.match(str(key)):
                raise ValueError(f"vega bucket '{key}' must be a day range like '0-30' or '90-'")
            out[str(key)] = _bounds(b)
        return out


class TradeBounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: largest trade in any one instrument, in coin (per-instrument overrides by name)
    max_quantity: float | None = Field(None, gt=0)
    max_quantity_by_instrument: dict[str, float] = Field(default_factory=dict)
    #: largest trade as a fraction of the instrument's open interest
    max_open_interest_fraction: float | None = Field(None, gt=0)
    #: total USD notional traded (underlying notional, index x quantity)
    turnover_usd: float | None = Field(None, ge=0)
    #: at most this many instruments traded (mixed-integer, HiGHS)
    max_instruments: int | None = Field(None, ge=0)


class Lots(BaseModel):
    """Lot sizes in coin. ``mode``: ``none`` (continuous), ``round`` (solve, round to lots,
    repair, re-verify) or ``exact`` (mixed-integer). Sizes by instrument name, then by
    ``<UNDERLYING>-option`` / ``<UNDERLYING>-future`` (futures and perpetuals), then defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["none", "round", "exact"] = "none"
    sizes: dict[str, float] = Field(default_factory=dict)

    #: Deribit's minimum amounts in coin (inverse futures trade in 10 USD, quoted separately)
    DEFAULTS: ClassVar[Mapping[str, float]] = {
        "BTC-option": 0.1, "ETH-option": 1.0, "SOL-option": 1.0,
        "BTC-future": 0.0001, "ETH-future": 0.001, "SOL-future": 0.1,
    }


class Costs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: charge half the bid/ask spread per unit traded
    spread: bool = True
    #: convex market impact ``impact * half_spread * |t|^1.5 / sqrt(open interest)`` (SOCP)
    impact: float = Field(0.0, ge=0)


class RebalanceSpec(BaseModel):
    """What a desk allows the rebalancer to do. Loadable from YAML (``RebalanceSpec.from_file``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    universe: Union[Literal["held", "held+futures", "listed"], list[str]] = "held+futures"
    limits: dict[str, UnderlyingLimits] = Field(default_factory=dict)
    #: limits given as offsets from the book's current greeks (same shape as ``limits``)
    relative_limits: dict[str, UnderlyingLimits] = Field(default_factory=dict)
    do_not_trade: list[str] = Field(default_factory=list)
    close_only: list[str] = Field(default_factory=list)
    no_new_instruments: bool = False
    trade_bounds: TradeBounds = TradeBounds()
    lots: Lots = Lots()
    costs: Costs = Costs()
    objective: Literal["min_margin", "free_margin", "margin_plus_cost"] = "min_margin"
    #: free_margin: release at least this much initial margin (USD) at least cost
    free_margin_usd: float | None = Field(None, gt=0)
    #: margin_plus_cost: weight of the cost against margin
    cost_weight: float = Field(1.0, ge=0)
    #: keep |total delta in USD| per underlying under Deribit's delta-shock threshold
    delta_shock_threshold_usd: float | None = Field(None, gt=0)
    solver: str | None = None
    #: a proposal must save at least this much (USD) net of cost, or no trade is proposed
    min_saving_usd: float = Field(0.01, ge=0)

    @field_validator("limits", "relative_limits", mode="before")
    @classmethod
    def _upper_keys(cls, v: Any) -> Any:
        return {str(k).upper(): b for k, b in (v or {}).items()}

    @field_validator("do_not_trade", "close_only", mode="after")
    @classmethod
    def _upper_names(cls, v: list[str]) -> list[str]:
        return [n.strip().upper() for n in v]

    @model_validator(mode="after")
    def _objective_inputs(self) -> "RebalanceSpec":
        if self.objective == "free_margin" and self.free_margin_usd is None:
            raise ValueError("objective free_margin needs free_margin_usd")
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "<memory>") -> "RebalanceSpec":
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise SpecError(err["msg"], source=source,
                            field=".".join(str(p) for p in err["loc"]) or None) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "RebalanceSpec":
        path = Path(path)
        if not path.exists():
            raise SpecError("spec file not found", source=str(path))
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"not valid YAML ({exc})", source=str(path)) from None
        return cls.from_dict(data, source=str(path))

    def lot_size(self, inst: "Instrument") -> float:
        """Lot size in coin for ``inst`` (0 when trading is continuous)."""
        if self.lots.mode == "none":
            return 0.0
        kind = "option" if inst.is_option else "future"
        for key in (inst.name, f"{inst.underlying}-{kind}"):
            if key in self.lots.sizes:
                return float(self.lots.sizes[key])
        return float(Lots.DEFAULTS.get(f"{inst.underlying}-{kind}", 0.0))

    def merged(self, overrides: Mapping[str, Any]) -> "RebalanceSpec":
        """This spec with top-level keys replaced (per-account overrides in batch jobs)."""
        return RebalanceSpec.from_dict({**self.model_dump(), **dict(overrides)})


def load_spec(spec: RebalanceSpec | str | Path | Mapping[str, Any] | None) -> RebalanceSpec:
    if spec is None:
        return RebalanceSpec()
    if isinstance(spec, RebalanceSpec):
        return spec
    if isinstance(spec, Mapping):
        return RebalanceSpec.from_dict(spec)
    return RebalanceSpec.from_file(spec)


def bucket_range(key: str) -> tuple[float, float]:
    """Days-to-expiry range [lo, hi) of a vega bucket key."""
    m = _BUCKET.match(key)
    assert m is not None  # validated by the spec
    return float(m[1]), float(m[2]) if m[2] else float("inf")
