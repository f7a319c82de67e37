"""Derive (formerly Lyra): its conventions as marginopt books Derive accounts.

Names: marginopt writes Derive's contracts in Deribit's scheme for USDC-settled contracts
(``ETH_USDC-28FEB25-3000-C``, ``ETH_USDC-PERPETUAL``; ``marginopt.derive.to_marginopt``), so a
Derive book reads like any other and ``derive-pm2`` can margin the USDC-settled part of a Deribit
snapshot. Every Derive contract is USDC-settled; options expire at 08:00 UTC. Derive's own names
(``ETH-20250228-3000-C``, ``ETH-PERP``) translate with ``marginopt.derive.marginopt_name`` /
``native_name``; snapshots fetched from Derive keep them in a ``native_name`` column.

Amounts: Derive publishes an ``amount_step`` per instrument (``public/get_instruments``); marginopt
does not ship them, so Derive contracts are sized by Deribit's minimum amounts for the same
underlying and kind (as they were before venues had modules of their own): give ``lots.sizes`` in
a spec for Derive's own. Open interest is in coin.

Market and positions: a Derive snapshot is built by ``to_marginopt`` in marginopt's own row fields
(Derive's ticker nests its vol and forward under ``option_pricing``), so its fields are
marginopt's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import MalformedInstrumentName
from ..instruments import Instrument, Kind, Settlement
from ._base import Venue, register_venue, venue


@dataclass(frozen=True)
class Derive(Venue):
    """Derive's conventions (module docstring)."""

    name: str = "derive"
    description: str = "Derive (formerly Lyra): USDC-settled options and perpetuals, PM2 margin"
    expiry_hour_utc: int = 8
    examples: tuple[str, ...] = ("ETH_USDC-28FEB25-3000-C", "ETH_USDC-PERPETUAL")

    @property
    def _names(self) -> Venue:
        # the scheme Derive's contracts are written in (module docstring)
        return venue("deribit")

    def parse(self, name: str) -> Instrument:
        inst = self._names.parse(name)
        if inst.settlement is not Settlement.LINEAR:
            raise MalformedInstrumentName(f"'{name}' is not a Derive contract: Derive's are "
                                          f"USDC-settled (e.g. {', '.join(self.examples)})",
                                          field="instrument_name", value=name)
        return inst

    def format(self, underlying: str, kind: Kind, settlement: Settlement = Settlement.LINEAR,
               expiry: datetime | None = None, strike: float | None = None,
               is_call: bool | None = None) -> str:
        if Settlement(settlement) is not Settlement.LINEAR:
            raise ValueError("Derive's contracts are USDC-settled")
        return self._names.format(underlying, kind, settlement, expiry, strike, is_call)

    def accepts(self, inst: Instrument) -> bool:
        # coin-settled names are refused by the model's settlements, naming the settlement
        return self._names.accepts(inst)

    def lot_size(self, inst: Instrument) -> float:
        return self._names.lot_size(inst)

    def lot_kinds(self) -> set[str]:
        return self._names.lot_kinds()


DERIVE = register_venue(Derive())
