"""Instruments: what a contract is (kind, settlement, underlying, expiry, strike), whatever venue
names it.

A name is parsed by the venue whose name scheme it is in (``marginopt.venues``: Deribit's
``BTC-27DEC24-60000-C``, ...); ``parse_instrument`` asks the registered venues. This module also
holds marginopt's labels of an expiry (``27DEC24``) and a strike (``0d625``), the forms Deribit's
names use and the reports show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import lru_cache


class Kind(str, Enum):
    OPTION = "option"
    FUTURE = "future"
    PERPETUAL = "perpetual"
    SPOT = "spot"


class Settlement(str, Enum):
    #: coin-settled: P&L and margin in the underlying coin
    INVERSE = "inverse"
    #: USDC-settled: P&L and margin in USD(C)
    LINEAR = "linear"


_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}


def month_number(label: str) -> int | None:
    """``DEC`` -> 12 (None for a label that is not a month)."""
    return _MONTHS.get(label)


@lru_cache(maxsize=65536)
def canonical_name(name: str) -> str:
    """``name`` spelt as its venue spells it (Deribit: upper case except the strike's decimal
    ``d``, ``XRP_USDC-27DEC24-0d625-C``); upper case when no venue's scheme has it."""
    from .venues import _base  # the venues import this module: they are asked at call time
    return _base.canonical(name)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable contract. Quantities of it are in units of the underlying coin."""

    name: str
    underlying: str
    kind: Kind
    settlement: Settlement
    expiry: datetime | None = None
    strike: float | None = None
    is_call: bool | None = None

    @property
    def is_option(self) -> bool:
        return self.kind is Kind.OPTION

    @property
    def pool(self) -> str:
        """Margin pool: each underlying margined alone, coin-settled apart from USDC-settled."""
        return self.underlying if self.settlement is Settlement.INVERSE else f"{self.underlying}_USDC"

    @property
    def expiry_label(self) -> str:
        """marginopt's label of the expiry (``27DEC24``, the form Deribit's names use),
        ``PERPETUAL`` or ``SPOT``."""
        if self.kind is Kind.PERPETUAL:
            return "PERPETUAL"
        if self.expiry is None:
            return "SPOT"
        return _expiry_label(self.expiry)


@lru_cache(maxsize=4096)
def _expiry_label(expiry: datetime) -> str:
    # cached: binding a model labels every instrument, and strftime dominated that loop
    return f"{expiry.day}{_MONTH_NAMES[expiry.month - 1]}{expiry:%y}"


def expiry_label(expiry: datetime) -> str:
    """marginopt's label of an expiry, the form Deribit's names use: ``27DEC24`` (the one month
    table is this module's)."""
    return _expiry_label(expiry)


def strike_text(strike: float) -> str:
    """marginopt's label of a strike, the form Deribit's names use: no trailing zeros, ``d`` as
    the decimal point (``60000``, ``0d625``)."""
    text = format(Decimal(repr(float(strike))), "f")  # the shortest text that reads back exactly
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", "d")


def instrument_name(underlying: str, expiry: datetime | None = None, strike: float | None = None,
                    is_call: bool | None = None, *, settlement: Settlement = Settlement.INVERSE) -> str:
    """The Deribit name of a contract (``venue("deribit").format``): a perpetual without
    ``expiry``, a future without ``strike``, an option with ``strike`` and ``is_call``; a
    USDC-settled contract with ``settlement=Settlement.LINEAR`` (``BTC_USDC-PERPETUAL``)."""
    from .venues import venue
    kind = Kind.PERPETUAL if expiry is None else Kind.FUTURE if strike is None else Kind.OPTION
    if kind is Kind.OPTION and is_call is None:
        raise ValueError("an option name needs is_call")
    return venue("deribit").format(underlying, kind, settlement, expiry, strike, is_call)


@lru_cache(maxsize=65536)
def parse_instrument(name: str) -> Instrument:
    """Parse an instrument name of any registered venue (``marginopt.venues``); a name no venue
    has, or a malformed one, raises ``MalformedInstrumentName`` quoting it."""
    from .venues import _base  # the venues import this module: they are asked at call time
    return _base.parse_name(name)
