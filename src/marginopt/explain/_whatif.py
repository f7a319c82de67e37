"""What-if: the margin, greeks and per-component breakdown of the book plus hypothetical trades,
and/or under a changed model parameter, against today's. Nothing is optimised.

A parameter is named by its path in the model file: ``POOL.COMPONENT.KEY`` (``ETH.worst_case.
price_range``), deeper keys with more dots (``BTC.worst_case.vol_shock.volatility_range_up``,
``ETH.worst_case.extended_dampener.inverse``), ``POOL.initial.COMPONENT.KEY`` or
``POOL.maintenance.COMPONENT.KEY`` where a component name is in both rule lists, and
``POOL.maintenance_factor``. Values are read as YAML scalars (``0.20``, ``[0.1, 0.2]``) and the
changed model is validated like a model file: a wrong path or value is a ``ModelError`` naming it.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd
import yaml

from ..errors import ModelError
from ..instruments import canonical_name
from ..margins import MarginModel, MarginResult, load_model
from ..market import load_market
from ..portfolio import load_portfolio
from ..rebalance._data import greeks_summary
from ._common import BookLike, MarketLike, ModelLike

_RULES = ("initial", "maintenance")


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=2)
    return f" (did you mean {' or '.join(close)}?)" if close else f" (choices: {', '.join(choices)})"


def _parse_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # validation names it


def set_parameters(model: ModelLike, changes: Mapping[str, Any]) -> MarginModel:
    """``model`` with each ``path: value`` of ``changes`` applied (see the module docstring)."""
    base = changed = load_model(model)
    for path, raw in changes.items():
        # one change at a time, so a value the model refuses is named by its own path
        currencies = copy.deepcopy(changed.model_dump(exclude={"path"})["currencies"])
        _apply(currencies, str(path), _parse_value(raw), base)
        try:
            changed = load_model(changed, currencies=currencies)
        except ModelError as exc:
            raise ModelError(f"{path}={raw} is not a valid value: {exc.message}",
                             source=f"--set {path}", field=str(path), value=raw) from None
    return changed


def _apply(currencies: dict[str, Any], path: str, value: Any, model: MarginModel) -> None:
    parts = [p.strip() for p in path.split(".")]
    where = f"--set {path}"
    if len(parts) < 2 or not all(parts):
        raise ModelError("a parameter path is POOL.COMPONENT.KEY (e.g. ETH.worst_case.price_range) "
                         "or POOL.maintenance_factor", source=where, field=path)
    pools = list(currencies)
    pool = next((p for p in pools if p.upper() == parts[0].upper()), None)
    if pool is None:
        raise ModelError(f"model {model.name} has no pool {parts[0]}{_closest(parts[0], pools)}",
                         source=where, field=path)
    rules = currencies[pool]
    if len(parts) == 2 and parts[1] == "maintenance_factor":
        if rules.get("maintenance_factor") is None:
            raise ModelError(f"pool {pool} gives maintenance as its own components, not a factor",
                             source=where, field=path)
        rules["maintenance_factor"] = value
        return
    lists = [r for r in _RULES if rules.get(r)]
    if parts[1] in _RULES:
        lists, parts = [parts[1]] if rules.get(parts[1]) else [], [parts[0], *parts[2:]]
        if not lists:
            raise ModelError(f"pool {pool} has no {path.split('.')[1]} components", source=where, field=path)
    if len(parts) < 3:
        raise ModelError("name a key of the component: POOL.COMPONENT.KEY", source=where, field=path)
    name, keys = parts[1], parts[2:]
    found = [(r, c) for r in lists for c in rules[r] if c.get("name") == name]
    if not found:
        names = list(dict.fromkeys(c.get("name") for r in lists for c in rules[r]))
        raise ModelError(f"pool {pool} has no component {name}{_closest(name, names)}",
                         source=where, field=path)
    if len(found) > 1:
        raise ModelError(f"component {name} is in both the initial and maintenance rules of {pool}: "
                         f"write {pool}.initial.{name}.{'.'.join(keys)} or "
                         f"{pool}.maintenance.{name}.{'.'.join(keys)}", source=where, field=path)
    target: Any = found[0][1]
    for depth, key in enumerate(keys):
        if not isinstance(target, dict):
            raise ModelError(f"{'.'.join(parts[:2 + depth])} is a value, not a group of keys",
                             source=where, field=path)
        if key in ("type", "name"):
            raise ModelError(f"a component's {key} cannot be changed", source=where, field=path)
        if key not in target:
            raise ModelError(f"{'.'.join([pool, name, *keys[:depth]])} has no key {key}"
                             f"{_closest(key, [str(k) for k in target])}", source=where, field=path)
        if depth == len(keys) - 1:
            target[key] = value
        else:
            target = target[key]


@dataclass(frozen=True)
class WhatIf:
    """The book (and model) today against the book plus ``trades`` under the model with
    ``changes``."""

    model: str
    trades: Mapping[str, float]
    changes: Mapping[str, Any]
    before: MarginResult
    after: MarginResult
    greeks_before: Mapping[str, Mapping[str, float]]
    greeks_after: Mapping[str, Mapping[str, float]]
    positions_after: Mapping[str, float] = field(default_factory=dict)

    @property
    def initial_margin_change_usd(self) -> float:
        return self.after.initial_margin_usd - self.before.initial_margin_usd

    @property
    def maintenance_margin_change_usd(self) -> float:
        return self.after.maintenance_margin_usd - self.before.maintenance_margin_usd

    def to_frame(self) -> pd.DataFrame:
        """Initial margin by pool and component, today and after, in USD."""
        b = self.before.to_frame()[["pool", "component", "initial_margin_usd"]]
        a = self.after.to_frame()[["pool", "component", "initial_margin_usd"]]
        out = pd.merge(b, a, on=["pool", "component"], how="outer", suffixes=("_before", "_after"),
                       sort=False).fillna(0.0)
        out["change_usd"] = out["initial_margin_usd_after"] - out["initial_margin_usd_before"]
        return out

    def greeks_frame(self) -> pd.DataFrame:
        """Net delta (coin), vega (USD per vol point), gamma (coin per 1%) per underlying."""
        rows = []
        for u in dict.fromkeys([*self.greeks_before, *self.greeks_after]):
            for g in ("delta", "vega", "gamma", "delta_usd"):
                b = self.greeks_before.get(u, {}).get(g, 0.0)
                a = self.greeks_after.get(u, {}).get(g, 0.0)
                rows.append({"underlying": u, "greek": g, "before": b, "after": a, "change": a - b})
        return pd.DataFrame(rows, columns=["underlying", "greek", "before", "after", "change"])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "trades": dict(self.trades), "changes": dict(self.changes),
                "initial_margin_change_usd": self.initial_margin_change_usd,
                "maintenance_margin_change_usd": self.maintenance_margin_change_usd,
                "before": self.before.to_dict(), "after": self.after.to_dict(),
                "greeks_before": {k: dict(v) for k, v in self.greeks_before.items()},
                "greeks_after": {k: dict(v) for k, v in self.greeks_after.items()}}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _greeks(book: Any, market: Any) -> dict[str, dict[str, float]]:
    if not len(book):
        return {}
    return greeks_summary(market.pricing_inputs(book.instruments), book.quantities)


def whatif(book: BookLike, market: MarketLike, model: ModelLike = "deribit-pm", *,
           trades: Mapping[str, float] | None = None,
           changes: Mapping[str, Any] | None = None) -> WhatIf:
    """Margin, greeks and per-component margin of the book today and of the book plus ``trades``
    (name -> signed quantity in coin) under the model with ``changes`` (parameter path -> value)."""
    from ..margins import margin
    portfolio = load_portfolio(book)
    snap = load_market(market)
    rules = load_model(model)
    trades = {canonical_name(k): v for k, v in (trades or {}).items()}
    changes = dict(changes or {})
    after_model = set_parameters(rules, changes) if changes else rules
    post = portfolio.apply(trades)
    before = margin(portfolio, snap, rules)
    after = margin(post, snap, after_model)
    return WhatIf(rules.name, {k: float(v) for k, v in trades.items()}, changes, before, after,
                  _greeks(portfolio, snap), _greeks(post, snap), dict(post.positions))


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` strings (``--trade``, ``--set``) as a mapping; a malformed one is a
    ``ModelError`` (for --set) or ``InvalidValue`` (for --trade) naming it."""
    from ..errors import InvalidValue
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip() or not value.strip():
            err = ModelError if what == "--set" else InvalidValue
            raise err(f"give {what} as NAME=VALUE (e.g. "
                      f"{'ETH.worst_case.price_range=0.20' if what == '--set' else 'BTC-PERPETUAL=+1.5'}), "
                      f"got {item!r}", source=what, field=what.lstrip("-"))
        out[name.strip()] = value.strip()
    return out


__all__ = ["WhatIf", "parse_assignments", "set_parameters", "whatif"]
