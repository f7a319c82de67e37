"""Portfolios: signed quantities in units of the underlying coin (Deribit's ``size_currency``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import InputError, InvalidValue
from .instruments import Instrument, canonical_name, parse_instrument

_NAME_COLUMNS = ("instrument", "instrument_name")
_QTY_COLUMNS = ("quantity", "size_currency", "size")


@dataclass(frozen=True)
class Portfolio:
    """A book: instrument name -> signed quantity in coin. Rows of one instrument are summed;
    instruments are kept in order of first appearance."""

    positions: Mapping[str, float]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", dict(self.positions))

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
        """The book after ``trades`` (name -> signed quantity)."""
        out = dict(self.positions)
        for name, q in trades.items():
            out[name] = out.get(name, 0.0) + float(q)
        if drop_zero:
            out = {k: v for k, v in out.items() if v != 0.0}
        return Portfolio(out, self.source)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"instrument": self.names, "quantity": self.quantities})

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_records(cls, rows: Iterable[Mapping[str, Any]], *, source: str = "<memory>",
                     first_row: int = 1) -> "Portfolio":
        """Rows with an instrument (``instrument`` or ``instrument_name``) and a signed quantity
        (``quantity``; or Deribit's ``size_currency``/``size`` with ``direction``)."""
        positions: dict[str, float] = {}
        for i, row in enumerate(rows, start=first_row):
            name = next((row[c] for c in _NAME_COLUMNS if c in row and row[c] is not None), None)
            if name is None or (isinstance(name, float) and math.isnan(name)):
                raise InputError("no instrument name", source=source, row=i, field="instrument")
            inst = _parse(name, source, i)
            qty_field = next((c for c in _QTY_COLUMNS if c in row and _present(row[c])), None)
            if qty_field is None:
                raise InvalidValue("no quantity", source=source, row=i, field="quantity")
            qty = _number(row[qty_field], source, i, qty_field)
            if row.get("direction") == "sell" and qty > 0:
                qty = -qty
            positions[inst.name] = positions.get(inst.name, 0.0) + qty
        return cls(positions, source)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "<memory>") -> "Portfolio":
        cols = {c.strip().lower(): c for c in frame.columns}
        if not any(c in cols for c in _NAME_COLUMNS):
            raise InputError("needs an 'instrument' column", source=source, field="instrument")
        if not any(c in cols for c in _QTY_COLUMNS):
            raise InputError("needs a 'quantity' column", source=source, field="quantity")
        renamed = frame.rename(columns={v: k for k, v in cols.items()})
        records = renamed.astype(object).where(renamed.notna(), None).to_dict(orient="records")
        return cls.from_records(records, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>") -> "Portfolio":
        """``{"positions": [...]}``, a list of rows, ``{name: quantity}``, or Deribit's
        ``private/get_positions`` response ``{"result": [...]}``."""
        if isinstance(data, Mapping):
            if "result" in data:
                data = data["result"]
            elif "positions" in data:
                data = data["positions"]
            else:
                data = [{"instrument": k, "quantity": v} for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
            raise InputError("expected a list of positions", source=source, field="positions")
        return cls.from_records(data, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> "Portfolio":
        path = Path(path)
        if not path.exists():
            raise InputError("portfolio file not found", source=str(path))
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno})",
                                 source=str(path)) from None
            return cls.from_dict(data, source=str(path))
        try:
            frame = pd.read_csv(path, dtype=str, skipinitialspace=True, comment="#")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read as CSV ({exc})", source=str(path)) from None
        return cls.from_frame(frame, source=str(path))


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""


def _parse(name: Any, source: str, row: int) -> Instrument:
    try:
        return parse_instrument(str(name))
    except InputError as exc:
        raise type(exc)(exc.message, source=source, row=row, field="instrument", value=name) from None


def _number(v: Any, source: str, row: int, field: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InvalidValue(f"quantity is not a number ({v!r})", source=source, row=row,
                           field=field, value=v) from None
    if not math.isfinite(x):
        raise InvalidValue(f"quantity must be finite, got {v!r}", source=source, row=row,
                           field=field, value=v)
    return x


def load_portfolio(source: str | Path | pd.DataFrame | Mapping[str, Any] | list | Portfolio) -> Portfolio:
    """A portfolio from a file (CSV or JSON), a DataFrame, a dict/list, or an existing one."""
    if isinstance(source, Portfolio):
        return source
    if isinstance(source, pd.DataFrame):
        return Portfolio.from_frame(source)
    if isinstance(source, (Mapping, list)):
        return Portfolio.from_dict(source)
    return Portfolio.from_file(source)
