"""Loader of Derive PM2 case files (``Scenario`` + ``Parameters`` + optional ``Result``).

Pydantic validates the JSON at the boundary; what comes out is a frozen ``DeriveCase`` holding
numpy arrays. Any malformed file raises ``DeriveCaseError`` whose ``field`` is the dotted path of
the offending key (``Scenario.Options[3].Strike``).

Numbers may be JSON numbers or decimal strings (the exchange prints high-precision values as
strings). Per-option diagnostics in the files (``MarkVol``, ``k``, ``*_multiplier`` ...) are
outputs of the reference model and are ignored here; ``Result`` is kept as ``DeriveExpected``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from marginopt._io import parse_json, read_bytes
from marginopt.derive._params import (
    DeriveCaseError,
    DeriveParams,
    load_params,
    raise_from_validation,
)

FloatArray = NDArray[np.float64]


def _num(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _flag(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    return v


Num = Annotated[float, BeforeValidator(_num)]
Flag = Annotated[bool, BeforeValidator(_flag)]

_CFG = ConfigDict(allow_inf_nan=False, frozen=True, extra="ignore")


class _CollateralIn(BaseModel):
    model_config = _CFG
    Name: str
    Amount: Num
    Price: Num
    Confidence: Num
    IsRiskCancelling: Flag
    IMHaircut: Num
    MMHaircut: Num


class _OptionIn(BaseModel):
    model_config = _CFG
    Expiry: int
    Strike: Num
    IsCall: Flag
    Amount: Num
    #: the expiry as a Unix timestamp (the exchange's files spell the key ``ExiryTs``)
    ExiryTs: int | None = None


class _FeedIn(BaseModel):
    model_config = _CFG
    FeedExpiry: int
    Forward: Num
    ForwardConfidence: Num
    Rate: Num
    RateConfidence: Num
    SVIparam: tuple[Num, Num, Num, Num, Num, Num, Num]
    OptionVolConfidences: Num


class _ScenarioIn(BaseModel):
    model_config = _CFG
    Cash: Num
    Collaterals: list[_CollateralIn] = []
    SpotPrice: Num
    SpotConfidence: Num
    NumPerps: Num = 0.0
    PerpPrice: Num = 0.0
    PerpConfidence: Num = 1.0
    UnrealisedPerpPNL: Num = 0.0
    UnrealisedFunding: Num = 0.0
    StablePrice: Num
    StableConfidence: Num = 1.0
    Options: list[_OptionIn] = []
    OptionFeeds: list[_FeedIn] = []


class _CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    Scenario: _ScenarioIn
    Parameters: dict[str, Any] = {}
    Result: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeriveExpected:
    """The exchange's published outputs (``Result``), losses as signed scenario P&L."""

    regular_pnl: FloatArray
    tail_pnl: FloatArray
    skew_names: tuple[str, ...]
    skew_pnl: FloatArray
    raw: Mapping[str, Any]

    def scalar(self, key: str) -> float:
        return float(self.raw[key])


@dataclass(frozen=True, slots=True)
class DeriveCase:
    """One account + market snapshot + rule parameters, as numpy arrays.

    Options are in file order; ``option_expiry`` is seconds to expiry. Feeds are one row per
    expiry (``feed_*``), ``feed_svi`` columns are ``a, b, rho, m, sigma, forward, tau``.
    ``valuation_time`` (Unix seconds) is ``ExiryTs - Expiry`` of the options when the file gives
    their timestamps (the same for every option, or the file is rejected), else None.
    """

    name: str
    cash: float
    spot: float
    spot_confidence: float
    perp_position: float
    perp_price: float
    perp_confidence: float
    unrealised_perp_pnl: float
    unrealised_funding: float
    stable_price: float
    stable_confidence: float
    option_expiry: NDArray[np.int64]
    option_strike: FloatArray
    option_is_call: NDArray[np.bool_]
    option_amount: FloatArray
    feed_expiry: NDArray[np.int64]
    feed_forward: FloatArray
    feed_forward_confidence: FloatArray
    feed_rate: FloatArray
    feed_rate_confidence: FloatArray
    feed_svi: FloatArray
    feed_vol_confidence: FloatArray
    collateral_name: tuple[str, ...]
    collateral_amount: FloatArray
    collateral_price: FloatArray
    collateral_confidence: FloatArray
    collateral_risk_cancelling: NDArray[np.bool_]
    collateral_im_haircut: FloatArray
    collateral_mm_haircut: FloatArray
    params: DeriveParams
    expected: DeriveExpected | None = None
    valuation_time: int | None = None
    #: per-option mark vol (decimal) used instead of the feeds' SVI (books margined from a
    #: marginopt snapshot); None: the SVI of each option's expiry, as the exchange does
    option_vol: FloatArray | None = None


def _frozen(a: Any, dtype: Any = float) -> NDArray[Any]:
    arr = np.array(a, dtype=dtype)
    arr.setflags(write=False)
    return arr


def _check(ok: bool, msg: str, src: str, fld: str, value: Any = None) -> None:
    if not ok:
        raise DeriveCaseError(msg, source=src, field=fld, value=value)


def _validate_market(s: _ScenarioIn, src: str) -> None:
    _check(s.SpotPrice > 0, "must be positive", src, "Scenario.SpotPrice", s.SpotPrice)
    _check(s.StablePrice > 0, "must be positive", src, "Scenario.StablePrice", s.StablePrice)
    for key in ("SpotConfidence", "PerpConfidence", "StableConfidence"):
        v = getattr(s, key)
        _check(0.0 <= v <= 1.0, "confidence must be in [0, 1]", src, f"Scenario.{key}", v)
    if s.NumPerps != 0:
        _check(s.PerpPrice > 0, "must be positive when perps are held", src,
               "Scenario.PerpPrice", s.PerpPrice)
    feeds: dict[int, int] = {}
    for i, f in enumerate(s.OptionFeeds):
        p = f"Scenario.OptionFeeds[{i}]"
        _check(f.FeedExpiry not in feeds, "duplicate expiry", src, f"{p}.FeedExpiry", f.FeedExpiry)
        feeds[f.FeedExpiry] = i
        _check(f.FeedExpiry >= 0, "must be non-negative", src, f"{p}.FeedExpiry", f.FeedExpiry)
        _check(f.Forward > 0, "must be positive", src, f"{p}.Forward", f.Forward)
        for key in ("ForwardConfidence", "RateConfidence", "OptionVolConfidences"):
            v = getattr(f, key)
            _check(0.0 <= v <= 1.0, "confidence must be in [0, 1]", src, f"{p}.{key}", v)
        a, b, rho, m, sig, fwd, tau = f.SVIparam
        _check(b >= 0 and sig > 0 and fwd > 0 and tau > 0 and -1 < rho < 1,
               "SVI needs b >= 0, -1 < rho < 1, sigma > 0, forward > 0, tau > 0",
               src, f"{p}.SVIparam", list(f.SVIparam))
        _check(a + b * sig >= 0, "SVI needs a + b*sigma >= 0", src, f"{p}.SVIparam",
               list(f.SVIparam))
    for i, o in enumerate(s.Options):
        p = f"Scenario.Options[{i}]"
        _check(o.Expiry in feeds, "no OptionFeeds entry for this expiry", src, f"{p}.Expiry",
               o.Expiry)
        _check(o.Strike > 0, "must be positive", src, f"{p}.Strike", o.Strike)
    for i, c in enumerate(s.Collaterals):
        p = f"Scenario.Collaterals[{i}]"
        _check(c.Amount >= 0, "collateral balances are non-negative", src, f"{p}.Amount", c.Amount)
        _check(c.Price >= 0, "must be non-negative", src, f"{p}.Price", c.Price)
        _check(0.0 <= c.Confidence <= 1.0, "confidence must be in [0, 1]", src,
               f"{p}.Confidence", c.Confidence)
        _check(0.0 <= c.MMHaircut <= 1.0 and 0.0 <= c.IMHaircut
               and c.MMHaircut + c.IMHaircut <= 1.0 + 1e-12,
               "haircuts need 0 <= MM <= 1, IM >= 0 and MM + IM <= 1", src, f"{p}.IMHaircut",
               (c.MMHaircut, c.IMHaircut))


def _valuation_time(s: _ScenarioIn, src: str) -> int | None:
    """``ExiryTs - Expiry``, the same for every option that gives its timestamp."""
    now: int | None = None
    for i, o in enumerate(s.Options):
        if o.ExiryTs is None:
            continue
        t = o.ExiryTs - o.Expiry
        _check(now is None or t == now, f"ExiryTs - Expiry is {t}, not {now} as for the options "
               "before it (one valuation time per file)", src, f"Scenario.Options[{i}].ExiryTs",
               o.ExiryTs)
        now = t
    return now


def _expected(raw: Mapping[str, Any] | None, src: str) -> DeriveExpected | None:
    if raw is None:
        return None
    try:
        reg = [float(r[2]) for r in raw.get("reg_losses", [])]
        tail = [float(r[2]) for r in raw.get("tail_losses", [])]
        skew = [(str(r[0]), float(r[1])) for r in raw.get("skew_losses", [])]
    except (TypeError, ValueError, IndexError) as exc:
        raise DeriveCaseError(f"malformed loss list: {exc}", source=src, field="Result") from exc
    return DeriveExpected(
        regular_pnl=_frozen(reg),
        tail_pnl=_frozen(tail),
        skew_names=tuple(n for n, _ in skew),
        skew_pnl=_frozen([v for _, v in skew]),
        raw=MappingProxyType(dict(raw)),
    )


def case_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>",
                      params_path: str | os.PathLike[str] | None = None,
                      params: DeriveParams | None = None) -> DeriveCase:
    """Validate an already-parsed case mapping (see ``load_case``). ``params``: use these
    parameters as they are (the mapping's ``Parameters`` block must then be empty)."""
    try:
        case = _CaseIn.model_validate(data)
    except ValidationError as err:
        raise raise_from_validation(err, source, "") from err
    s = case.Scenario
    _validate_market(s, source)
    if params is None:
        params = load_params(params_path, override=case.Parameters)
    elif case.Parameters:
        raise DeriveCaseError("give parameters either as params= or in the mapping, not both",
                              source=source, field="Parameters")
    if case.Result is not None:
        exp = _expected(case.Result, source)
        n_kind = {k: params.scenarios.kind.count(k) for k in ("regular", "tail", "skew")}
        got = {"regular": len(exp.regular_pnl), "tail": len(exp.tail_pnl),
               "skew": len(exp.skew_pnl)}
        _check(n_kind == got, f"Result lists {got} scenarios per kind, Parameters.Scenarios "
               f"classify as {n_kind}", source, "Result")
    else:
        exp = None
    feeds = s.OptionFeeds
    return DeriveCase(
        valuation_time=_valuation_time(s, source),
        name=Path(source).stem,
        cash=s.Cash,
        spot=s.SpotPrice,
        spot_confidence=s.SpotConfidence,
        perp_position=s.NumPerps,
        perp_price=s.PerpPrice,
        perp_confidence=s.PerpConfidence,
        unrealised_perp_pnl=s.UnrealisedPerpPNL,
        unrealised_funding=s.UnrealisedFunding,
        stable_price=s.StablePrice,
        stable_confidence=s.StableConfidence,
        option_expiry=_frozen([o.Expiry for o in s.Options], np.int64),
        option_strike=_frozen([o.Strike for o in s.Options]),
        option_is_call=_frozen([o.IsCall for o in s.Options], bool),
        option_amount=_frozen([o.Amount for o in s.Options]),
        feed_expiry=_frozen([f.FeedExpiry for f in feeds], np.int64),
        feed_forward=_frozen([f.Forward for f in feeds]),
        feed_forward_confidence=_frozen([f.ForwardConfidence for f in feeds]),
        feed_rate=_frozen([f.Rate for f in feeds]),
        feed_rate_confidence=_frozen([f.RateConfidence for f in feeds]),
        feed_svi=_frozen([list(f.SVIparam) for f in feeds]).reshape(len(feeds), 7),
        feed_vol_confidence=_frozen([f.OptionVolConfidences for f in feeds]),
        collateral_name=tuple(c.Name for c in s.Collaterals),
        collateral_amount=_frozen([c.Amount for c in s.Collaterals]),
        collateral_price=_frozen([c.Price for c in s.Collaterals]),
        collateral_confidence=_frozen([c.Confidence for c in s.Collaterals]),
        collateral_risk_cancelling=_frozen([c.IsRiskCancelling for c in s.Collaterals], bool),
        collateral_im_haircut=_frozen([c.IMHaircut for c in s.Collaterals]),
        collateral_mm_haircut=_frozen([c.MMHaircut for c in s.Collaterals]),
        params=params,
        expected=exp,
    )


def load_case(path: str | os.PathLike[str], *,
              params_path: str | os.PathLike[str] | None = None) -> DeriveCase:
    """Read a Derive PM2 case file. Parameters: the defaults (``models/derive-pm2.yaml`` or
    ``params_path``) overridden by the case's own ``Parameters`` block."""
    p = Path(path)
    data = parse_json(read_bytes(p, "case file", DeriveCaseError), str(p), DeriveCaseError)
    if not isinstance(data, Mapping):
        raise DeriveCaseError("expected a JSON object with Scenario and Parameters", source=str(p))
    return case_from_mapping(data, source=str(p), params_path=params_path)
