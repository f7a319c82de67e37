"""Rule parameters of the Derive PM2 model: frozen dataclasses, validated from the exchange's
``Parameters`` block shape (upper-case keys, grouped as in the golden case files).

The default set lives in ``models/derive-pm2.yaml``; a case file's ``Parameters`` block overrides it
key by key (a group given in the case replaces only the keys it names; ``Scenarios`` is replaced as a
whole list).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from marginopt._io import parse_yaml, read_bytes
from marginopt.errors import InputError

FloatArray = NDArray[np.float64]

VolShockDirection = Literal["None", "Up", "Down", "LINEAR", "ABS"]
ScenarioKind = Literal["regular", "tail", "skew"]

_VOL_DIRECTIONS = ("None", "Up", "Down", "LINEAR", "ABS")
_SKEW_DIRECTIONS = ("LINEAR", "ABS")

#: Environment variable naming a parameter file to use instead of ``models/derive-pm2.yaml``.
PARAMS_ENV = "MARGINOPT_DERIVE_PARAMS"


class DeriveCaseError(InputError):
    """A Derive case or parameter file that cannot be used; ``field`` names the offending key
    as a dotted path (``Scenario.Options[3].Strike``)."""


def _key(name: str) -> Any:
    return field(metadata={"key": name})


@dataclass(frozen=True, slots=True)
class VolShockParams:
    """Vol-up/-down multipliers ``1 +/- range * (30d / max(dte, floor))^power`` [v2-core PMRMLib_2]."""

    vol_range_up: float = _key("VOLRANGEUP")
    vol_range_down: float = _key("VOLRANGEDOWN")
    short_term_power: float = _key("SHORTTERMPOWER")
    long_term_power: float = _key("LONGTERMPOWER")
    dte_floor_days: float = _key("DTE_FLOOR")
    min_vol_up_shock: float = _key("MIN_VOL_EVAL_SHOCKED")


@dataclass(frozen=True, slots=True)
class SkewShockParams:
    """Wing-raising skew scenarios: multiplier cap ``cbase*sqrt(tau) + scale_cap`` reached at k*."""

    linear_scale_cap: float = _key("LINEAR_SCALE_CAP")
    linear_cbase: float = _key("LINEAR_CBASE")
    abs_scale_cap: float = _key("ABS_SCALE_CAP")
    abs_cbase: float = _key("ABS_CBASE")
    min_k_star: float = _key("MIN_K_STAR")
    width_scale: float = _key("MIN_WIDTH_SCALE")
    vol_param_static: float = _key("VOL_PARAM_STATIC")
    vol_param_scale: float = _key("VOL_PARAM_SCALE")


@dataclass(frozen=True, slots=True)
class MarginParams:
    """Loss factors and the static discounting of shocked expiry values."""

    mm_loss_factor: float = _key("MM_LOSS_FACTOR")
    im_loss_factor: float = _key("IM_LOSS_FACTOR")
    short_rate_mult_scale: float = _key("SHORT_RATE_MULTSCALE")
    long_rate_mult_scale: float = _key("LONG_RATE_MULTSCALE")
    short_rate_add_scale: float = _key("SHORT_RATE_ADDSCALE")
    long_rate_add_scale: float = _key("LONG_RATE_ADDSCALE")
    base_static_discount: float = _key("BASE_STATIC_DISCOUNT")
    base_static_discount_neg: float = _key("BASE_STATIC_DISCOUNT_NEG")


@dataclass(frozen=True, slots=True)
class BasisContingencyParams:
    """Forward (basis) contingency: spot up/down re-valuations, factor ``add + mult * tau``."""

    scenario_spot_up: float = _key("SCENARIO_SPOT_UP")
    scenario_spot_down: float = _key("SCENARIO_SPOT_DOWN")
    add_factor: float = _key("BASIS_CONT_ADD_FACTOR")
    mult_factor: float = _key("BASIS_CONT_MULT_FACTOR")


@dataclass(frozen=True, slots=True)
class OtherContingencyParams:
    """Peg-loss IM factor, oracle-confidence contingency, perp and option notional add-ons.

    ``im_*_percent`` are the IM increments *on top of* the MM percentages; the case files also carry
    ``IM_*_PERCENT_NORMAL`` = MM + IM, which the loader only checks for consistency.
    """

    peg_loss_threshold: float = _key("PEG_LOSS_THRESHOLD")
    peg_loss_factor: float = _key("PEG_LOSS_FACTOR")
    conf_threshold: float = _key("CONF_THRESHOLD")
    conf_margin: float = _key("CONF_MARGIN")
    mm_perp_percent: float = _key("MM_PERP_PERCENT")
    im_perp_percent: float = _key("IM_PERP_PERCENT")
    mm_option_percent: float = _key("MM_OPTION_PERCENT")
    im_option_percent: float = _key("IM_OPTION_PERCENT")


@dataclass(frozen=True, slots=True)
class SviParams:
    """Bounds of the SVI evaluation (reference-model constants, not exchange-settable)."""

    k_bound_scale: float = _key("K_BOUND_SCALE")
    max_total_variance: float = _key("MAX_TOTAL_VARIANCE")


@dataclass(frozen=True, slots=True)
class GridParams:
    """How scenarios without an explicit ``Kind`` are classified."""

    regular_spot_range: float = _key("REGULAR_SPOT_RANGE")


@dataclass(frozen=True, slots=True)
class DeriveScenarios:
    """PM2's scenario list, one entry per scenario, in the exchange's order (the engine's own
    grid of price and vol moves is ``marginopt.scenarios.ScenarioGrid``)."""

    spot_shock: FloatArray
    vol_direction: tuple[str, ...]
    dampening: FloatArray
    kind: tuple[str, ...]
    label: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.kind)


@dataclass(frozen=True, slots=True)
class DeriveParams:
    """Every rule parameter of the PM2 model."""

    scenarios: DeriveScenarios
    vol_shock: VolShockParams
    skew_shock: SkewShockParams
    margin: MarginParams
    basis: BasisContingencyParams
    other: OtherContingencyParams
    svi: SviParams
    grid: GridParams


# group name in the Parameters block -> dataclass
_GROUPS: dict[str, type] = {
    "VolShock": VolShockParams,
    "SkewShock": SkewShockParams,
    "Margin": MarginParams,
    "BasisContingency": BasisContingencyParams,
    "OtherContingency": OtherContingencyParams,
    "Svi": SviParams,
    "Grid": GridParams,
}
_ATTR = {
    "VolShock": "vol_shock",
    "SkewShock": "skew_shock",
    "Margin": "margin",
    "BasisContingency": "basis",
    "OtherContingency": "other",
    "Svi": "svi",
    "Grid": "grid",
}
# keys the exchange files carry that are derived from others (checked, not stored)
_DERIVED = {
    "OtherContingency": {
        "IM_PERP_PERCENT_NORMAL": ("MM_PERP_PERCENT", "IM_PERP_PERCENT"),
        "IM_OPTION_PERCENT_NORMAL": ("MM_OPTION_PERCENT", "IM_OPTION_PERCENT"),
    }
}

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def _group_model(group: str, cls: type) -> type[BaseModel]:
    spec: dict[str, Any] = {f.metadata["key"]: (float, ...) for f in fields(cls)}
    for extra in _DERIVED.get(group, {}):
        spec[extra] = (float | None, None)
    return create_model(f"_{group}Block", __config__=_STRICT, **spec)


_GROUP_MODELS = {g: _group_model(g, c) for g, c in _GROUPS.items()}


class _ScenarioIn(BaseModel):
    model_config = _STRICT
    SpotShock: float
    VolShockDirection: VolShockDirection
    DampeningFactor: float
    Kind: ScenarioKind | None = None


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def raise_from_validation(err: ValidationError, source: str | None, prefix: str) -> DeriveCaseError:
    """Turn pydantic's first error into a ``DeriveCaseError`` naming the field's dotted path."""
    first = err.errors()[0]
    where = _loc(prefix, tuple(first["loc"]))
    return DeriveCaseError(first["msg"], source=source, field=where, value=first.get("input"))


def default_params_path() -> Path:
    """``$MARGINOPT_DERIVE_PARAMS`` if set, else the repository's ``models/derive-pm2.yaml``
    (falling back to a copy shipped inside the package)."""
    env = os.environ.get(PARAMS_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    repo_copy = here.parents[3] / "models" / "derive-pm2.yaml"
    if repo_copy.exists():
        return repo_copy
    return here.parents[1] / "models" / "derive-pm2.yaml"


def read_params_block(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The raw ``Parameters`` mapping of a YAML (or JSON) parameter file."""
    p = Path(path) if path is not None else default_params_path()
    data = parse_yaml(read_bytes(p, "parameter file", DeriveCaseError), str(p), DeriveCaseError)
    if isinstance(data, Mapping) and "Parameters" in data:
        data = data["Parameters"]
    elif isinstance(data, Mapping) and "currencies" in data:
        data = _model_parameters(data)
    if not isinstance(data, Mapping):
        raise DeriveCaseError("expected a mapping of parameter groups", source=str(p),
                              field="Parameters")
    return dict(data)


def _model_parameters(model: Mapping[str, Any]) -> Any:
    """The ``parameters`` of the first ``derive_pm2`` component of a margin-model mapping (the
    shipped ``models/derive-pm2.yaml`` keeps the default set there)."""
    for rules in (model.get("currencies") or {}).values():
        for comp in [*((rules or {}).get("initial") or []), *((rules or {}).get("maintenance") or [])]:
            if isinstance(comp, Mapping) and comp.get("type") == "derive_pm2" \
                    and isinstance(comp.get("parameters"), Mapping):
                return comp["parameters"]
    return None


def params_to_block(params: DeriveParams) -> dict[str, Any]:
    """The exchange's ``Parameters`` block of ``params`` (full, with the derived ``*_NORMAL``
    totals; scenarios with their ``Kind``): ``build_params(params_to_block(p)) == p``."""
    block: dict[str, Any] = {
        group: {f.metadata["key"]: float(getattr(getattr(params, _ATTR[group]), f.name))
                for f in fields(cls)}
        for group, cls in _GROUPS.items()
    }
    for group, derived in _DERIVED.items():  # the exchange's totals, so a merge stays consistent
        for key, (a, b) in derived.items():
            block[group][key] = block[group][a] + block[group][b]
    sc = params.scenarios
    block["Scenarios"] = [
        {"SpotShock": float(sc.spot_shock[i]), "VolShockDirection": sc.vol_direction[i],
         "DampeningFactor": float(sc.dampening[i]), "Kind": sc.kind[i]}
        for i in range(len(sc))
    ]
    return block


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Key-by-key override of parameter groups; ``Scenarios`` is replaced whole."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for group, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(group), Mapping):
            out[group] = {**out[group], **value}
        else:
            out[group] = value
    return out


def _scenario_label(kind: str, shock: float, direction: str) -> str:
    if kind == "skew":
        return direction if abs(shock - 1.0) < 1e-15 else f"{direction}_SPOT_SHOCK"
    return f"{kind} {shock - 1.0:+.4g} {direction.lower()}"


def build_params(block: Mapping[str, Any], source: str | None = None) -> DeriveParams:
    """Validate a full ``Parameters`` mapping into ``DeriveParams``."""
    prefix = "Parameters"
    known = set(_GROUPS) | {"Scenarios"}
    for group in block:
        if group not in known:
            raise DeriveCaseError(f"unknown parameter group (known: {sorted(known)})",
                                  source=source, field=f"{prefix}.{group}")
    groups: dict[str, Any] = {}
    for group, cls in _GROUPS.items():
        if group not in block:
            raise DeriveCaseError("missing parameter group", source=source,
                                  field=f"{prefix}.{group}")
        try:
            model = _GROUP_MODELS[group].model_validate(block[group])
        except ValidationError as err:
            raise raise_from_validation(err, source, f"{prefix}.{group}") from err
        values = model.model_dump()
        for derived, (a, b) in _DERIVED.get(group, {}).items():
            given = values.pop(derived, None)
            if given is not None and not math.isclose(given, values[a] + values[b],
                                                      rel_tol=1e-9, abs_tol=1e-12):
                raise DeriveCaseError(f"must equal {a} + {b} = {values[a] + values[b]!r}",
                                      source=source, field=f"{prefix}.{group}.{derived}",
                                      value=given)
        groups[_ATTR[group]] = cls(**{f.name: values[f.metadata["key"]] for f in fields(cls)})

    raw = block.get("Scenarios")
    if not isinstance(raw, list) or not raw:
        raise DeriveCaseError("expected a non-empty list of scenarios", source=source,
                              field=f"{prefix}.Scenarios")
    scen = []
    for i, item in enumerate(raw):
        try:
            scen.append(_ScenarioIn.model_validate(item))
        except ValidationError as err:
            raise raise_from_validation(err, source, f"{prefix}.Scenarios[{i}]") from err
    rng = groups["grid"].regular_spot_range
    kinds, labels = [], []
    for i, s in enumerate(scen):
        is_skew = s.VolShockDirection in _SKEW_DIRECTIONS
        if s.Kind is not None:
            if (s.Kind == "skew") != is_skew:
                raise DeriveCaseError("Kind 'skew' goes with VolShockDirection LINEAR/ABS only",
                                      source=source, field=f"{prefix}.Scenarios[{i}].Kind",
                                      value=s.Kind)
            kind = s.Kind
        elif is_skew:
            kind = "skew"
        else:
            kind = "tail" if abs(s.SpotShock - 1.0) > rng + 1e-12 else "regular"
        if s.SpotShock <= 0.0:
            raise DeriveCaseError("spot shock must be positive", source=source,
                                  field=f"{prefix}.Scenarios[{i}].SpotShock", value=s.SpotShock)
        if s.DampeningFactor < 0.0:
            raise DeriveCaseError("dampening must be non-negative", source=source,
                                  field=f"{prefix}.Scenarios[{i}].DampeningFactor",
                                  value=s.DampeningFactor)
        kinds.append(kind)
        labels.append(_scenario_label(kind, s.SpotShock, s.VolShockDirection))
    grid = DeriveScenarios(
        spot_shock=np.array([s.SpotShock for s in scen], dtype=float),
        vol_direction=tuple(s.VolShockDirection for s in scen),
        dampening=np.array([s.DampeningFactor for s in scen], dtype=float),
        kind=tuple(kinds),
        label=tuple(labels),
    )
    for arr in (grid.spot_shock, grid.dampening):
        arr.setflags(write=False)
    return DeriveParams(scenarios=grid, **groups)


def load_params(path: str | os.PathLike[str] | None = None,
                override: Mapping[str, Any] | None = None) -> DeriveParams:
    """Default parameters (``models/derive-pm2.yaml`` unless ``path``), optionally overridden by a
    ``Parameters``-shaped mapping."""
    p = Path(path) if path is not None else default_params_path()
    return build_params(merge_params(read_params_block(p), override), source=str(p))
