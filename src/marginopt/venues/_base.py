"""The venue interface and its registry.

A venue is where contracts trade and the conventions that come with it: how it names them (both
ways: ``parse`` a name into an ``Instrument``, ``format`` an instrument's terms into its name),
the hour its dated contracts expire, the amounts it trades in (minimum amounts in coin, or USD
contracts), the units of the open interest it reports, and the fields of its API that the market
and portfolio loaders read. The core asks the venue, never a table of its own: a model file says
which venue's rules it is (``venue:``), ``parse_instrument`` asks every registered venue that owns
a name scheme which one a name is in, and the optimizer asks the model's venue for lots and open
interest.

A new venue is one module: a ``Venue`` subclass (frozen dataclass) and ``register_venue(...)`` of
an instance, imported once (the shipped ones are imported by ``marginopt.venues``). This module
imports no venue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from ..errors import MalformedInstrumentName
from ..instruments import Instrument, Kind, Settlement

#: marginopt's market row fields, each read from the venue's API field of the same meaning
MARKET_FIELDS = ("instrument_name", "mark_price", "mark_iv", "underlying_price", "bid_price",
                 "ask_price", "open_interest", "volume")


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Venue:
    """A venue's conventions. Subclasses that own a name scheme override ``recognises``,
    ``parse``, ``format`` and ``canonical``; the data fields are the rest.

    Lot sizes are the venue's minimum amounts in coin keyed ``<UNDERLYING>-option`` and
    ``<UNDERLYING>-future`` (futures and perpetuals); a contract in ``inverse_contract_usd``
    trades in USD contracts instead (a lot is ``contract / forward`` coin)."""

    name: str
    description: str = ""
    #: the hour (UTC) at which its dated contracts expire (None: no scheme of its own)
    expiry_hour_utc: int | None = None
    #: names of its scheme, for error messages
    examples: tuple[str, ...] = ()
    #: minimum amounts in coin, by ``<UNDERLYING>-option`` / ``<UNDERLYING>-future``
    lot_sizes: Mapping[str, float] = field(default_factory=dict)
    #: USD per contract of its coin-settled futures and perpetuals, by underlying
    inverse_contract_usd: Mapping[str, float] = field(default_factory=dict)
    #: whether it reports the open interest of coin-settled futures and perpetuals in USD
    #: (otherwise every open interest is in coin)
    inverse_open_interest_in_usd: bool = False
    #: its API's market-data field for each of marginopt's row fields (``MARKET_FIELDS``)
    market_fields: Mapping[str, str] = field(default_factory=lambda: {f: f for f in MARKET_FIELDS})
    #: its API's time stamps on market rows (milliseconds since 1970)
    timestamp_fields: tuple[str, ...] = ()
    #: its API's position fields: the instrument name, the signed quantity in coin (in order of
    #: preference), and a side field with the value that makes a positive size short
    position_name_fields: tuple[str, ...] = ()
    position_quantity_fields: tuple[str, ...] = ()
    position_side: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        for name in ("lot_sizes", "inverse_contract_usd", "market_fields"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        missing = [f for f in MARKET_FIELDS if f not in self.market_fields]
        if missing:
            raise ValueError(f"venue {self.name}: market_fields lacks {', '.join(missing)}")

    # ------------------------------------------------------------------ names
    @property
    def owns_names(self) -> bool:
        """Whether it has a name scheme of its own (asked by ``parse_instrument``)."""
        return type(self).recognises is not Venue.recognises

    def recognises(self, name: str) -> bool:
        """Whether ``name`` has the shape of this venue's names (its details may still be wrong:
        ``parse`` says what)."""
        return False

    def canonical(self, name: str) -> str:
        """The venue's own spelling of ``name`` (case, decimal marks)."""
        return name.strip().upper()

    def parse(self, name: str) -> Instrument:
        """The instrument ``name`` (as given: the venue spells it ``canonical``) denotes; a name
        that is not this venue's raises ``MalformedInstrumentName`` quoting it."""
        raise MalformedInstrumentName(f"'{name}': venue {self.name} has no instrument names of its own",
                                      field="instrument_name", value=name)

    def format(self, underlying: str, kind: Kind, settlement: Settlement,
               expiry: datetime | None = None, strike: float | None = None,
               is_call: bool | None = None) -> str:
        """The name of a contract with these terms, the inverse of ``parse``."""
        raise ValueError(f"venue {self.name} has no instrument names of its own")

    def name_of(self, inst: Instrument) -> str:
        """``inst``'s terms written as this venue names them."""
        return self.format(inst.underlying, inst.kind, inst.settlement, inst.expiry, inst.strike,
                           inst.is_call)

    # ------------------------------------------------------------------ which books
    def accepts(self, inst: Instrument) -> bool:
        """Whether a model of this venue margins ``inst`` (its name is in this venue's scheme)."""
        return naming_venue(inst.name) is self

    # ------------------------------------------------------------------ trading conventions
    def lot_size(self, inst: Instrument) -> float:
        """Minimum amount in coin (0: none known, or it trades in USD contracts)."""
        if self.contract_usd(inst) > 0:
            return 0.0
        kind = "option" if inst.is_option else "future"
        return float(self.lot_sizes.get(f"{inst.underlying}-{kind}", 0.0))

    def contract_usd(self, inst: Instrument) -> float:
        """USD per contract when ``inst`` trades in USD contracts (its coin-settled futures and
        perpetuals), else 0."""
        if inst.is_option or inst.settlement is not Settlement.INVERSE:
            return 0.0
        return float(self.inverse_contract_usd.get(inst.underlying, 0.0))

    def lot_kinds(self) -> set[str]:
        """``<UNDERLYING>-option`` / ``-future`` keys for every underlying it ships lot sizes of
        (a spec's ``lots.sizes`` may name them for a book without that underlying)."""
        unds = {k.rsplit("-", 1)[0] for k in self.lot_sizes} | set(self.inverse_contract_usd)
        return {f"{u}-{kind}" for u in unds for kind in ("option", "future")}

    def open_interest_coin(self, instruments: Sequence[Instrument], open_interest: np.ndarray,
                           mark: np.ndarray) -> np.ndarray:
        """Open interest in coin from the venue's figures (``mark``: the mark price, used where
        the venue reports USD; NaN where it cannot be converted)."""
        oi = np.asarray(open_interest, dtype=float)
        if not self.inverse_open_interest_in_usd:
            return oi
        usd = np.fromiter((i.settlement is Settlement.INVERSE and not i.is_option for i in instruments),
                          dtype=bool, count=len(instruments))
        mark = np.asarray(mark, dtype=float)
        return np.where(usd, oi / np.where(mark > 0, mark, np.nan), oi)

    def api_columns(self) -> dict[str, str]:
        """API field -> marginopt row field, for the fields whose names differ."""
        return {api: ours for ours, api in self.market_fields.items() if api != ours}


# --------------------------------------------------------------------------- the registry
_REGISTRY: dict[str, Venue] = {}


#: bumped whenever the set of venues changes: caches keyed by instrument names include it
_GENERATION = [0]


def registry_generation() -> int:
    """A number that changes whenever a venue is registered or forgotten (a name may then parse
    to another instrument, or belong to another venue)."""
    return _GENERATION[0]


def _clear_name_caches() -> None:
    # names parsed (and spelt) under the old set of schemes must be looked at again
    from .. import instruments
    _GENERATION[0] += 1
    instruments.parse_instrument.cache_clear()
    instruments.canonical_name.cache_clear()
    naming_venue.cache_clear()


def register_venue(v: Venue) -> Venue:
    """Make ``v`` known by its name: model files may say ``venue: <name>``, and its names parse.
    Registering another venue under a name taken is an error (the same one again is not)."""
    if not isinstance(v, Venue):
        raise TypeError(f"register_venue takes a Venue, got {v!r}")
    known = _REGISTRY.get(v.name)
    if known is not None and known != v:
        raise ValueError(f"venue '{v.name}' is already registered ({type(known).__qualname__})")
    if known is None and v.owns_names:
        # name schemes must not overlap: each name is one venue's
        for ex in v.examples:
            other = _owner(ex)
            if other is not None:
                raise ValueError(f"venue {v.name}'s name {ex} is already a name of venue {other.name}")
        for other in _REGISTRY.values():
            taken = [ex for ex in other.examples if v.recognises(ex)]
            if taken:
                raise ValueError(f"venue {v.name} would claim venue {other.name}'s name {taken[0]}")
    _REGISTRY[v.name] = v
    _clear_name_caches()
    return v


def unregister_venue(name: str) -> None:
    """Forget a venue (tests that register a toy venue clean up with it)."""
    if _REGISTRY.pop(name, None) is not None:
        _clear_name_caches()


def venue(name: str) -> Venue:
    """The registered venue called ``name``; an unknown name is a ``KeyError`` listing them."""
    v = _REGISTRY.get(name)
    if v is None:
        raise KeyError(f"no venue '{name}' (registered: {', '.join(sorted(_REGISTRY))})")
    return v


def venues() -> dict[str, Venue]:
    """Every registered venue, by name."""
    return dict(sorted(_REGISTRY.items()))


def _owner(name: str) -> Venue | None:
    for v in _REGISTRY.values():
        if v.owns_names and v.recognises(name):
            return v
    return None


@lru_cache(maxsize=65536)
def naming_venue(name: str) -> Venue | None:
    """The venue whose name scheme ``name`` is in (None: no registered venue's)."""
    return _owner(name)


def parse_name(name: str) -> Instrument:
    """``name`` parsed by the venue whose scheme it is in (see ``instruments.parse_instrument``)."""
    if not isinstance(name, str):
        raise MalformedInstrumentName(f"instrument name must be a string, got {name!r}",
                                      field="instrument_name", value=name)
    owner = naming_venue(name)
    if owner is None:
        schemes = "; ".join(f"{v.name}: {', '.join(v.examples)}" for v in _REGISTRY.values()
                            if v.owns_names and v.examples)
        raise MalformedInstrumentName(f"'{name}' is not an instrument name of any venue ({schemes})",
                                      field="instrument_name", value=name)
    return owner.parse(name)


def canonical(name: str) -> str:
    """``name`` spelt as the venue whose scheme it is in spells it (upper case otherwise)."""
    owner = naming_venue(name)
    return owner.canonical(name) if owner is not None else name.strip().upper()
