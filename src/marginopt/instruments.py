"""Instruments and Deribit's naming scheme.

``BTC-27DEC24-60000-C`` (inverse option), ``BTC-27DEC24`` (inverse future), ``BTC-PERPETUAL``,
``BTC_USDC-PERPETUAL`` (linear perpetual), ``SOL_USDC-27DEC24-150-P`` (linear option),
``BTC_USDC`` (spot). Dated instruments expire at 08:00 UTC. Strikes may use ``d`` as the decimal
point (``XRP_USDC-27DEC24-0d625-C``), as Deribit writes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from functools import lru_cache

from .errors import MalformedInstrumentName


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
_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)(?:_(?P<quote>USDC|USDT|USD))?"
    r"(?:-(?:(?P<perp>PERPETUAL)|(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})"
    r"(?:-(?P<strike>\d+(?:[d.]\d+)?)-(?P<cp>[CP]))?))?$"
)
#: the decimal ``d`` of a strike, after the rest of the name has been upper-cased
_STRIKE_D = re.compile(r"(-\d+)D(\d+-[CP])$")


def canonical_name(name: str) -> str:
    """Deribit's spelling: upper case except the strike's decimal ``d`` (``XRP_USDC-27DEC24-0d625-C``)."""
    return _STRIKE_D.sub(r"\1d\2", name.strip().upper())


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
        """The expiry as Deribit writes it (``27DEC24``), ``PERPETUAL`` or ``SPOT``."""
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
    """An expiry as Deribit writes it in a name: ``27DEC24`` (the month table is this module's)."""
    return _expiry_label(expiry)


def strike_text(strike: float) -> str:
    """A strike as Deribit writes it in a name: no trailing zeros, ``d`` as the decimal point
    (``60000``, ``0d625``)."""
    text = format(Decimal(repr(float(strike))), "f")  # the shortest text that reads back exactly
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", "d")


def instrument_name(underlying: str, expiry: datetime | None = None, strike: float | None = None,
                    is_call: bool | None = None, *, settlement: Settlement = Settlement.INVERSE) -> str:
    """The Deribit name of a contract, the inverse of ``parse_instrument``: a perpetual without
    ``expiry``, a future without ``strike``, an option with ``strike`` and ``is_call``; a
    USDC-settled contract with ``settlement=Settlement.LINEAR`` (``BTC_USDC-PERPETUAL``)."""
    base = underlying.strip().upper() + ("_USDC" if settlement is Settlement.LINEAR else "")
    if expiry is None:
        return f"{base}-PERPETUAL"
    if strike is None:
        return f"{base}-{_expiry_label(expiry)}"
    if is_call is None:
        raise ValueError("an option name needs is_call")
    return f"{base}-{_expiry_label(expiry)}-{strike_text(strike)}-{'C' if is_call else 'P'}"


@lru_cache(maxsize=65536)
def parse_instrument(name: str) -> Instrument:
    """Parse a Deribit instrument name; a malformed name raises an error that quotes it."""
    if not isinstance(name, str):
        raise MalformedInstrumentName(f"instrument name must be a string, got {name!r}",
                                      field="instrument_name", value=name)
    text = canonical_name(name)
    m = _NAME.match(text)
    if m is None or (m["quote"] is None and m["perp"] is None and m["day"] is None):
        raise MalformedInstrumentName(
            f"'{name}' is not a Deribit instrument name (e.g. BTC-27DEC24-60000-C, BTC-27DEC24, "
            "BTC-PERPETUAL, BTC_USDC-PERPETUAL, SOL_USDC-27DEC24-150-P)",
            field="instrument_name", value=name)
    settlement = Settlement.LINEAR if m["quote"] else Settlement.INVERSE
    base = m["base"]
    if m["perp"]:
        return Instrument(text, base, Kind.PERPETUAL, settlement)
    if m["day"] is None:
        return Instrument(text, base, Kind.SPOT, Settlement.LINEAR)
    month = _MONTHS.get(m["mon"])
    try:
        if month is None:
            raise ValueError(f"unknown month {m['mon']}")
        expiry = datetime(2000 + int(m["yy"]), month, int(m["day"]), 8, tzinfo=timezone.utc)
    except ValueError as exc:
        raise MalformedInstrumentName(f"'{name}' has an invalid expiry date ({exc})",
                                      field="instrument_name", value=name) from None
    if m["strike"] is None:
        return Instrument(text, base, Kind.FUTURE, settlement, expiry)
    strike = float(m["strike"].replace("d", "."))
    if strike <= 0:
        raise MalformedInstrumentName(f"'{name}' has a non-positive strike",
                                      field="instrument_name", value=name)
    return Instrument(text, base, Kind.OPTION, settlement, expiry, strike, m["cp"] == "C")
