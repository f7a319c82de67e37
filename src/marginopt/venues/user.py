"""The user venue, for models a desk supplies (a scenario P&L matrix, a covariance): they margin
any venue's instruments, and each instrument trades by the conventions of the venue whose name
scheme it is in (a Deribit name by Deribit's amounts and open-interest units)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..instruments import Instrument
from ._base import Venue, naming_venue, register_venue, venues


@dataclass(frozen=True)
class User(Venue):
    """No conventions of its own: each instrument's are its naming venue's."""

    name: str = "user"
    description: str = "user models (scenario matrices, covariances): any venue's instruments"

    def _home(self, inst: Instrument) -> Venue | None:
        return naming_venue(inst.name)

    def accepts(self, inst: Instrument) -> bool:
        return self._home(inst) is not None

    def lot_size(self, inst: Instrument) -> float:
        home = self._home(inst)
        return home.lot_size(inst) if home is not None else 0.0

    def contract_usd(self, inst: Instrument) -> float:
        home = self._home(inst)
        return home.contract_usd(inst) if home is not None else 0.0

    def lot_kinds(self) -> set[str]:
        return set().union(*(v.lot_kinds() for v in venues().values() if v is not self))

    def open_interest_coin(self, instruments: Sequence[Instrument], open_interest: np.ndarray,
                           mark: np.ndarray) -> np.ndarray:
        out = np.asarray(open_interest, dtype=float).copy()
        homes = [self._home(i) for i in instruments]
        for home in {id(h): h for h in homes if h is not None}.values():
            idx = np.flatnonzero([h is home for h in homes])
            out[idx] = home.open_interest_coin([instruments[j] for j in idx], out[idx],
                                               np.asarray(mark, dtype=float)[idx])
        return out


USER = register_venue(User())
