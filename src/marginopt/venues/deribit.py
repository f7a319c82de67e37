"""Deribit: its instrument names, expiry hour, amounts, open-interest units and API fields.

Names: ``BTC-27DEC24-60000-C`` (coin-settled option), ``BTC-27DEC24`` (coin-settled future),
``BTC-PERPETUAL``, ``BTC_USDC-PERPETUAL`` (USDC-settled perpetual), ``SOL_USDC-27DEC24-150-P``
(USDC-settled option), ``BTC_USDC`` (spot). Dated contracts expire at 08:00 UTC. Strikes may use
``d`` as the decimal point (``XRP_USDC-27DEC24-0d625-C``), as Deribit writes them.

Amounts: options and USDC-settled futures in coin, with the minimum amounts below; coin-settled
futures and perpetuals in USD contracts (10 USD for BTC, 1 USD for ETH), whose open interest the
book summary also gives in USD. Market rows are ``public/get_book_summary_by_currency`` rows;
positions are ``private/get_positions`` rows (``size_currency`` in coin for futures, ``size`` in
coin for options, ``direction: sell`` for a short).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from ..errors import MalformedInstrumentName
from ..instruments import Instrument, Kind, Settlement, expiry_label, month_number, strike_text
from ._base import Venue, register_venue

_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)(?:_(?P<quote>USDC|USDT|USD))?"
    r"(?:-(?:(?P<perp>PERPETUAL)|(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})"
    r"(?:-(?P<strike>\d+(?:[d.]\d+)?)-(?P<cp>[CP]))?))?$"
)
#: the same shape on an upper-cased name (the strike's ``d`` upper-cased too): recognising a name
#: needs no re-spelling
_UPPER_NAME = re.compile(_NAME.pattern.replace("[d.]", "[dD.]"))
#: the decimal ``d`` of a strike, after the rest of the name has been upper-cased
_STRIKE_D = re.compile(r"(-\d+)D(\d+-[CP])$")


@dataclass(frozen=True)
class Deribit(Venue):
    """Deribit's conventions (module docstring)."""

    name: str = "deribit"
    description: str = "Deribit: coin-settled and USDC-settled options, futures and perpetuals"
    expiry_hour_utc: int = 8
    examples: tuple[str, ...] = ("BTC-27DEC24-60000-C", "BTC-27DEC24", "BTC-PERPETUAL",
                                 "BTC_USDC-PERPETUAL", "SOL_USDC-27DEC24-150-P")
    #: Deribit's minimum amounts in coin (USDC-settled futures; options of either settlement)
    lot_sizes: Mapping[str, float] = field(default_factory=lambda: {
        "BTC-option": 0.1, "ETH-option": 1.0, "SOL-option": 1.0,
        "BTC-future": 0.0001, "ETH-future": 0.001, "SOL-future": 0.1})
    #: coin-settled futures and perpetuals trade in contracts of this many USD
    inverse_contract_usd: Mapping[str, float] = field(default_factory=lambda: {"BTC": 10.0, "ETH": 1.0})
    #: the book summary gives those contracts' open interest in USD
    inverse_open_interest_in_usd: bool = True
    #: the time stamps of book-summary and ticker rows (ms)
    timestamp_fields: tuple[str, ...] = ("creation_timestamp", "timestamp")
    position_name_fields: tuple[str, ...] = ("instrument_name",)
    position_quantity_fields: tuple[str, ...] = ("size_currency", "size")
    position_side: tuple[str, str] | None = ("direction", "sell")

    def canonical(self, name: str) -> str:
        """Upper case except the strike's decimal ``d`` (``XRP_USDC-27DEC24-0d625-C``)."""
        return _STRIKE_D.sub(r"\1d\2", name.strip().upper())

    def recognises(self, name: str) -> bool:
        m = _UPPER_NAME.match(name.strip().upper())
        return m is not None and not (m["quote"] is None and m["perp"] is None and m["day"] is None)

    def parse(self, name: str) -> Instrument:
        text = self.canonical(name)
        m = _NAME.match(text)
        if m is None or (m["quote"] is None and m["perp"] is None and m["day"] is None):
            raise MalformedInstrumentName(
                f"'{name}' is not a Deribit instrument name (e.g. {', '.join(self.examples)})",
                field="instrument_name", value=name)
        settlement = Settlement.LINEAR if m["quote"] else Settlement.INVERSE
        base = m["base"]
        if m["perp"]:
            return Instrument(text, base, Kind.PERPETUAL, settlement)
        if m["day"] is None:
            return Instrument(text, base, Kind.SPOT, Settlement.LINEAR)
        month = month_number(m["mon"])
        try:
            if month is None:
                raise ValueError(f"unknown month {m['mon']}")
            expiry = datetime(2000 + int(m["yy"]), month, int(m["day"]), self.expiry_hour_utc,
                              tzinfo=timezone.utc)
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

    def format(self, underlying: str, kind: Kind, settlement: Settlement,
               expiry: datetime | None = None, strike: float | None = None,
               is_call: bool | None = None) -> str:
        """A USDC-settled contract is written ``<UNDERLYING>_USDC-...`` (the quote of a linear
        contract is not part of ``Instrument``: USDT- or USD-quoted names format as USDC)."""
        kind = Kind(kind)
        base = underlying.strip().upper()
        if kind is Kind.SPOT:
            return f"{base}_USDC"
        base += "_USDC" if Settlement(settlement) is Settlement.LINEAR else ""
        if kind is Kind.PERPETUAL:
            return f"{base}-PERPETUAL"
        if expiry is None:
            raise ValueError(f"a Deribit {kind.value} name needs its expiry")
        self._check_expiry_hour(expiry)
        if kind is Kind.FUTURE:
            return f"{base}-{expiry_label(expiry)}"
        if strike is None or is_call is None:
            raise ValueError("a Deribit option name needs strike and is_call")
        return f"{base}-{expiry_label(expiry)}-{strike_text(strike)}-{'C' if is_call else 'P'}"

    def _check_expiry_hour(self, expiry: datetime) -> None:
        utc = expiry.astimezone(timezone.utc) if expiry.tzinfo else expiry
        if (utc.hour, utc.minute, utc.second, utc.microsecond) != (self.expiry_hour_utc, 0, 0, 0):
            raise ValueError(f"Deribit contracts expire at {self.expiry_hour_utc:02d}:00 UTC, "
                             f"not {utc:%H:%M:%S}: the name would denote another expiry")


DERIBIT = register_venue(Deribit())
