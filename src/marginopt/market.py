"""Market snapshot: valuation time, index prices and one row of market data per instrument (the
venue's API fields, Deribit's book-summary rows by default, read into marginopt's row fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from ._io import describe, parse_json, read_bytes
from .errors import (
    ExpiredInstrument,
    InputError,
    InvalidValue,
    MissingMarketData,
    UnknownInstrument,
)
from .instruments import Instrument, Kind, Settlement, canonical_name, parse_instrument
from .pricing import SECONDS_PER_YEAR, Greeks, black76
from .venues import Venue, registry_generation, venue as find_venue
from .thresholds import (
    MAX_MARK_IV_PCT,
    MAX_PRICE,
    MAX_SIZE,
    MAX_TIMESTAMP_GAP_SECONDS,
    WARN_NEAREST_EXPIRY_DAYS,
    WARN_TIMESTAMP_GAP_SECONDS,
)

#: marginopt's row fields (a venue names its API's field for each: ``Venue.market_fields``;
#: Deribit's are those of ``public/get_book_summary_by_currency`` rows, the same names).
ROW_FIELDS = ("mark_price", "mark_iv", "underlying_price", "bid_price", "ask_price",
              "open_interest", "volume")
#: the largest value each row field may take (``thresholds``); a mark_iv above
#: ``MAX_MARK_IV_PCT`` is a warning (stressed exchange test cases carry such vols)
_ROW_MAX = {"mark_price": MAX_PRICE, "underlying_price": MAX_PRICE, "bid_price": MAX_PRICE,
            "ask_price": MAX_PRICE, "open_interest": MAX_SIZE, "volume": MAX_SIZE}
#: Deribit's own time stamps on book-summary / ticker rows (milliseconds since 1970); a snapshot
#: reads its venue's (``Venue.timestamp_fields``)
TIMESTAMP_FIELDS = find_venue("deribit").timestamp_fields


def _venue(name: str, source: str) -> Venue:
    try:
        return find_venue(name)
    except KeyError as exc:
        raise InputError(exc.args[0], source=source, field="venue") from None


class _SnapshotFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    valuation_time: datetime
    index_prices: dict[str, float]
    instruments: list[dict[str, Any]]


def _utc(ts: datetime | str | pd.Timestamp) -> datetime:
    out = pd.Timestamp(ts)
    out = out.tz_localize("UTC") if out.tzinfo is None else out.tz_convert("UTC")
    return out.to_pydatetime()


def _microseconds(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class _Terms:
    """The contract terms of a list of instruments as arrays (read-only): what pricing needs that
    no snapshot changes, so it is built once per list, not per snapshot."""

    instruments: tuple[Instrument, ...]
    names: tuple[str, ...]
    is_option: np.ndarray
    is_spot: np.ndarray
    is_call: np.ndarray
    is_inverse: np.ndarray
    dated: np.ndarray
    strike: np.ndarray          # NaN for non-options
    expiry_us: np.ndarray       # expiry in whole microseconds since 1970 (0 when undated)
    underlyings: list[str]      # distinct, in order of appearance
    underlying_code: np.ndarray  # each instrument's position in ``underlyings``
    underlying: np.ndarray      # each instrument's underlying (object array)


_TERMS: dict[tuple[int, tuple[str, ...]], _Terms] = {}
_TERMS_KEPT = 64  # lists remembered (an optimizer asks for a handful per universe)


def _terms(instruments: Sequence[Instrument]) -> _Terms:
    names = tuple([i.name for i in instruments])  # a name fixes the instrument's terms
    key = (registry_generation(), names)  # ... under the venues registered now
    terms = _TERMS.get(key)
    if terms is not None:
        return terms
    insts = tuple(instruments)
    unds = [i.underlying for i in insts]
    order = list(dict.fromkeys(unds))
    code = {u: k for k, u in enumerate(order)}
    terms = _Terms(
        instruments=insts, names=names,
        is_option=np.array([i.kind is Kind.OPTION for i in insts], dtype=bool),
        is_spot=np.array([i.kind is Kind.SPOT for i in insts], dtype=bool),
        is_call=np.array([bool(i.is_call) for i in insts], dtype=bool),
        is_inverse=np.array([i.settlement is Settlement.INVERSE for i in insts], dtype=bool),
        dated=np.array([i.expiry is not None for i in insts], dtype=bool),
        strike=np.array([i.strike if i.strike is not None else np.nan for i in insts], dtype=float),
        expiry_us=np.array([_microseconds(i.expiry) if i.expiry is not None else 0 for i in insts],
                           dtype=np.int64),
        underlyings=order, underlying_code=np.array([code[u] for u in unds], dtype=np.intp),
        underlying=np.array(unds, dtype=object))
    for value in vars(terms).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    if len(_TERMS) >= _TERMS_KEPT:
        del _TERMS[next(iter(_TERMS))]  # the oldest
    _TERMS[key] = terms
    return terms


#: name list -> (the listing it was looked up in, the rows): a new snapshot of the same listing
#: (what a warm optimizer sees every time) finds its rows without a lookup
_ROWS: dict[tuple[str, ...], tuple[pd.Index, np.ndarray]] = {}
_ROWS_KEPT = 64


def _row_positions(listing: pd.Index, names: tuple[str, ...]) -> np.ndarray:
    """Each name's row in ``listing`` (-1: not listed), read-only."""
    known = _ROWS.get(names)
    if known is not None and (known[0] is listing or known[0].equals(listing)):
        return known[1]
    # pandas' hash engine, built in C: a Python dict of the rows cost ~2 ms at 2,000
    pos = listing.get_indexer(list(names)).astype(np.intp, copy=False)
    pos.flags.writeable = False
    if len(_ROWS) >= _ROWS_KEPT:
        del _ROWS[next(iter(_ROWS))]
    _ROWS[names] = (listing, pos)
    return pos


@dataclass(frozen=True)
class PricingInputs:
    """Plain arrays for a list of instruments, ready for vectorised pricing (all length N)."""

    instruments: tuple[Instrument, ...]
    is_option: np.ndarray
    is_call: np.ndarray
    is_inverse: np.ndarray
    is_spot: np.ndarray
    strike: np.ndarray      # NaN for non-options
    t: np.ndarray           # years to expiry (0 for perpetual and spot)
    forward: np.ndarray     # forward of the instrument's expiry (index for perpetual and spot)
    index: np.ndarray
    sigma: np.ndarray       # decimal implied vol (NaN for non-options)
    #: each instrument's underlying (an object array of str)
    underlying: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.underlying is None:
            und = np.array([i.underlying for i in self.instruments], dtype=object)
            und.flags.writeable = False
            object.__setattr__(self, "underlying", und)

    def greeks(self) -> Greeks:
        """Per-unit greeks; futures have delta 1 (coin) or F (USD), no gamma, vega or theta."""
        opt = self.is_option
        g = black76(self.forward, np.where(opt, self.strike, self.forward), self.t,
                    np.where(opt, self.sigma, 0.0), np.where(opt, self.is_call, True),
                    inverse=self.is_inverse)
        zero = np.zeros_like(self.forward)
        delta_lin = np.where(self.is_spot, self.index, self.forward)
        return Greeks(
            price=np.where(opt, g.price, zero),
            delta=np.where(opt, g.delta, np.where(self.is_inverse, 1.0, delta_lin)),
            gamma=np.where(opt, g.gamma, zero),
            vega=np.where(opt, g.vega, zero),
            theta=np.where(opt, g.theta, zero),
        )

    def take(self, rows: np.ndarray,
             instruments: tuple[Instrument, ...] | None = None) -> "PricingInputs":
        """The inputs of some of the instruments (by position), read-only like these
        (``instruments``: those rows' instruments, when the caller has them)."""
        arrays = {k: v[rows] for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        for v in arrays.values():
            v.flags.writeable = False
        if instruments is None:
            instruments = tuple(self.instruments[j] for j in rows)
        return PricingInputs(instruments=instruments, **arrays)

    @cached_property
    def _linear_greeks(self) -> Greeks:
        """Black-76 greeks of the USD value per coin (options only; computed once)."""
        opt = self.is_option
        return black76(self.forward, np.where(opt, self.strike, self.forward), self.t,
                       np.where(opt, self.sigma, 0.0), np.where(opt, self.is_call, True))

    def coin_delta(self) -> np.ndarray:
        """Exposure to the underlying in coin per unit held (Black delta for options)."""
        return np.where(self.is_option, self._linear_greeks.delta, 1.0)

    def vega_usd(self) -> np.ndarray:
        """USD value change per unit held for a one-point (0.01) rise in implied vol."""
        return np.where(self.is_option, 0.01 * self._linear_greeks.vega, 0.0)

    def gamma_coin(self) -> np.ndarray:
        """Change of coin delta per 1% move of the underlying, per unit held."""
        return np.where(self.is_option, 0.01 * self.forward * self._linear_greeks.gamma, 0.0)


@dataclass(frozen=True)
class MarketSnapshot:
    """Valuation time, index per underlying, and one row of book-summary fields per instrument."""

    valuation_time: datetime
    index_prices: Mapping[str, float]
    rows: pd.DataFrame = field(repr=False)  # indexed by instrument_name, columns ROW_FIELDS
    source: str = "<memory>"
    #: implausible but possible data found when loading (each names the row and field); the
    #: command line prints them, results may carry them on
    warnings: tuple[str, ...] = ()
    #: what this snapshot has computed once (row positions, numeric columns, pricing inputs per
    #: instrument list): a snapshot is a fixed picture of the market; edit a copy of ``rows`` and
    #: make a new snapshot rather than editing ``rows`` in place
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
        *,
        valuation_time: datetime | str,
        index_prices: Mapping[str, float],
        source: str = "<memory>",
        venue: str = "deribit",
    ) -> "MarketSnapshot":
        """Rows of market data in the fields of ``venue``'s API (``Venue.market_fields``)."""
        place = _venue(venue, source)
        if isinstance(rows, pd.DataFrame):
            frame = rows.copy()
        else:
            if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
                raise InputError(f"market rows must be a list of objects, got {describe(rows)}",
                                 source=source, field="instruments")
            rows = list(rows)
            for i, r in enumerate(rows, start=1):
                if not isinstance(r, Mapping):
                    raise InputError(f"a market row is an object of book-summary fields, got "
                                     f"{describe(r)}", source=source, row=i, field="instruments")
            frame = pd.DataFrame(rows)
        renames = {api: ours for api, ours in place.api_columns().items()
                   if api in frame.columns and ours not in frame.columns}
        if renames:
            frame = frame.rename(columns=renames)
        if "instrument_name" not in frame.columns:
            raise InputError("market rows need an 'instrument_name' column", source=source,
                             field="instrument_name")
        for col in ROW_FIELDS:
            if col not in frame.columns:
                frame[col] = np.nan
        names = frame["instrument_name"]
        bad_name = names.isna() | ~names.map(lambda v: isinstance(v, str))
        if bad_name.any():
            i = int(np.flatnonzero(bad_name.to_numpy())[0])
            raise InputError("instrument_name is missing", source=source, row=i + 1,
                             field="instrument_name")
        frame["instrument_name"] = names.map(canonical_name)
        numeric = frame[list(ROW_FIELDS)]
        for col in ROW_FIELDS:
            converted = pd.to_numeric(numeric[col], errors="coerce")
            not_number = converted.isna() & numeric[col].notna()
            negative = converted < 0
            infinite = np.isinf(converted.to_numpy(dtype=float))
            values = converted.to_numpy(dtype=float)
            limit = _ROW_MAX.get(col, np.inf)
            too_large = np.isfinite(values) & (values > limit)
            for mask, why in ((not_number, "is not a number"), (negative, "is negative"),
                              (infinite, "is infinite"),
                              (too_large, f"is implausibly large (the most marginopt accepts is "
                                          f"{limit:.0e})")):
                if np.any(mask):
                    i = int(np.flatnonzero(np.asarray(mask))[0])
                    raise InvalidValue(f"{col} {why} ({numeric[col].iloc[i]!r})", source=source,
                                       row=frame["instrument_name"].iloc[i], field=col,
                                       value=numeric[col].iloc[i])
            frame[col] = converted.astype(float)
        dup = frame["instrument_name"].duplicated()
        if dup.any():
            raise InputError("instrument listed twice in the snapshot", source=source,
                             row=frame["instrument_name"][dup].iloc[0], field="instrument_name")
        if not isinstance(index_prices, Mapping):
            raise InputError(f"index_prices must map each underlying to its index price, got "
                             f"{describe(index_prices)}", source=source, field="index_prices")
        index = {}
        for ccy, px in dict(index_prices).items():
            try:
                value = float(px) if not isinstance(px, bool) else math.nan
            except (TypeError, ValueError, OverflowError):
                raise InvalidValue(f"index price is not a number ({px!r})", source=source,
                                   row=ccy, field="index_prices") from None
            if not math.isfinite(value) or value <= 0 or value > MAX_PRICE:
                raise InvalidValue(f"index price must be positive, finite and at most "
                                   f"{MAX_PRICE:.0e}, got {px!r}", source=source, row=ccy,
                                   field="index_prices", value=px)
            index[str(ccy).upper()] = value
        try:
            when = _utc(valuation_time)
        except (TypeError, ValueError, OverflowError):
            raise InvalidValue(f"valuation_time is not a date and time ({valuation_time!r})",
                               source=source, field="valuation_time", value=valuation_time) from None
        warnings: list[str] = []
        bid, ask = frame["bid_price"].to_numpy(float), frame["ask_price"].to_numpy(float)
        crossed = np.flatnonzero(bid > ask)
        if len(crossed):
            # a crossed quote cannot be traded at: drop it (the instrument cannot be bought or
            # sold) rather than price trades at a negative spread
            first = int(crossed[0])
            warnings.append(
                f"{source}, row {frame['instrument_name'].iloc[first]}, field 'bid_price': bid "
                f"{bid[first]:g} is above ask {ask[first]:g} (crossed quote"
                + (f"; {len(crossed)} instruments in all" if len(crossed) > 1 else "")
                + "): the quotes of crossed rows are ignored, so they are not traded")
            cols = [frame.columns.get_loc("bid_price"), frame.columns.get_loc("ask_price")]
            frame.iloc[crossed, cols] = np.nan
        iv = frame["mark_iv"].to_numpy(float)
        high_iv = np.flatnonzero(iv > MAX_MARK_IV_PCT)
        if len(high_iv):
            first = int(high_iv[0])
            warnings.append(
                f"{source}, row {frame['instrument_name'].iloc[first]}, field 'mark_iv': "
                f"{iv[first]:g}% is above {MAX_MARK_IV_PCT:g}%"
                + (f" ({len(high_iv)} instruments in all)" if len(high_iv) > 1 else "")
                + "; check the snapshot")
        warnings += _time_checks(frame, when, source, place.timestamp_fields)
        frame = frame.set_index("instrument_name")
        return cls(when, index, frame, source, tuple(warnings))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, valuation_time: datetime | str | None = None,
                  index_prices: Mapping[str, float] | None = None,
                  source: str = "<memory>", venue: str = "deribit") -> "MarketSnapshot":
        """The snapshot file shape, or a raw Deribit response ``{"result": [rows]}`` with the
        valuation time and index prices given separately."""
        if not isinstance(data, Mapping):
            raise InputError(f"a market snapshot is a JSON object (valuation_time, index_prices, "
                             f"instruments), got {describe(data)}", source=source)
        if "result" in data and "instruments" not in data:
            valuation_time = valuation_time or data.get("valuation_time")
            index_prices = index_prices or data.get("index_prices")
            if valuation_time is None or index_prices is None:
                raise InputError("a raw Deribit book summary needs valuation_time and "
                                 "index_prices given separately", source=source)
            return cls.from_rows(data["result"], valuation_time=valuation_time,
                                 index_prices=index_prices, source=source, venue=venue)
        try:
            parsed = _SnapshotFile.model_validate(
                {**data, **({"valuation_time": valuation_time} if valuation_time else {}),
                 **({"index_prices": index_prices} if index_prices else {})})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(err["msg"], source=source,
                             field=".".join(str(p) for p in err["loc"])) from None
        return cls.from_rows(parsed.instruments, valuation_time=parsed.valuation_time,
                             index_prices=parsed.index_prices, source=source, venue=venue)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, **kwargs: Any) -> "MarketSnapshot":
        """A snapshot file's content (JSON)."""
        return cls.from_dict(parse_json(data, source), source=source, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "MarketSnapshot":
        return cls.from_bytes(read_bytes(path, "market snapshot file"), str(path), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        rows = self.rows.reset_index().replace({np.nan: None}).to_dict(orient="records")
        return {"valuation_time": self.valuation_time.isoformat().replace("+00:00", "Z"),
                "index_prices": dict(self.index_prices), "instruments": rows}

    # ---------------------------------------------------------------- lookups
    @property
    def instrument_names(self) -> list[str]:
        return list(self.rows.index)

    def instruments(self) -> list[Instrument]:
        return [parse_instrument(n) for n in self.rows.index]

    def year_fraction(self, expiry: datetime | None) -> float:
        if expiry is None:
            return 0.0
        return (expiry - self.valuation_time).total_seconds() / SECONDS_PER_YEAR

    def usable(self, inst: Instrument) -> str | None:
        """Why ``inst`` cannot be priced from this snapshot, or None if it can."""
        try:
            self.pricing_inputs([inst])
        except InputError as exc:
            return exc.message
        return None

    def _positions(self, names: Sequence[str]) -> np.ndarray:
        """Each name's row (rows has a unique index: from_rows rejects duplicates)."""
        key = ("positions", tuple(names))
        pos = self._memo.get(key)
        if pos is None:
            pos = self._memo[key] = _row_positions(self.rows.index, key[1])
        if np.any(pos < 0):
            raise UnknownInstrument("instrument is not in the market snapshot", source=self.source,
                                    row=names[int(np.flatnonzero(pos < 0)[0])], field="instrument_name")
        return pos

    def _numbers(self, field_name: str) -> np.ndarray:
        """A numeric column as float64, read from the frame once."""
        key = ("column", field_name)
        col = self._memo.get(key)
        if col is None:
            col = self._memo[key] = self.rows[field_name].to_numpy(dtype=float)
            col.flags.writeable = False
        return col

    def pricing_inputs(self, instruments: Sequence[Instrument]) -> PricingInputs:
        """Arrays for pricing; raises a typed error naming the first instrument that cannot be
        priced (unknown, expired, missing forward, mark or vol). Computed once per snapshot and
        list of instruments (an optimizer asks for the same universe several times)."""
        key = ("inputs", tuple([i.name for i in instruments]))  # a name fixes the instrument
        known = self._memo.get(key)
        if known is None:
            known = self._memo[key] = self._pricing_inputs(instruments)
        return known

    def _pricing_inputs(self, instruments: Sequence[Instrument]) -> PricingInputs:
        terms = _terms(instruments)
        names = terms.names
        pos = self._positions(names)
        is_option, is_spot = terms.is_option, terms.is_spot
        missing = [u for u in terms.underlyings if u not in self.index_prices]
        if missing:
            j = int(np.flatnonzero(terms.underlying_code == terms.underlyings.index(missing[0]))[0])
            raise MissingMarketData(f"no index price for {missing[0]}", source=self.source,
                                    row=names[j], field="index_prices")
        index = np.array([self.index_prices[u] for u in terms.underlyings],
                         dtype=float)[terms.underlying_code]
        dated = terms.dated
        # whole microseconds, as ``year_fraction``'s timedelta counts them: the same figures
        now_us = _microseconds(self.valuation_time)
        t = np.where(dated, (terms.expiry_us - now_us) / 1e6, 0.0) / SECONDS_PER_YEAR
        expired = dated & (t <= 0.0)
        if expired.any():
            j = int(np.flatnonzero(expired)[0])
            raise ExpiredInstrument(
                f"expired at {instruments[j].expiry:%Y-%m-%d %H:%M} UTC, at or before the valuation "
                f"time {self.valuation_time:%Y-%m-%d %H:%M} UTC", source=self.source,
                row=names[j], field="expiry")
        underlying_px = self._numbers("underlying_price")[pos]
        iv = self._numbers("mark_iv")[pos] / 100.0
        mark = self._numbers("mark_price")[pos]
        # Deribit gives options an underlying_price but futures only their mark, which is
        # their forward: a dated future without underlying_price uses its mark.
        underlying_px = np.where(dated & ~is_option & ~(underlying_px > 0), mark, underlying_px)
        # Dated instruments need their forward; perpetual and spot use the index.
        forward = np.where(dated, underlying_px, index)
        checks = (
            (dated & ~(forward > 0), "underlying_price", "no forward (underlying_price) for a dated instrument"),
            (is_option & ~np.isfinite(mark), "mark_price", "option has no mark price"),
            (is_option & ~(iv > 0), "mark_iv", "option has no positive implied volatility"),
        )
        for mask, fld, why in checks:
            if mask.any():
                j = int(np.flatnonzero(mask)[0])
                raise MissingMarketData(why, source=self.source, row=names[j], field=fld)
        inputs = PricingInputs(
            instruments=terms.instruments,
            is_option=is_option,
            is_call=terms.is_call,
            is_inverse=terms.is_inverse,
            is_spot=is_spot,
            strike=terms.strike,
            t=np.where(dated, t, 0.0),
            forward=forward,
            index=index,
            sigma=np.where(is_option, iv, np.nan),
            underlying=terms.underlying,
        )
        for value in vars(inputs).values():  # shared by every caller: read-only
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        return inputs

    def column(self, names: Sequence[str], field_name: str) -> np.ndarray:
        """A numeric field of the named rows (a new array the caller may change)."""
        return self._numbers(field_name)[self._positions(list(names))]

    def mark_usd(self, instruments: Sequence[Instrument],
                 inputs: PricingInputs | None = None) -> np.ndarray:
        """Mark per unit in USD (inverse option marks are quoted in coin, converted at the forward).
        ``inputs``: the instruments' pricing inputs, when the caller has them already."""
        names = [i.name for i in instruments]
        mark = self.column(names, "mark_price")
        inputs = inputs or self.pricing_inputs(instruments)
        return np.where(inputs.is_option & inputs.is_inverse, mark * inputs.forward, mark)

    def half_spread_usd(self, instruments: Sequence[Instrument],
                        inputs: PricingInputs | None = None) -> np.ndarray:
        """Half the bid/ask spread per unit in USD; NaN where a side is missing."""
        names = [i.name for i in instruments]
        bid = self.column(names, "bid_price")
        ask = self.column(names, "ask_price")
        inputs = inputs or self.pricing_inputs(instruments)
        conv = np.where(inputs.is_option & inputs.is_inverse, inputs.forward, 1.0)
        # Deribit quotes inverse futures in USD per coin: the spread is already in USD per coin.
        return 0.5 * (ask - bid) * conv

    def with_valuation_time(self, valuation_time: datetime | str) -> "MarketSnapshot":
        return MarketSnapshot(_utc(valuation_time), self.index_prices, self.rows, self.source,
                              self.warnings)


def _time_checks(frame: pd.DataFrame, when: datetime, source: str,
                 timestamp_fields: tuple[str, ...] = TIMESTAMP_FIELDS) -> list[str]:
    """The valuation time against the rows' own time stamps (an error past
    ``MAX_TIMESTAMP_GAP_SECONDS``, a warning past ``WARN_TIMESTAMP_GAP_SECONDS``) and against
    the listed expiries (warnings). Returns the warnings."""
    warnings: list[str] = []
    vt = when.timestamp()
    for col in timestamp_fields:
        if col not in frame.columns:
            continue
        raw = frame[col]
        stamps = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero((raw.notna().to_numpy() & ~np.isfinite(stamps)) | (stamps < 0))
        if len(bad):
            i = int(bad[0])
            raise InvalidValue(f"{col} is not a time stamp in milliseconds ({raw.iloc[i]!r})",
                               source=source, row=frame["instrument_name"].iloc[i], field=col,
                               value=raw.iloc[i])
        # Deribit's are milliseconds; a value below 1e11 can only be seconds
        seconds = np.where(stamps > 1e11, stamps / 1000.0, stamps)
        gap = np.abs(seconds - vt)
        if not np.isfinite(gap).any():
            continue
        i = int(np.nanargmax(gap))
        hours = gap[i] / 3600.0
        what = (f"the valuation time {when:%Y-%m-%d %H:%M} UTC is {hours:,.1f} hours from the "
                f"row's {col} ({pd.Timestamp(seconds[i], unit='s'):%Y-%m-%d %H:%M} UTC)")
        if gap[i] > MAX_TIMESTAMP_GAP_SECONDS:
            raise InvalidValue(f"{what}: the marks are not from the valuation time (at most "
                               f"{MAX_TIMESTAMP_GAP_SECONDS / 3600:g} hours apart is accepted)",
                               source=source, row=frame["instrument_name"].iloc[i], field=col,
                               value=raw.iloc[i])
        if gap[i] > WARN_TIMESTAMP_GAP_SECONDS:
            warnings.append(f"{source}, row {frame['instrument_name'].iloc[i]}, field '{col}': {what}")
    expiries = []
    for name in frame["instrument_name"]:
        try:
            inst = parse_instrument(name)
        except InputError:
            continue
        if inst.expiry is not None:
            expiries.append((inst.expiry, name))
    if expiries:
        expired = [(e, n) for e, n in expiries if (when - e).total_seconds() > 86_400]
        live = [(e, n) for e, n in expiries if e > when]
        if expired:
            e, n = min(expired)
            warnings.append(
                f"{source}, row {n}, field 'valuation_time': {len(expired)} listed instruments "
                f"expired more than a day before the valuation time {when:%Y-%m-%d %H:%M} UTC "
                f"(the first on {e:%Y-%m-%d}); an exchange lists none: is the valuation time "
                "later than the snapshot?")
        if live:
            e, n = min(live)
            days = (e - when).total_seconds() / 86_400
            if days > WARN_NEAREST_EXPIRY_DAYS:
                warnings.append(
                    f"{source}, row {n}, field 'valuation_time': the nearest listed expiry is "
                    f"{days:,.0f} days after the valuation time {when:%Y-%m-%d %H:%M} UTC; is the "
                    "valuation time earlier than the snapshot?")
    return warnings


def load_market(source: str | Path | Mapping[str, Any] | MarketSnapshot, **kwargs: Any) -> MarketSnapshot:
    """A snapshot from a file path, a dict in the file shape, or an existing snapshot."""
    if isinstance(source, MarketSnapshot):
        return source
    if isinstance(source, Mapping):
        return MarketSnapshot.from_dict(source, **kwargs)
    if not isinstance(source, (str, Path)):
        raise InputError(f"no market snapshot given: expected a file path, dict or snapshot, got "
                         f"{'None' if source is None else type(source).__name__}", field="market")
    return MarketSnapshot.from_file(source, **kwargs)
