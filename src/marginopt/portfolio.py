"""Portfolios: signed quantities in units of the underlying coin (Deribit's ``size_currency``).

Files give ``instrument`` (or ``instrument_name``) and ``quantity``, or the position fields of a
venue's API (``Venue.position_*``; Deribit's ``private/get_positions`` by default)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ._io import describe, parse_json, read_bytes
from .errors import InputError, InvalidValue
from .instruments import Instrument, canonical_name, parse_instrument
from .thresholds import MAX_ABS_QUANTITY
from .venues import venue as find_venue

#: marginopt's own position columns; a venue's API fields come after them
_NAME_COLUMNS = ("instrument", "instrument_name")
_QTY_COLUMNS = ("quantity",)


def _fields(venue: str, source: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, str] | None]:
    """Name columns, quantity columns (in order of preference) and the side field of ``venue``."""
    try:
        place = find_venue(venue)
    except KeyError as exc:
        raise InputError(exc.args[0], source=source, field="venue") from None
    return (tuple(dict.fromkeys(_NAME_COLUMNS + place.position_name_fields)),
            tuple(dict.fromkeys(_QTY_COLUMNS + place.position_quantity_fields)), place.position_side)


@dataclass(frozen=True)
class Portfolio:
    """A book: instrument name -> signed quantity in coin. Rows of one instrument are summed;
    instruments are kept in order of first appearance."""

    positions: Mapping[str, float]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        positions = dict(self.positions)
        for name, q in positions.items():
            # every way into a Portfolio (files, dicts, apply, the constructor) passes here: no
            # NaN, infinite or absurd quantity ever reaches a margin model or a solver
            _number(q, self.source, name, "quantity")
        object.__setattr__(self, "positions", positions)

    @property
    def names(self) -> list[str]:
        return list(self.positions)

    @property
    def instruments(self) -> list[Instrument]:
        return [parse_instrument(n) for n in self.positions]

    @property
    def quantities(self) -> np.ndarray:
        return np.fromiter(self.positions.values(), dtype=float, count=len(self.positions))

    def __len__(self) -> int:
        return len(self.positions)

    def quantity(self, name: str) -> float:
        return self.positions.get(canonical_name(name), 0.0)

    def apply(self, trades: Mapping[str, float], *, drop_zero: bool = True) -> "Portfolio":
        """The book after ``trades`` (name -> signed quantity). A trade that is not a finite
        number of plausible size is an ``InvalidValue`` naming the instrument."""
        out = dict(self.positions)
        for name, q in trades.items():
            out[name] = out.get(name, 0.0) + _number(q, "trades", name, "quantity")
        if drop_zero:
            out = {k: v for k, v in out.items() if v != 0.0}
        return Portfolio(out, self.source)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"instrument": self.names, "quantity": self.quantities})

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_records(cls, rows: Iterable[Mapping[str, Any]], *, source: str = "<memory>",
                     first_row: int = 1, venue: str = "deribit") -> "Portfolio":
        """Rows with an instrument (``instrument`` or ``instrument_name``) and a signed quantity
        (``quantity``; or the venue's position fields, Deribit's ``size_currency``/``size`` with
        ``direction``)."""
        name_columns, qty_columns, side = _fields(venue, source)
        positions: dict[str, float] = {}
        for i, row in enumerate(rows, start=first_row):
            name = next((row[c] for c in name_columns if c in row and row[c] is not None), None)
            if name is None or (isinstance(name, float) and math.isnan(name)):
                raise InputError("no instrument name", source=source, row=i, field="instrument")
            inst = _parse(name, source, i)
            qty_field = next((c for c in qty_columns if c in row and _present(row[c])), None)
            if qty_field is None:
                raise InvalidValue("no quantity", source=source, row=i, field="quantity")
            qty = _number(row[qty_field], source, i, qty_field)
            if side is not None and row.get(side[0]) == side[1] and qty > 0:
                qty = -qty
            positions[inst.name] = positions.get(inst.name, 0.0) + qty
        return cls(positions, source)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "<memory>",
                   venue: str = "deribit") -> "Portfolio":
        name_columns, qty_columns, _ = _fields(venue, source)
        cols = {c.strip().lower(): c for c in frame.columns}
        if not any(c in cols for c in name_columns):
            raise InputError("needs an 'instrument' column", source=source, field="instrument")
        if not any(c in cols for c in qty_columns):
            raise InputError("needs a 'quantity' column", source=source, field="quantity")
        renamed = frame.rename(columns={v: k for k, v in cols.items()})
        records = renamed.astype(object).where(renamed.notna(), None).to_dict(orient="records")
        return cls.from_records(records, source=source, venue=venue)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>", venue: str = "deribit") -> "Portfolio":
        """``{"positions": [...]}``, a list of rows, ``{name: quantity}``, or Deribit's
        ``private/get_positions`` response ``{"result": [...]}``."""
        if isinstance(data, Mapping):
            if "result" in data:
                data = data["result"]
            elif "positions" in data:
                data = data["positions"]
            else:
                data = [{"instrument": k, "quantity": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise InputError(f"expected a list of positions, got {describe(data)}", source=source,
                             field="positions")
        for i, r in enumerate(data, start=1):
            if not isinstance(r, Mapping):
                raise InputError(f"a position is an object with instrument and quantity, got "
                                 f"{describe(r)}", source=source, row=i, field="positions")
        return cls.from_records(data, source=source, venue=venue)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, venue: str = "deribit") -> "Portfolio":
        """A portfolio file's content; JSON if ``source`` ends in ``.json``, CSV otherwise."""
        if source.lower().endswith(".json"):
            return cls.from_dict(parse_json(data, source), source=source, venue=venue)
        try:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, skipinitialspace=True, comment="#",
                                encoding="utf-8-sig")
        except (ValueError, csv.Error) as exc:  # pandas' parser errors are ValueErrors
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"cannot read as CSV ({msg})", source=source) from None
        return cls.from_frame(frame, source=source, venue=venue)

    @classmethod
    def from_file(cls, path: str | Path, venue: str = "deribit") -> "Portfolio":
        data = read_bytes(path, "portfolio file")
        return cls.from_bytes(data, str(path), venue)


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""


def _parse(name: Any, source: str, row: int) -> Instrument:
    try:
        return parse_instrument(str(name))
    except InputError as exc:
        raise type(exc)(exc.message, source=source, row=row, field="instrument", value=name) from None


def _number(v: Any, source: str, row: int | str, field: str) -> float:
    if isinstance(v, bool):
        raise InvalidValue(f"quantity is not a number ({v!r})", source=source, row=row,
                           field=field, value=v)
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise InvalidValue(f"quantity is not a number ({v!r})", source=source, row=row,
                           field=field, value=v) from None
    if not math.isfinite(x):
        raise InvalidValue(f"quantity must be a finite number, got {v!r}", source=source, row=row,
                           field=field, value=v)
    if abs(x) > MAX_ABS_QUANTITY:
        raise InvalidValue(f"quantity {x:.6g} is implausibly large: the most marginopt accepts in "
                           f"one instrument is {MAX_ABS_QUANTITY:.0e} coin (a unit error?)",
                           source=source, row=row, field=field, value=v)
    return x


def load_portfolio(source: str | Path | pd.DataFrame | Mapping[str, Any] | list | Portfolio,
                   venue: str = "deribit") -> Portfolio:
    """A portfolio from a file (CSV or JSON), a DataFrame, a dict/list, or an existing one; rows
    may use ``venue``'s API position fields (``marginopt.venues``)."""
    if isinstance(source, Portfolio):
        return source
    if isinstance(source, pd.DataFrame):
        return Portfolio.from_frame(source, venue=venue)
    if isinstance(source, (Mapping, list)):
        return Portfolio.from_dict(source, venue=venue)
    if not isinstance(source, (str, Path)):
        raise InputError(f"no portfolio given: expected a file path, DataFrame, dict or list, got "
                         f"{'None' if source is None else type(source).__name__}", field="portfolio")
    return Portfolio.from_file(source, venue)
