"""Margin models as data: a YAML file per rule set, validated by pydantic, bound to a book."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._io import describe, read_bytes, parse_yaml, validation_message
from ..errors import ModelError, UnsupportedCurrency, UnsupportedInstrument
from ..instruments import Instrument, Settlement
from ..market import MarketSnapshot
from ..venues import Venue, naming_venue, registry_generation, venue as find_venue, venues
from ._base import AnyComponentSpec, BoundComponent, PoolContext

SINGLE_POOL = "ALL"


class PoolRules(BaseModel):
    """The rules of one currency: initial-margin components, and maintenance as a factor of the
    initial margin or as its own components."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    initial: list[AnyComponentSpec]
    maintenance: list[AnyComponentSpec] | None = None
    maintenance_factor: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_maintenance_rule(self) -> "PoolRules":
        if (self.maintenance is None) == (self.maintenance_factor is None):
            raise ValueError("give exactly one of 'maintenance' and 'maintenance_factor'")
        return self


class MarginModel(BaseModel):
    """A margin rule set. ``pooling: per_underlying`` margins each underlying alone (coin-settled
    apart from USDC-settled, each in its own currency); ``single`` margins the whole book in USD
    under the rules given for ``ALL``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    description: str = ""
    source: str = ""
    #: the venue whose rules these are (``marginopt.venues``): the instruments it margins, and
    #: the amounts and open-interest units the optimizer trades them in
    venue: str = "deribit"
    pooling: Literal["per_underlying", "single"] = "per_underlying"
    settlements: list[Literal["inverse", "linear"]] = ["inverse", "linear"]
    currencies: dict[str, PoolRules]
    notes: list[str] = []
    path: Path | None = Field(None, exclude=True)

    @field_validator("venue")
    @classmethod
    def _registered_venue(cls, v: str) -> str:
        if v not in venues():
            raise ValueError(f"unknown venue '{v}' (registered: {', '.join(venues())}); a venue "
                             "module registers its venue when imported")
        return v

    @property
    def trading_venue(self) -> Venue:
        """The ``Venue`` named by ``venue``."""
        return find_venue(self.venue)

    @model_validator(mode="after")
    def _single_pool_key(self) -> "MarginModel":
        if self.pooling == "single" and list(self.currencies) != [SINGLE_POOL]:
            raise ValueError(f"a single-pool model gives its rules under '{SINGLE_POOL}' only")
        return self

    @property
    def convex(self) -> bool:
        return all(c.convex for r in self.currencies.values()
                   for c in [*r.initial, *(r.maintenance or [])])

    def bind(self, instruments: Sequence[Instrument], market: MarketSnapshot) -> "BoundModel":
        """Bind the rules to a list of instruments (the book, or an optimizer's universe)."""
        instruments = tuple(instruments)
        bound = []
        layout = self._layout(instruments)  # first: an instrument the rules cannot margin is that error
        everything = market.pricing_inputs(instruments)  # once; each pool takes its rows
        for pool in layout:
            rules = self.currencies[pool.underlying]
            ctx = PoolContext(
                pool=pool.name, underlying=pool.underlying, settlement=pool.settlement,
                instruments=pool.instruments, inputs=everything.take(pool.columns, pool.instruments),
                market=market, model_dir=self.path.parent if self.path else None,
                structure=pool.structure)
            initial = [c.bind(ctx) for c in rules.initial]
            maintenance = [c.bind(ctx) for c in rules.maintenance] if rules.maintenance else None
            bound.append(BoundPool(ctx.pool, ctx.currency, ctx.usd_rate, pool.columns,
                                   initial, maintenance, rules.maintenance_factor))
        return BoundModel(self, instruments, bound)

    def _layout(self, instruments: tuple[Instrument, ...]) -> list["_PoolLayout"]:
        """The pools of an instrument list and their columns, checked once per list (a warm
        optimizer re-binds the same universe to every snapshot)."""
        key = (registry_generation(), tuple([i.name for i in instruments]))
        layouts = _layouts_of(self)
        known = layouts.get(key)
        if known is not None:
            return known
        pools: dict[tuple[str, Settlement | None], list[int]] = {}
        place = self.trading_venue
        for j, inst in enumerate(instruments):
            if not place.accepts(inst):
                home = naming_venue(inst.name)
                whose = f"venue {home.name}'s" if home is not None else "an instrument of no venue"
                raise UnsupportedInstrument(f"model {self.name} margins {place.name} instruments, "
                                            f"not {whose}", row=inst.name, field="instrument")
            if inst.settlement.value not in self.settlements:
                raise UnsupportedCurrency(f"model {self.name} does not margin {inst.settlement.value} "
                                          "contracts", row=inst.name, field="instrument")
            if self.pooling == "single":
                pool_key = (SINGLE_POOL, None)
            else:
                if inst.underlying not in self.currencies:
                    raise UnsupportedCurrency(
                        f"model {self.name} has no parameters for {inst.underlying} "
                        f"(it covers {', '.join(self.currencies)})", row=inst.name, field="instrument")
                pool_key = (inst.underlying, inst.settlement)
            pools.setdefault(pool_key, []).append(j)
        if self.pooling == "single" and not pools:
            # one account-wide pool exists even with no positions: its components may charge
            # for account state (e.g. Derive collateral) that a flat book still carries
            pools[(SINGLE_POOL, None)] = []
        layout = []
        for (underlying, settlement), cols in pools.items():
            columns = np.asarray(cols, dtype=int)
            columns.flags.writeable = False
            layout.append(_PoolLayout(
                underlying if settlement in (None, Settlement.INVERSE) else f"{underlying}_USDC",
                underlying, settlement, columns, tuple(instruments[j] for j in cols), {}))
        if len(layouts) >= _LAYOUTS_KEPT:
            del layouts[next(iter(layouts))]  # the oldest
        layouts[key] = layout
        return layout


#: instrument lists whose pool layout a model remembers
_LAYOUTS_KEPT = 32
#: each live model's layouts, by ``id`` (kept out of the model: a cache is not part of its
#: value, its equality or its pickle); an entry goes when its model is collected
_LAYOUTS: dict[int, dict[tuple, list["_PoolLayout"]]] = {}


def _layouts_of(model: MarginModel) -> dict[tuple, list["_PoolLayout"]]:
    known = _LAYOUTS.get(id(model))
    if known is None:
        known = _LAYOUTS[id(model)] = {}
        weakref.finalize(model, _LAYOUTS.pop, id(model), None)
    return known


@dataclass(frozen=True)
class _PoolLayout:
    """One pool of an instrument list: its columns and what its components derived from the
    instruments alone (``PoolContext.memo``)."""

    name: str
    underlying: str
    settlement: Settlement | None
    columns: np.ndarray
    instruments: tuple[Instrument, ...]
    structure: dict[str, Any]


@dataclass(frozen=True)
class BoundPool:
    """One margin pool bound to the market: components over the pool's columns of the universe."""

    name: str
    currency: str
    usd_rate: float
    columns: np.ndarray
    initial: list[BoundComponent]
    maintenance: list[BoundComponent] | None
    maintenance_factor: float | None

    @property
    def components(self) -> list[BoundComponent]:
        return [*self.initial, *(self.maintenance or [])]

    def evaluate(self, x_universe: np.ndarray) -> "PoolMargin":
        x = x_universe[self.columns]
        im_parts = {c.name: c.evaluate(x) for c in self.initial}
        initial = float(sum(im_parts.values()))
        if self.maintenance is None:
            mm_parts = {k: self.maintenance_factor * v for k, v in im_parts.items()}
        else:
            mm_parts = {c.name: c.evaluate(x) for c in self.maintenance}
        details: dict[str, Any] = {}
        for c in self.initial:
            details.update({k: v for k, v in c.details(x).items() if k not in details})
        return PoolMargin(
            currency=self.currency, usd_rate=self.usd_rate,
            initial_margin=initial, maintenance_margin=float(sum(mm_parts.values())),
            components=im_parts, maintenance_components=mm_parts,
            worst_scenario=details.get("worst_scenario"),
            scenario_labels=tuple(details.get("scenario_labels", ())),
            scenario_pnl=tuple(details.get("scenario_pnl", ())),
            details={k: v for k, v in details.items()
                     if k not in ("worst_scenario", "scenario_labels", "scenario_pnl")})


@dataclass(frozen=True)
class BoundModel:
    """A model bound to a universe of instruments and a market snapshot."""

    model: MarginModel
    instruments: tuple[Instrument, ...]
    pools: list[BoundPool]

    @property
    def convex(self) -> bool:
        return all(c.convex for p in self.pools for c in p.components)

    def evaluate(self, x: np.ndarray) -> "MarginResult":
        x = np.asarray(x, dtype=float)
        if x.shape != (len(self.instruments),):
            raise ValueError(f"positions must have shape ({len(self.instruments)},), got {x.shape}")
        by_pool = {p.name: p.evaluate(x) for p in self.pools}
        return MarginResult(
            model=self.model.name,
            initial_margin_usd=float(sum(m.initial_margin * m.usd_rate for m in by_pool.values())),
            maintenance_margin_usd=float(sum(m.maintenance_margin * m.usd_rate for m in by_pool.values())),
            by_underlying=by_pool)

    def initial_margin_usd(self, x: np.ndarray) -> float:
        """Initial margin in USD without building the report (the optimizer's hot check)."""
        return float(sum(p.usd_rate * sum(c.evaluate(x[p.columns]) for c in p.initial)
                         for p in self.pools))


@dataclass(frozen=True)
class PoolMargin:
    currency: str
    usd_rate: float
    initial_margin: float
    maintenance_margin: float
    components: Mapping[str, float]
    maintenance_components: Mapping[str, float]
    worst_scenario: str | None = None
    scenario_labels: tuple[str, ...] = ()
    scenario_pnl: tuple[float, ...] = ()
    #: model-specific facts (e.g. Derive's own IM/MM figure and each contingency)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "usd_rate": self.usd_rate,
            "initial_margin": self.initial_margin,
            "maintenance_margin": self.maintenance_margin,
            "initial_margin_usd": self.initial_margin * self.usd_rate,
            "maintenance_margin_usd": self.maintenance_margin * self.usd_rate,
            "components": dict(self.components),
            "maintenance_components": dict(self.maintenance_components),
            "worst_scenario": self.worst_scenario,
            "scenario_labels": list(self.scenario_labels),
            "scenario_pnl": list(self.scenario_pnl),
            **({"details": dict(self.details)} if self.details else {}),
        }


@dataclass(frozen=True)
class MarginResult:
    """Margin of a book: totals in USD and, per pool, in the pool's own currency."""

    model: str
    initial_margin_usd: float
    maintenance_margin_usd: float
    by_underlying: Mapping[str, PoolMargin] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "initial_margin_usd": self.initial_margin_usd,
            "maintenance_margin_usd": self.maintenance_margin_usd,
            "by_underlying": {k: v.to_dict() for k, v in self.by_underlying.items()},
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """One row per pool and component, with the value in the pool currency and in USD."""
        rows = [{"pool": pool, "currency": m.currency, "component": name, "initial_margin": v,
                 "initial_margin_usd": v * m.usd_rate}
                for pool, m in self.by_underlying.items() for name, v in m.components.items()]
        return pd.DataFrame(rows, columns=["pool", "currency", "component", "initial_margin",
                                           "initial_margin_usd"])


# --------------------------------------------------------------------------- loading
#: validated models by (file, mtime, size), for load_model without overrides or inputs
_FILE_CACHE: dict[tuple[str, int, int], MarginModel] = {}


def _models_dir() -> Path:
    return Path(str(resources.files("marginopt") / "models"))


def available_models() -> dict[str, MarginModel]:
    """Every model shipped with marginopt, by name."""
    out = {}
    for path in sorted(_models_dir().glob("*.yaml")):
        try:
            out[path.stem] = load_model(path)
        except ModelError:
            continue  # a model file that needs extra inputs (e.g. a matrix path) is listed by name only
    return out


def model_names() -> list[str]:
    return sorted(p.stem for p in _models_dir().glob("*.yaml"))


def load_model(
    model: str | Path | Mapping[str, Any] | MarginModel,
    *,
    scenario_matrix: str | Path | None = None,
    covariance: str | Path | list[list[float]] | np.ndarray | None = None,
    **overrides: Any,
) -> MarginModel:
    """A model by shipped name (``deribit-pm``), YAML path, dict, or an existing model.

    ``scenario_matrix`` and ``covariance`` fill those inputs of every component that takes them;
    ``overrides`` replace top-level keys before validation."""
    component_inputs: dict[str, Any] = {}
    if scenario_matrix is not None:
        component_inputs["matrix"] = str(Path(scenario_matrix).resolve())
    if covariance is not None:
        component_inputs["covariance"] = (str(Path(covariance).resolve())
                                          if isinstance(covariance, (str, Path)) else np.asarray(covariance).tolist())
    if isinstance(model, MarginModel) and not overrides and not component_inputs:
        return model
    path: Path | None = None
    cache_key: tuple[str, int, int] | None = None
    if isinstance(model, MarginModel):
        data: Any = model.model_dump(exclude={"path"})
        path = model.path
    elif isinstance(model, Mapping):
        data = dict(model)
    else:
        if not isinstance(model, (str, Path)) or not str(model):
            raise ModelError(f"no margin model given: a shipped name ({', '.join(model_names())}), "
                             f"a YAML file or a mapping, got {describe(model)}", field="model")
        candidate = Path(model)
        shipped = _models_dir() / f"{model}.yaml"
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            path = candidate
        elif shipped.exists():
            path = shipped
        else:
            raise ModelError(f"no margin model '{model}' (shipped: {', '.join(model_names())})",
                             field="model")
        stat = path.stat()
        cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if not overrides and not component_inputs and cache_key in _FILE_CACHE:
            return _FILE_CACHE[cache_key]
        data = parse_yaml(read_bytes(path, "margin model file", ModelError), str(path), ModelError)
    if data is not None and not isinstance(data, Mapping):
        raise ModelError(f"a margin model is a mapping of keys (name, currencies, ...), got "
                         f"{describe(data)}: is it the right file?",
                         source=str(path) if path else None)
    data = {**(data or {}), **overrides}
    currencies = data.get("currencies")
    for rules in (currencies.values() if isinstance(currencies, Mapping) else ()):
        if not isinstance(rules, Mapping):
            continue  # validation names it
        for comps in (rules.get("initial"), rules.get("maintenance")):
            for comp in (comps if isinstance(comps, list) else ()):
                if isinstance(comp, dict):
                    comp.update({k: v for k, v in component_inputs.items() if k in comp})
    try:
        model_obj = MarginModel.model_validate({**data, "path": path})
        if cache_key is not None and not overrides and not component_inputs:
            # YAML parsing + validation cost ~10 ms, more than binding a 1,000-position book;
            # models are frozen, so a file's model is shared until the file changes
            _FILE_CACHE[cache_key] = model_obj
        return model_obj
    except ValidationError as exc:
        msg, loc = validation_message(exc, MarginModel)
        raise ModelError(msg, source=str(path) if path else None, field=loc) from None
