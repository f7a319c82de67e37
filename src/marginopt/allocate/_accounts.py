"""A desk's accounts and the rules of its allocation (what may move, desk limits), checked where
they come in: each account's venue against its model and snapshot, its currencies against its
model, every move group within one venue and main account."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._io import describe, validation_message
from ..errors import InputError, InvalidValue, SpecError, UnsupportedCurrency
from ..margins import MarginModel, load_model
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ..rebalance import RebalanceSpec, UnderlyingLimits, load_spec
from ._errors import CrossVenueMove, VenueMismatch, WrongVenueSnapshot

#: the venue of each shipped exchange model; other models (house models) need ``venue`` given
MODEL_VENUES: Mapping[str, str] = {"deribit-pm": "deribit", "deribit-standard": "deribit",
                                   "derive-pm2": "derive"}
#: collateral currencies worth one USD each
USD_CURRENCIES = frozenset({"USD", "USDC", "USDT"})


def model_venue(model: MarginModel) -> str | None:
    """The exchange whose rules ``model`` is (None for a house model: the account names it)."""
    declared = getattr(model, "venue", None)   # a model file's ``venue:`` key
    if isinstance(declared, str) and declared != "user":
        return declared
    return MODEL_VENUES.get(model.name)


@dataclass(frozen=True)
class Account:
    """One account of the desk: its venue, margin model, book, the venue's snapshot, its own spec
    (limits, universe, costs, lots, trade bounds), its collateral (``equity``: amount per
    currency, USD value at the snapshot's index) and the main account whose subaccounts may move
    positions and collateral between them. ``buffer_usd`` is kept between its margin and its
    equity; ``market_venue`` is the venue the snapshot says it is of, when it says."""

    name: str
    venue: str
    model: MarginModel
    portfolio: Portfolio
    market: MarketSnapshot
    spec: RebalanceSpec = field(default_factory=RebalanceSpec)
    equity: Mapping[str, float] | None = None
    buffer_usd: float = 0.0
    main_account: str = "main"
    market_venue: str | None = None

    @classmethod
    def build(cls, name: str, *, model: MarginModel | str | Path, portfolio: Any, market: Any,
              venue: str | None = None, spec: Any = None, equity: Mapping[str, float] | float | None = None,
              buffer_usd: float = 0.0, main_account: str | None = None,
              market_venue: str | None = None) -> "Account":
        """An account from anything the loaders take (paths, mappings, loaded objects); a bare
        number as ``equity`` is USD."""
        rules = load_model(model)
        own = model_venue(rules)
        venue = (venue or own or "").strip().lower()
        if not venue:
            raise VenueMismatch(f"model {rules.name} is no exchange's: give the account's venue",
                                row=name, field="venue")
        if own is not None and venue != own:
            raise VenueMismatch(f"model {rules.name} is {own}'s, the account is on {venue}",
                                row=name, field="model", value=rules.name)
        if isinstance(equity, (int, float)) and not isinstance(equity, bool):
            equity = {"USD": float(equity)}
        spec_obj = load_spec(spec)
        if spec_obj.objective == "free_margin":
            raise SpecError("free_margin is an objective of one account; a desk allocation minimises "
                            "the desk's margin plus costs (min_margin or margin_plus_cost)",
                            source=spec_obj.source, row=name, field="objective")
        return cls(name=name, venue=venue, model=rules, portfolio=load_portfolio(portfolio),
                   market=load_market(market), spec=spec_obj,
                   equity=None if equity is None else {str(k).upper(): _amount(v, name, f"equity.{k}")
                                                       for k, v in dict(equity).items()},
                   buffer_usd=_amount(buffer_usd, name, "buffer_usd"),
                   main_account=str(main_account or "main"), market_venue=market_venue)

    @property
    def group(self) -> tuple[str, str]:
        """Accounts that may move positions and collateral between them share this key."""
        return (self.venue, self.main_account)

    def currency_rate(self, currency: str) -> float:
        """USD per unit of a collateral currency, at the snapshot's index."""
        if currency in USD_CURRENCIES:
            return 1.0
        rate = self.market.index_prices.get(currency)
        if rate is None or not math.isfinite(float(rate)) or float(rate) <= 0:
            raise UnsupportedCurrency(f"the snapshot has no index price for collateral in {currency}",
                                      row=self.name, field=f"equity.{currency}")
        return float(rate)

    @property
    def equity_usd(self) -> float | None:
        if self.equity is None:
            return None
        return float(sum(v * self.currency_rate(c) for c, v in self.equity.items()))

    def check(self) -> None:
        """The account's currencies are its model's and its snapshot is its venue's."""
        if self.market_venue is not None and self.market_venue.lower() != self.venue:
            raise WrongVenueSnapshot(f"the snapshot is {self.market_venue}'s, the account is on {self.venue}",
                                     source=self.market.source, row=self.name, field="market")
        m = self.model
        for inst in self.portfolio.instruments:
            if inst.settlement.value not in m.settlements:
                raise UnsupportedCurrency(f"model {m.name} does not margin {inst.settlement.value} "
                                          f"contracts ({inst.name})", row=self.name, field="portfolio",
                                          value=inst.name)
            if m.pooling != "single" and inst.underlying not in m.currencies:
                raise UnsupportedCurrency(f"model {m.name} has no parameters for {inst.underlying} "
                                          f"({inst.name}; it covers {', '.join(m.currencies)})",
                                          row=self.name, field="portfolio", value=inst.name)
        for ccy in (self.equity or {}):
            # collateral counts in a currency the model margins (or in USD and stable coins)
            if ccy in USD_CURRENCIES:
                continue
            if m.pooling == "single" or ccy not in m.currencies:
                raise UnsupportedCurrency(f"model {m.name} has no {ccy} margin currency "
                                          f"(collateral it takes: "
                                          f"{', '.join(sorted(set(USD_CURRENCIES) | (set() if m.pooling == 'single' else set(m.currencies))))})",
                                          row=self.name, field=f"equity.{ccy}", value=ccy)
            self.currency_rate(ccy)


def _amount(v: Any, account: str, fld: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v < 0:
        raise InvalidValue(f"must be a finite amount of at least 0, got {v!r}", row=account, field=fld,
                           value=v)
    return float(v)


# --------------------------------------------------------------------------- the desk's rules
class MovePolicy(BaseModel):
    """Moves of positions between subaccounts of one main account (Deribit's
    ``private/move_positions``), priced at mark: they change no one's P&L."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    allowed: bool = True
    #: ``held``: any instrument an account of the group holds; or a list of instrument names
    instruments: Literal["held"] | list[str] = "held"
    #: instruments never moved
    exclude: list[str] = Field(default_factory=list)
    #: fee per unit moved, as a fraction of its USD notional (index x quantity)
    fee_rate: float = Field(0.0, ge=0)
    #: a move relocates positions already held: per instrument, the group's gross position (the
    #: sum of each account's absolute position) is never larger after the moves than before
    relocate_only: bool = True
    #: explicit groups of accounts that may move between them (default: every account of one
    #: venue and main account together)
    groups: list[list[str]] | None = None

    @field_validator("instruments", "exclude", mode="after")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return [n.strip().upper() for n in v] if isinstance(v, list) else v


class TransferPolicy(BaseModel):
    """Collateral transfers between subaccounts of one main account, in one currency (Deribit's
    ``private/submit_transfer_between_subaccounts``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    allowed: bool = False
    #: fee per USD transferred
    fee_rate: float = Field(0.0, ge=0)


class DeskRules(BaseModel):
    """What the allocation may do across accounts and the desk's own limits (on aggregate net
    greeks per underlying, every account and venue together; same keys as a spec's limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    limits: dict[str, UnderlyingLimits] = Field(default_factory=dict)
    moves: MovePolicy = MovePolicy()
    transfers: TransferPolicy = TransferPolicy()
    #: trades on the venues' quotes are part of the allocation (false: moves and transfers only)
    trades: bool = True
    #: an allocation must save at least this much (USD, net of costs and fees), or none is proposed
    min_saving_usd: float = Field(0.01, ge=0)
    #: a cvxpy solver tried first (then its class's chain)
    solver: str | None = None
    #: split the saving into what moves alone give and what trades add (one more solve)
    split_savings: bool = True

    @field_validator("limits", mode="before")
    @classmethod
    def _upper_keys(cls, v: Any) -> Any:
        return RebalanceSpec._upper_keys(v)

    @field_validator("solver", mode="after")
    @classmethod
    def _known_solver(cls, v: str | None) -> str | None:
        from ..rebalance._spec import check_solver
        out = check_solver(v)
        if out in ("native", "cvxpy"):
            raise ValueError("a desk allocation is one cvxpy problem: name a cvxpy solver (HIGHS, CLARABEL, ...)")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "<memory>") -> "DeskRules":
        if data is not None and not isinstance(data, Mapping):
            raise SpecError(f"desk rules are a mapping (limits, moves, transfers), got {describe(data)}",
                            source=source)
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            msg, loc = validation_message(exc, cls)
            raise SpecError(msg, source=source, field=loc) from None


def load_rules(rules: DeskRules | Mapping[str, Any] | None) -> DeskRules:
    if isinstance(rules, DeskRules):
        return rules
    return DeskRules.from_dict(rules)


def move_groups(accounts: Sequence[Account], rules: DeskRules) -> list[list[int]]:
    """Indices of the accounts that may move between them, one list per group (groups of one
    account are left out). Explicit groups must stay within one venue and main account."""
    if not rules.moves.allowed and not rules.transfers.allowed:
        return []
    names = [a.name for a in accounts]
    if rules.moves.groups is None:
        by: dict[tuple[str, str], list[int]] = {}
        for k, a in enumerate(accounts):
            by.setdefault(a.group, []).append(k)
        return [g for g in by.values() if len(g) > 1]
    out: list[list[int]] = []
    seen: dict[str, int] = {}
    for gi, group in enumerate(rules.moves.groups):
        idx = []
        for n in group:
            if n not in names:
                raise InputError(f"moves.groups names {n!r}, not an account of the desk "
                                 f"({', '.join(names)})", field=f"moves.groups[{gi}]", value=n)
            if n in seen:
                raise InputError(f"account {n} is in two move groups", field=f"moves.groups[{gi}]", value=n)
            seen[n] = gi
            idx.append(names.index(n))
        first = accounts[idx[0]]
        for k in idx[1:]:
            a = accounts[k]
            if a.venue != first.venue:
                raise CrossVenueMove(f"a move between {first.name} ({first.venue}) and {a.name} "
                                     f"({a.venue}): positions move only within one venue",
                                     row=a.name, field=f"moves.groups[{gi}]")
            if a.main_account != first.main_account:
                raise CrossVenueMove(f"a move between {first.name} (main account {first.main_account}) "
                                     f"and {a.name} (main account {a.main_account}): positions move only "
                                     "between subaccounts of one main account", row=a.name,
                                     field=f"moves.groups[{gi}]")
        if len(idx) > 1:
            out.append(idx)
    return out


def check_desk(accounts: Sequence[Account]) -> None:
    """Names unique; accounts of one venue priced on one snapshot (same time, same marks)."""
    seen: set[str] = set()
    for a in accounts:
        if a.name in seen:
            raise InputError(f"account {a.name} is listed twice", row=a.name, field="name")
        seen.add(a.name)
        a.check()
    first: dict[str, Account] = {}
    for a in accounts:
        f = first.setdefault(a.venue, a)
        if f is a or f.market is a.market:
            continue
        if f.market.valuation_time != a.market.valuation_time or \
                dict(f.market.index_prices) != dict(a.market.index_prices):
            raise WrongVenueSnapshot(f"accounts {f.name} and {a.name} of {a.venue} are priced on "
                                     f"different snapshots ({f.market.valuation_time:%Y-%m-%d %H:%M} and "
                                     f"{a.market.valuation_time:%Y-%m-%d %H:%M} UTC, or other index "
                                     "prices): a venue's accounts share its snapshot",
                                     source=a.market.source, row=a.name, field="market")
