"""Numbers of a rebalance problem: the universe, the bound margin model, limits, costs, bounds.

Everything market-dependent is computed here as numpy arrays; the problem builder turns them into
cvxpy Parameters once and later only assigns new values.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np
import pandas as pd

from ..errors import InputError, SpecError
from ..instruments import Instrument, Kind, parse_instrument
from ..margins import BoundModel, MarginModel
from ..market import MarketSnapshot, PricingInputs
from ..portfolio import Portfolio
from ..venues import Venue, naming_venue, registry_generation
from ._spec import RebalanceSpec, bucket_range

T = TypeVar("T")


@dataclass(frozen=True)
class Universe:
    """Instruments the problem spans (the book's first), their current positions, and which of
    them may trade and how far."""

    instruments: tuple[Instrument, ...]
    x0: np.ndarray
    buy_max: np.ndarray
    sell_max: np.ndarray
    #: instruments considered but left out (name -> reason); nothing is dropped silently
    excluded: dict[str, str] = field(default_factory=dict)
    #: instruments in the book that may not trade (name -> reason)
    frozen: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def names(self) -> list[str]:
        return [i.name for i in self.instruments]


class RowBounds:
    """Rows ``lower <= value <= upper`` where a side may be infinite (``lower``/``upper`` arrays)."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def lower_rows(self) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.lower))

    @property
    def upper_rows(self) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.upper))

    def scale(self) -> np.ndarray:
        """The size a tolerance is relative to: the larger finite bound, at least 1."""
        b = np.where(np.isfinite(self.lower), np.abs(self.lower), 0.0)
        return np.maximum(np.maximum(b, np.where(np.isfinite(self.upper), np.abs(self.upper), 0.0)), 1.0)


@dataclass(frozen=True)
class LimitRows(RowBounds):
    """Greek limits as rows ``lo <= G x <= hi`` (one-sided rows kept apart; no infinities)."""

    names: list[str]
    matrix: np.ndarray        # R x N greeks per unit
    lower: np.ndarray         # R (may be -inf)
    upper: np.ndarray         # R (may be +inf)
    #: limits of the spec left out (``limits.ETH`` -> why): a shared spec may name underlyings
    #: this book's universe does not have; those limits constrain nothing and are reported
    skipped: dict[str, str] = field(default_factory=dict)



def _candidates(book: Portfolio, market: MarketSnapshot, spec: RebalanceSpec) -> list[str]:
    held = book.names
    if isinstance(spec.universe, list):
        extra = [n.strip().upper() for n in spec.universe]
    elif spec.universe == "held":
        extra = []
    elif spec.universe == "listed":
        extra = market.instrument_names
    else:  # held+futures: each held underlying's perpetuals and listed futures
        unds = {i.underlying for i in book.instruments}
        extra = [n for n, i in ((n, _try_parse(n)) for n in market.instrument_names)
                 if i is not None and i.underlying in unds and i.kind in (Kind.FUTURE, Kind.PERPETUAL)]
    seen = dict.fromkeys(held)
    seen.update(dict.fromkeys(extra))
    return list(seen)


def _try_parse(name: str) -> Instrument | None:
    try:
        return parse_instrument(name)
    except InputError:
        return None


def _drop_failing(instruments: list[Instrument], held: set[str], excluded: dict[str, str],
                  check: Callable[[list[Instrument]], T]) -> tuple[list[Instrument], T]:
    """Run ``check`` on the whole list (vectorised); while it names a candidate that is not held,
    leave that one out with the reason and retry. An error about a held instrument propagates.
    Returns the instruments kept and what ``check`` returned for them."""
    keep = list(instruments)
    while True:
        try:
            return keep, check(keep)
        except InputError as exc:
            bad = exc.row if isinstance(exc.row, str) else None
            if bad is None or bad in held or bad not in {i.name for i in keep}:
                raise
            excluded[bad] = exc.message
            keep = [i for i in keep if i.name != bad]


def foreign(inst: Instrument, model: MarginModel) -> str | None:
    """Why ``model`` cannot margin ``inst`` because it is another venue's, or None."""
    place = model.trading_venue
    if place.accepts(inst):
        return None
    home = naming_venue(inst.name)  # parsed, so some venue's name
    return f"model {model.name} margins {place.name} instruments, not venue {getattr(home, 'name', '')}'s"


def unmargined(inst: Instrument, model: MarginModel) -> str | None:
    """Why ``model`` has no rules for ``inst`` (its underlying or settlement), or None."""
    if model.pooling != "single" and inst.underlying not in model.currencies:
        return f"model {model.name} has no parameters for {inst.underlying}"
    if inst.settlement.value not in model.settlements:
        return f"model {model.name} does not margin {inst.settlement.value} contracts"
    return None


def bind_priced(instruments: list[Instrument], held: set[str], excluded: dict[str, str],
                market: MarketSnapshot, model: MarginModel
                ) -> tuple[list[Instrument], BoundModel, PricingInputs]:
    """The instruments that can be priced and margined (a candidate that cannot is left out with
    the reason in ``excluded``; a held one's error propagates), the model bound to them and their
    pricing inputs."""
    priced, inputs = _drop_failing(instruments, held, excluded, market.pricing_inputs)
    keep, bound = _drop_failing(priced, held, excluded, lambda insts: model.bind(insts, market))
    if len(keep) != len(priced):
        inputs = market.pricing_inputs(keep)
    return keep, bound, inputs


@dataclass(frozen=True)
class _Structure:
    """What a universe is before any snapshot's numbers: the candidates a model can margin (the
    book's first), those left out and why, and the spec's per-instrument rules as masks. It holds
    for every snapshot listing the same instruments, so a warm optimizer builds it once."""

    book: tuple[str, ...]
    spec: RebalanceSpec
    model: MarginModel
    listing: pd.Index
    generation: int
    instruments: list[Instrument]
    names: list[str]
    excluded: dict[str, str]
    #: per kept instrument: on the do-not-trade list; close-only
    do_not_trade: np.ndarray
    close_only: np.ndarray
    #: per kept instrument: the spec's own cap on a trade (``max_quantity``, by instrument)
    quantity_cap: np.ndarray

    def holds_for(self, book: Portfolio, market: MarketSnapshot, model: MarginModel,
                  spec: RebalanceSpec) -> bool:
        return (spec is self.spec and model is self.model
                and self.generation == registry_generation() and tuple(book.names) == self.book
                and market.rows.index.equals(self.listing))


class UniverseCache:
    """The last few universes' structure (``_Structure``), for an optimizer that re-optimises the
    same book on new snapshots of one market."""

    kept = 4

    def __init__(self) -> None:
        self._entries: list[_Structure] = []

    def get(self, book: Portfolio, market: MarketSnapshot, model: MarginModel,
            spec: RebalanceSpec) -> _Structure:
        for entry in self._entries:
            if entry.holds_for(book, market, model, spec):
                return entry
        entry = _structure(book, market, model, spec)
        self._entries = [entry, *self._entries[: self.kept - 1]]
        return entry


def _structure(book: Portfolio, market: MarketSnapshot, model: MarginModel,
               spec: RebalanceSpec) -> _Structure:
    held = set(book.names)
    excluded: dict[str, str] = {}
    keep: list[Instrument] = []
    listed = set(market.rows.index)
    _check_spec_names(spec, held | listed, model.trading_venue)
    # risk controls fail closed: a name that is neither held nor listed is a typo, not a no-op
    known = held | listed
    for fld, listed_names in (("do_not_trade", spec.do_not_trade), ("close_only", spec.close_only)):
        for n in listed_names:
            if n not in known:
                close = difflib.get_close_matches(n, sorted(known), n=3)
                raise SpecError(f"{n} is not an instrument of the book or the market snapshot"
                                + (f" (closest: {', '.join(close)})" if close else ""),
                                source=spec.source, field=fld, value=n)
    for name in _candidates(book, market, spec):
        if name in held:
            keep.append(parse_instrument(name))  # the book must price: errors propagate
            continue
        inst = _try_parse(name)
        why = "not an instrument name of any venue" if inst is None else foreign(inst, model)
        if why is None and name not in listed:
            raise SpecError("universe names an instrument the market snapshot does not list",
                            row=name, field="universe")
        why = why or unmargined(inst, model)
        if why:
            excluded[name] = why
        else:
            keep.append(inst)
    names = [i.name for i in keep]
    tb = spec.trade_bounds
    cap = np.full(len(keep), np.inf if tb.max_quantity is None else tb.max_quantity)
    at = {n: j for j, n in enumerate(names)}
    for n, q in tb.max_quantity_by_instrument.items():
        if n.upper() in at:
            cap[at[n.upper()]] = min(cap[at[n.upper()]], q)
    return _Structure(
        tuple(book.names), spec, model, market.rows.index, registry_generation(), keep, names, excluded,
        np.array([n in spec.do_not_trade for n in names], dtype=bool),
        np.array([n in spec.close_only for n in names], dtype=bool), cap)


def build_universe(book: Portfolio, market: MarketSnapshot, model: MarginModel,
                   spec: RebalanceSpec, cache: UniverseCache | None = None
                   ) -> tuple[Universe, BoundModel, PricingInputs]:
    """The book's instruments plus the spec's candidates that can be priced, margined and quoted,
    with the model bound to them (the binding is the expensive step: it is done once) and their
    pricing inputs. ``cache``: where a warm optimizer keeps the universe's structure."""
    structure = (cache or UniverseCache()).get(book, market, model, spec)
    held = set(structure.book)
    excluded = dict(structure.excluded)
    keep, bound, inputs = bind_priced(structure.instruments, held, excluded, market, model)
    rows = np.arange(len(keep))
    if len(keep) != len(structure.instruments):  # a candidate the snapshot cannot price is out
        at = {i.name: j for j, i in enumerate(structure.instruments)}
        rows = np.array([at[i.name] for i in keep], dtype=np.intp)
    if len(keep) == len(structure.instruments):
        names = structure.names
    else:
        names = [i.name for i in keep]
    # the book's instruments come first and are never left out (their errors propagate)
    nb = len(structure.book)
    if [i.name for i in keep[:nb]] != list(structure.book):
        raise AssertionError("the universe must start with the book's instruments")
    x0 = np.zeros(len(keep))
    x0[:nb] = book.quantities

    place = model.trading_venue
    tb = spec.trade_bounds
    buy_max = structure.quantity_cap[rows].copy()
    sell_max = buy_max.copy()
    frozen: dict[str, str] = {}
    if tb.max_open_interest_fraction is not None:
        oi = open_interest_coin(keep, market, place)
        for j in np.flatnonzero(~np.isfinite(oi)):
            frozen.setdefault(names[j], "no open interest in the snapshot: the liquidity bound "
                                        "allows no trade")
        cap = tb.max_open_interest_fraction * np.nan_to_num(oi, nan=0.0)
        buy_max = np.minimum(buy_max, cap)
        sell_max = np.minimum(sell_max, cap)
    stop = structure.do_not_trade[rows]
    close = structure.close_only[rows] & ~stop
    fresh = ~stop & ~close & (x0 == 0.0) if spec.no_new_instruments else np.zeros(len(keep), bool)
    buy_max = np.where(stop | fresh, 0.0, np.where(close, np.minimum(buy_max, np.maximum(-x0, 0.0)), buy_max))
    sell_max = np.where(stop | fresh, 0.0, np.where(close, np.minimum(sell_max, np.maximum(x0, 0.0)), sell_max))
    for j in np.flatnonzero(stop):
        frozen[names[j]] = "do-not-trade list"
    if spec.costs.spread:
        # no bid: cannot sell; no ask: cannot buy (a price to trade at is part of the cost)
        no_ask = ~np.isfinite(market.column(names, "ask_price")) & (buy_max > 0)
        no_bid = ~np.isfinite(market.column(names, "bid_price")) & (sell_max > 0)
        buy_max[no_ask] = 0.0
        sell_max[no_bid] = 0.0
        for j in np.flatnonzero(no_ask | no_bid):
            frozen.setdefault(names[j], "no ask: cannot buy" if no_ask[j] else "no bid: cannot sell")
    in_universe = set(names)
    for n in [*spec.do_not_trade, *spec.close_only]:
        if n not in in_universe:
            excluded.setdefault(n, "named in the spec but not in the universe")
    universe = Universe(tuple(keep), x0, buy_max, sell_max, excluded,
                        {k: v for k, v in frozen.items() if k in held})
    return universe, bound, inputs


def _unknown_name(spec: RebalanceSpec, name: str, what: str, choices: set[str], fld: str) -> SpecError:
    close = difflib.get_close_matches(name, sorted(choices), n=3)
    if not close:   # a case slip ("btc-option") is close to nothing by difflib's measure
        close = [c for c in sorted(choices) if c.upper() == name.upper()]
    return SpecError(f"{name} is not {what}" + (f" (closest: {', '.join(close)})" if close else ""),
                     source=spec.source, field=fld, value=name)


def _check_spec_names(spec: RebalanceSpec, known: set[str], place: Venue) -> None:
    """Names in a ``universe`` list and ``lots.sizes`` keys must exist: a typo is an error naming
    it and the closest names, never an instrument silently left out or a lot size never used."""
    if isinstance(spec.universe, list):
        for raw in spec.universe:
            n = raw.strip().upper()
            if n not in known:
                raise _unknown_name(spec, raw, "an instrument of the book or the market snapshot",
                                    known, "universe")
    if spec.lots.sizes:
        # kinds of the snapshot's instruments, and those with shipped lot sizes (a shared spec
        # may size ETH options for a book and market without ETH: that applies to nothing)
        kinds = {f"{i.underlying}-{'option' if i.is_option else 'future'}"
                 for i in (_try_parse(n) for n in known) if i is not None}
        kinds |= place.lot_kinds()
        for key in spec.lots.sizes:
            if key not in known and key not in kinds:
                raise _unknown_name(spec, key, "an instrument of the book or the market snapshot, "
                                    f"nor a kind of them ({', '.join(sorted(kinds))})",
                                    known | kinds, f"lots.sizes.{key}")


def open_interest_coin(instruments: list[Instrument] | tuple[Instrument, ...],
                       market: MarketSnapshot, place: Venue) -> np.ndarray:
    """Open interest in coin, from the figures in the venue's units (``Venue.open_interest_coin``)."""
    names = [i.name for i in instruments]
    return place.open_interest_coin(instruments, market.column(names, "open_interest"),
                                    market.column(names, "mark_price"))


def limit_rows(spec: RebalanceSpec, inputs: PricingInputs, x0: np.ndarray) -> LimitRows:
    """One row per limit of the spec, in the order the spec gives them."""
    insts = inputs.instruments
    und = inputs.underlying
    delta = inputs.coin_delta()
    vega = inputs.vega_usd()
    gamma = inputs.gamma_coin()
    dte = inputs.t * 365.0
    names, rows, lows, highs = [], [], [], []

    def add(name: str, row: np.ndarray, bounds, relative: bool) -> None:
        lo, hi = bounds
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        if relative:
            current = float(row @ x0)
            lo, hi = lo + current, hi + current
        names.append(name)
        rows.append(row)
        lows.append(lo)
        highs.append(hi)

    present = set(und)
    skipped: dict[str, str] = {}
    for table, always_relative in ((spec.limits, False), (spec.relative_limits, True)):
        for u, lim in table.items():
            if u not in present:
                key = f"{'relative_limits' if always_relative else 'limits'}.{u}"
                skipped[key] = f"nothing in this book's universe has {u} as underlying"
                continue
            mask = und == u
            relative = lim.relative or always_relative
            tag = " (relative)" if relative else ""
            if lim.delta is not None:
                add(f"{u}.delta{tag}", np.where(mask, delta, 0.0), lim.delta, relative)
            if lim.vega is not None:
                add(f"{u}.vega{tag}", np.where(mask, vega, 0.0), lim.vega, relative)
            if lim.gamma is not None:
                add(f"{u}.gamma{tag}", np.where(mask, gamma, 0.0), lim.gamma, relative)
            for key, b in lim.vega_buckets.items():
                lo_d, hi_d = bucket_range(key)
                in_bucket = mask & (dte >= lo_d) & (dte < hi_d)
                add(f"{u}.vega[{key}d]{tag}", np.where(in_bucket, vega, 0.0), b, relative)
    if spec.delta_shock_threshold_usd is not None:
        for u in dict.fromkeys(und):
            mask = und == u
            thr = spec.delta_shock_threshold_usd
            add(f"{u}.delta_usd", np.where(mask, delta * inputs.index, 0.0), (-thr, thr), False)
    n = len(insts)
    return LimitRows(names, np.array(rows).reshape(len(rows), n), np.array(lows, dtype=float),
                     np.array(highs, dtype=float), skipped)


def greeks_summary(inputs: PricingInputs, x: np.ndarray) -> dict[str, dict[str, float]]:
    """Net delta (coin), vega (USD per vol point) and gamma (coin per 1%) per underlying."""
    und = inputs.underlying
    d, v, g = inputs.coin_delta() * x, inputs.vega_usd() * x, inputs.gamma_coin() * x
    return {u: {"delta": float(d[und == u].sum()), "vega": float(v[und == u].sum()),
                "gamma": float(g[und == u].sum()),
                "delta_usd": float((d * inputs.index)[und == u].sum())}
            for u in dict.fromkeys(und)}
