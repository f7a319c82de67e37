"""The desk's rebalance spec: universe, limits, trade bounds, lots, costs and objective."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from .._io import describe, read_yaml, validation_message
from ..errors import SpecError
from ..instruments import Instrument, canonical_name
from ..thresholds import MAX_LOT_SIZE

if TYPE_CHECKING:
    from ..venues import Venue

Bounds = tuple[float | None, float | None]


def _bound(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"a bound is a number or null, got {x!r}")
    x = float(x)
    if math.isnan(x):
        raise ValueError("a bound must be a number, got NaN")
    return None if math.isinf(x) else x   # .inf is no bound on that side


def _bounds(v: Any) -> Bounds | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        b = _bound(abs(v))
        return None if b is None else (-b, b)
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"give a number x (meaning [-x, x]) or a pair [lower, upper], got {v!r}")
    lo, hi = _bound(v[0]), _bound(v[1])
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"lower bound {lo} is above upper bound {hi}")
    return (lo, hi)


_BUCKET = re.compile(r"^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)?d?$")


class UnderlyingLimits(BaseModel):
    """Limits on one underlying's net greeks. ``delta`` in coin, ``vega`` in USD per vol point,
    ``gamma`` in coin of delta per 1% move; ``vega_buckets`` keyed by days to expiry ``"0-30"``,
    ``"30-90"``, ``"90-"``. A single number x means [-x, x]. With ``relative: true`` the bounds
    are offsets from the book's current value."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
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
        if v is not None and not isinstance(v, Mapping):
            raise ValueError(f"vega_buckets maps day ranges to bounds, got {describe(v)}")
        out = {}
        for key, b in (v or {}).items():
            if not _BUCKET.match(str(key)):
                raise ValueError(f"vega bucket '{key}' must be a day range like '0-30' or '90-'")
            out[str(key)] = _bounds(b)
        return out


class TradeBounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    #: largest trade in any one instrument, in coin (per-instrument overrides by name)
    max_quantity: float | None = Field(None, gt=0)
    max_quantity_by_instrument: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    #: largest trade as a fraction of the instrument's open interest
    max_open_interest_fraction: float | None = Field(None, gt=0)
    #: total USD notional traded (underlying notional, index x quantity)
    turnover_usd: float | None = Field(None, ge=0)
    #: at most this many instruments traded (mixed-integer, HiGHS)
    max_instruments: int | None = Field(None, ge=0)


class Lots(BaseModel):
    """Lot sizes in coin. ``mode``: ``none`` (continuous), ``round`` (solve, round to lots,
    repair, re-verify) or ``exact`` (mixed-integer). Sizes by instrument name, then by
    ``<UNDERLYING>-option`` / ``<UNDERLYING>-future`` (futures and perpetuals), then the venue's
    (``marginopt.venues``: its minimum amounts, or its USD contracts at the forward)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    mode: Literal["none", "round", "exact"] = "none"
    #: each size above zero and at most ``thresholds.MAX_LOT_SIZE`` coin
    sizes: dict[str, Annotated[float, Field(gt=0, le=MAX_LOT_SIZE)]] = Field(default_factory=dict)


class Costs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    #: charge half the bid/ask spread per unit traded
    spread: bool = True
    #: convex market impact ``impact * half_spread * |t|^1.5 / sqrt(open interest)`` (SOCP)
    impact: float = Field(0.0, ge=0)


class RebalanceSpec(BaseModel):
    """What a desk allows the rebalancer to do. Loadable from YAML (``RebalanceSpec.from_file``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
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
    #: keep |total delta in USD| per underlying under this (a venue's delta-shock threshold)
    delta_shock_threshold_usd: float | None = Field(None, gt=0)
    solver: str | None = None
    #: a mixed-integer search (exact lots, max_instruments) stops after this many seconds and
    #: its best answer so far is verified like any other, reported with its gap and bound
    time_limit_s: float = Field(30.0, gt=0)
    #: a proposal must save at least this much (USD) net of cost, or no trade is proposed
    min_saving_usd: float = Field(0.01, ge=0)
    #: where the spec came from (its file), for errors found when it meets a book and a market
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("limits", "relative_limits", mode="before")
    @classmethod
    def _upper_keys(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, Mapping):
            raise ValueError(f"give limits per underlying (BTC: {{delta: [-5, 5]}}), got {describe(v)}")
        out: dict[str, Any] = {}
        for k, b in (v or {}).items():
            key = str(k).strip().upper()
            if key in out:
                raise ValueError(f"underlying {key} is given twice")
            out[key] = b
        return out

    @field_validator("solver", mode="after")
    @classmethod
    def _known_solver(cls, v: str | None) -> str | None:
        check_solver(v)
        return v

    @field_validator("do_not_trade", "close_only", mode="after")
    @classmethod
    def _upper_names(cls, v: list[str]) -> list[str]:
        return [canonical_name(n) for n in v]

    @field_validator("solver", mode="after")
    @classmethod
    def _solver_path(cls, v: str | None) -> str | None:
        """``native`` (the persistent HiGHS LP path, for linear problems) and ``cvxpy`` (the
        reference problem, with its solver chain) name a path; anything else names a cvxpy
        solver (HIGHS, CLARABEL, ...). None: native where the problem allows, else cvxpy."""
        if v is None:
            return None
        v = v.strip()
        if not v:
            raise ValueError("solver is a name: native, cvxpy or a cvxpy solver such as HIGHS")
        return v.lower() if v.lower() in SOLVER_PATHS else v

    @model_validator(mode="after")
    def _objective_inputs(self) -> "RebalanceSpec":
        if self.objective == "free_margin" and self.free_margin_usd is None:
            raise ValueError("objective free_margin needs free_margin_usd")
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "<memory>") -> "RebalanceSpec":
        if data is not None and not isinstance(data, Mapping):
            raise SpecError(f"a rebalance spec is a mapping of keys (universe, limits, trade_bounds, "
                            f"...), got {describe(data)}: is it the right file?", source=source)
        try:
            spec = cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            msg, loc = validation_message(exc, cls)
            raise SpecError(msg, source=source, field=loc) from None
        if source != "<memory>":
            spec._source = source
        return spec

    @classmethod
    def from_file(cls, path: str | Path) -> "RebalanceSpec":
        return cls.from_dict(read_yaml(path, "spec file", SpecError), source=str(path))

    def given_lot_size(self, inst: "Instrument") -> float | None:
        """The lot size in coin ``lots.sizes`` gives ``inst`` (by name, then by kind), if any."""
        kind = "option" if inst.is_option else "future"
        for key in (inst.name, f"{inst.underlying}-{kind}"):
            if key in self.lots.sizes:
                return float(self.lots.sizes[key])
        return None

    def lot_size(self, inst: "Instrument", venue: "Venue") -> float:
        """Lot size in coin for ``inst`` (0 when trading is continuous, or when it trades in the
        venue's USD contracts: see ``contract_usd``)."""
        if self.lots.mode == "none":
            return 0.0
        given = self.given_lot_size(inst)
        return given if given is not None else venue.lot_size(inst)

    def contract_usd(self, inst: "Instrument", venue: "Venue") -> float:
        """USD per contract when ``inst`` trades in the venue's USD contracts and the spec gives
        no lot size in coin (0 otherwise); a lot is then ``contract / forward`` coin."""
        if self.lots.mode == "none" or self.given_lot_size(inst) is not None:
            return 0.0
        return venue.contract_usd(inst)

    def merged(self, overrides: Mapping[str, Any]) -> "RebalanceSpec":
        """This spec with top-level keys replaced (per-account overrides in batch jobs)."""
        return RebalanceSpec.from_dict({**self.model_dump(), **dict(overrides)})


#: ``solver`` values that choose a path rather than a cvxpy solver: the native HiGHS LP model
#: (linear problems) or the cvxpy reference problem
SOLVER_PATHS = ("native", "cvxpy")


def check_solver(name: str | None) -> str | None:
    """``name`` in capitals if it is a solver installed here; a misspelt or missing solver is a
    ``ValueError`` naming it and the installed ones (a configuration error, not a solver failure)."""
    if name is None:
        return None
    if str(name).strip().lower() in SOLVER_PATHS:  # a path, not a solver (see RebalanceSpec.solver)
        return str(name).strip().lower()
    import difflib

    from ._solvers import installed_solvers
    wanted = str(name).strip().upper()
    installed = sorted(installed_solvers())
    if wanted in installed:
        return wanted
    if wanted in _KNOWN_SOLVERS:
        raise ValueError(f"solver {name} is not installed here (installed: {', '.join(installed)})")
    close = difflib.get_close_matches(wanted, installed, n=1)
    raise ValueError(f"unknown solver {name} (installed: {', '.join(installed)})"
                     + (f"; did you mean {close[0]}?" if close else ""))


#: solvers cvxpy can drive when their package is installed
_KNOWN_SOLVERS = frozenset({
    "CBC", "CLARABEL", "COPT", "CPLEX", "CVXOPT", "DAQP", "ECOS", "ECOS_BB", "GLOP", "GLPK",
    "GLPK_MI", "GUROBI", "HIGHS", "KNITRO", "MOSEK", "NAG", "OSQP", "PDLP", "PIQP", "PROXQP",
    "QOCO", "SCIP", "SCIPY", "SCS", "SDPA", "XPRESS"})


def load_spec(spec: RebalanceSpec | str | Path | Mapping[str, Any] | None) -> RebalanceSpec:
    if spec is None:
        return RebalanceSpec()
    if isinstance(spec, RebalanceSpec):
        return spec
    if isinstance(spec, Mapping):
        return RebalanceSpec.from_dict(spec)
    if not isinstance(spec, (str, Path)):
        raise SpecError(f"a spec is a file path, a mapping or a RebalanceSpec, got {describe(spec)}",
                        field="spec")
    return RebalanceSpec.from_file(spec)



def bucket_range(key: str) -> tuple[float, float]:
    """Days-to-expiry range [lo, hi) of a vega bucket key."""
    m = _BUCKET.match(key)
    assert m is not None  # validated by the spec
    return float(m[1]), float(m[2]) if m[2] else float("inf")
