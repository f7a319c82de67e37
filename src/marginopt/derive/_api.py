"""Derive's own JSON replies as a marginopt book, market and PM2 model.

Derive names its contracts ``ETH-20250228-3000-C`` and ``ETH-PERP``; marginopt writes them in the
Derive venue's scheme (``ETH_USDC-28FEB25-3000-C``, ``ETH_USDC-PERPETUAL``, see
``marginopt.venues.derive``). ``marginopt_name`` and ``native_name`` translate; every market row and
position keeps the exchange's name in a ``native_name`` column.

The replies read (Derive's JSON-RPC ``result`` objects, numbers as decimal strings or numbers):

- ``public/get_tickers`` / ``public/get_ticker`` rows: ``instrument_name``, ``mark_price`` (or
  ``M``), ``index_price`` (``I``), ``best_bid_price`` / ``best_ask_price`` (``b`` / ``a``),
  ``stats.open_interest`` (``stats.oi``) and, for options, ``option_pricing`` with ``iv`` (a
  fraction) and ``forward_price``. A mapping ``{instrument_name: ticker}`` is read too.
- ``private/get_positions`` rows (``instrument_name``, ``instrument_type``, ``amount``,
  ``unrealized_pnl``, ``pending_funding``) and ``private/get_subaccount`` (``subaccount_id``,
  ``margin_type``, ``currency``, ``collaterals`` with ``asset_name``, ``amount``, ``mark_price``;
  the exchange's ``initial_margin``, ``maintenance_margin``, ``subaccount_value``).
- ``public/get_latest_signed_feeds``: the oracle data PM2 margins with on-chain: ``spot_data``
  (price, confidence per currency), ``perp_data`` (``spot_diff_value`` per feed type; ``P`` is
  the perp's price feed), and per expiry ``fwd_data`` (``fwd_diff``), ``rate_data`` (``rate``),
  ``vol_data`` (the SVI: ``SVI_a``, ``SVI_b``, ``SVI_rho``, ``SVI_m``, ``SVI_sigma``, ``SVI_fwd``,
  ``SVI_refTau``), each with its ``confidence``.

``derive_market`` and ``derive_portfolio`` give what any marginopt model reads (the shipped
``derive-pm2`` then margins the book on the tickers' vols, rates 0, confidences 1);
``derive_model`` gives ``derive-pm2`` with the subaccount's cash, collaterals and perp P&L and the
oracles' feeds, which is how the exchange margins the account. Collateral haircuts and the
risk-cancelling flag are the risk manager's parameters, not in any reply: pass them as
``collateral_params``.

Every malformed row is an ``InputError`` naming the reply (``source``), the row (instrument or
index) and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from marginopt.errors import InputError, InvalidValue, MalformedInstrumentName, MissingMarketData
from marginopt.instruments import Kind, Settlement
from marginopt.venues import venue

#: Derive's names: ``ETH-20250228-3000-C`` (strike may carry decimals) and ``ETH-PERP``
_NATIVE = re.compile(r"^(?P<u>[A-Z][A-Z0-9]*)-(?:(?P<perp>PERP)|(?P<date>\d{8})-"
                     r"(?P<strike>\d+(?:\.\d+)?)-(?P<cp>[CP]))$")
#: the collateral Derive holds as the account's cash
CASH_ASSET = "USDC"
#: the perp feed type whose ``spot_diff_value`` gives the perp's price (mid)
PERP_FEED = "P"
_DERIVE = venue("derive")


# --------------------------------------------------------------------------- names
def marginopt_name(native: str, *, source: str = "derive", row: int | str | None = None) -> str:
    """marginopt's name for one of Derive's (``ETH-20250228-3000-C`` -> ``ETH_USDC-28FEB25-3000-C``,
    ``ETH-PERP`` -> ``ETH_USDC-PERPETUAL``); options expire at 08:00 UTC."""
    m = _NATIVE.match(native) if isinstance(native, str) else None
    if m is None:
        raise MalformedInstrumentName(f"{native!r} is not a Derive option or perp name (e.g. "
                                      "ETH-20250228-3000-C, ETH-PERP)", source=source,
                                      row=row if row is not None else native,
                                      field="instrument_name", value=native)
    u = m.group("u")
    if m.group("perp"):
        return _DERIVE.format(u, Kind.PERPETUAL, Settlement.LINEAR)
    try:
        day = datetime.strptime(m.group("date"), "%Y%m%d")
    except ValueError:
        raise MalformedInstrumentName(f"{native!r} has no valid expiry date", source=source,
                                      row=row if row is not None else native,
                                      field="instrument_name", value=native) from None
    expiry = day.replace(hour=_DERIVE.expiry_hour_utc, tzinfo=timezone.utc)
    return _DERIVE.format(u, Kind.OPTION, Settlement.LINEAR, expiry, float(m.group("strike")),
                          m.group("cp") == "C")


def native_name(name: str) -> str:
    """Derive's name for a marginopt name of a Derive contract (inverse of ``marginopt_name``)."""
    inst = _DERIVE.parse(name)
    if inst.kind is Kind.PERPETUAL:
        return f"{inst.underlying}-PERP"
    if inst.kind is not Kind.OPTION:
        raise MalformedInstrumentName(f"{name!r}: Derive lists options and perps only",
                                      field="instrument_name", value=name)
    k = float(inst.strike)
    strike = str(int(k)) if k.is_integer() else repr(k)
    return f"{inst.underlying}-{inst.expiry:%Y%m%d}-{strike}-{'C' if inst.is_call else 'P'}"


# --------------------------------------------------------------------------- numbers
def _num(obj: Mapping[str, Any], *keys: str, source: str, row: Any, required: bool = True,
         positive: bool = False) -> float | None:
    """The first of ``keys`` present in ``obj`` as a finite float (Derive sends decimal strings)."""
    for k in keys:
        if k in obj and obj[k] is not None:
            v = obj[k]
            try:
                x = float(v) if not isinstance(v, bool) else math.nan
            except (TypeError, ValueError):
                x = math.nan
            if not math.isfinite(x) or (positive and x <= 0):
                raise InvalidValue(f"{k} is not a {'positive ' if positive else ''}number ({v!r})",
                                   source=source, row=row, field=k, value=v)
            return x
    if required:
        raise InputError(f"no {' or '.join(keys)}", source=source, row=row, field=keys[0])
    return None


def _rows(data: Any, source: str, key: str) -> list[tuple[str | int, Mapping[str, Any]]]:
    """``[(row label, row)]`` from a list of rows, ``{key: [...]}`` or ``{name: row}``."""
    if isinstance(data, Mapping) and isinstance(data.get(key), (list, Mapping)):
        data = data[key]
    if isinstance(data, Mapping):
        out = []
        for name, r in data.items():
            if not isinstance(r, Mapping):
                raise InputError("a row is not an object", source=source, row=str(name))
            out.append((str(name), {"instrument_name": name, **r}))
        return out
    if not isinstance(data, list):
        raise InputError(f"expected a list of rows, got {type(data).__name__}", source=source,
                         field=key)
    out = []
    for i, r in enumerate(data, start=1):
        if not isinstance(r, Mapping):
            raise InputError("a row is not an object", source=source, row=i)
        if not isinstance(r.get("instrument_name"), str):
            raise InputError("no instrument_name", source=source, row=i, field="instrument_name")
        out.append((i, r))
    return out


def _utc(t: datetime | str | float | int) -> datetime:
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return datetime.fromtimestamp(float(t), tz=timezone.utc)
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def whole_second(t: datetime | str | float | int) -> datetime:
    """``t`` in UTC, truncated to the second (PM2 counts expiries in whole seconds)."""
    return _utc(t).replace(microsecond=0)


# --------------------------------------------------------------------------- market
def market_rows(tickers: Any, *, source: str = "derive public/get_tickers"
                ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """marginopt market rows (``native_name`` kept) and the index price per underlying."""
    rows: list[dict[str, Any]] = []
    index: dict[str, float] = {}
    for label, r in _rows(tickers, source, "tickers"):
        native = r["instrument_name"]
        name = marginopt_name(native, source=source, row=label)
        where = native
        out: dict[str, Any] = {"instrument_name": name, "native_name": native,
                               "mark_price": _num(r, "mark_price", "M", source=source, row=where)}
        px = _num(r, "index_price", "I", source=source, row=where, required=False, positive=True)
        u = native.split("-")[0]
        if px is not None:
            index.setdefault(u, px)
        bid = _num(r, "best_bid_price", "b", source=source, row=where, required=False)
        ask = _num(r, "best_ask_price", "a", source=source, row=where, required=False)
        # Derive shows an empty side of the book as price 0
        out["bid_price"] = bid if bid else None
        out["ask_price"] = ask if ask else None
        stats = r.get("stats") if isinstance(r.get("stats"), Mapping) else {}
        oi = _num(stats, "open_interest", "oi", source=source, row=where, required=False)
        if oi is None:
            oi = _num(r, "open_interest", source=source, row=where, required=False)
        out["open_interest"] = oi
        if name.endswith(("-C", "-P")):
            op = r.get("option_pricing")
            if not isinstance(op, Mapping):
                raise InputError("an option's ticker has no option_pricing object", source=source,
                                 row=where, field="option_pricing")
            iv = _num(op, "iv", source=source, row=where, positive=True)
            out["mark_iv"] = 100.0 * iv  # marginopt's mark_iv is in percent, Derive's iv a fraction
            out["underlying_price"] = _num(op, "forward_price", source=source, row=where,
                                           positive=True)
        else:
            out["underlying_price"] = out["mark_price"]
        rows.append(out)
    return rows, index


def derive_market(tickers: Any, *, valuation_time: datetime | str | float,
                  index_prices: Mapping[str, float] | None = None,
                  source: str = "derive public/get_tickers") -> Any:
    """A ``MarketSnapshot`` of Derive's ticker rows (module docstring); ``index_prices``
    override the tickers' ``index_price``."""
    from marginopt.market import MarketSnapshot
    rows, index = market_rows(tickers, source=source)
    index.update(index_prices or {})
    return MarketSnapshot.from_rows(rows, valuation_time=whole_second(valuation_time),
                                    index_prices=index, source=source)


# --------------------------------------------------------------------------- positions
def position_rows(positions: Any, *, source: str = "derive private/get_positions"
                  ) -> list[dict[str, Any]]:
    """``{"instrument_name", "native_name", "size"}`` per non-zero position."""
    out = []
    for label, r in _rows(positions, source, "positions"):
        native = r["instrument_name"]
        amount = _num(r, "amount", source=source, row=native)
        if amount == 0.0:
            continue
        out.append({"instrument_name": marginopt_name(native, source=source, row=label),
                    "native_name": native, "size": amount})
    return out


def derive_portfolio(positions: Any, *, source: str = "derive private/get_positions") -> Any:
    """A ``Portfolio`` of Derive's positions (non-zero amounts, marginopt's names)."""
    from marginopt.portfolio import Portfolio
    rows = position_rows(positions, source=source)
    seen: dict[str, str] = {}
    for r in rows:
        if r["instrument_name"] in seen:
            raise InputError("the same contract is listed twice", source=source,
                             row=r["native_name"], field="instrument_name")
        seen[r["instrument_name"]] = r["native_name"]
    return Portfolio({r["instrument_name"]: r["size"] for r in rows}, source=source)


# --------------------------------------------------------------------------- the subaccount
@dataclass(frozen=True)
class DeriveSubaccount:
    """What ``private/get_subaccount`` (and the positions) say about a subaccount.

    ``initial_margin`` / ``maintenance_margin`` are Derive's figures: the account's surplus
    (``subaccount_value`` less the requirement; trades are refused below 0)."""

    subaccount_id: int | str
    margin_type: str
    currency: str
    subaccount_value: float
    initial_margin: float
    maintenance_margin: float
    open_orders_margin: float
    cash: float
    #: (asset_name, amount, mark_price) per non-USDC collateral
    collaterals: tuple[tuple[str, float, float], ...]
    perp_unrealised_pnl: float
    perp_pending_funding: float

    @property
    def initial_requirement(self) -> float:
        """Derive's IM as a requirement (marginopt's sense): value less the surplus."""
        return self.subaccount_value - self.initial_margin

    @property
    def maintenance_requirement(self) -> float:
        return self.subaccount_value - self.maintenance_margin


def derive_subaccount(subaccount: Mapping[str, Any], positions: Any = None, *,
                      source: str = "derive private/get_subaccount") -> DeriveSubaccount:
    """The subaccount's figures; ``positions`` (``private/get_positions``) default to the
    subaccount reply's own ``positions``."""
    if not isinstance(subaccount, Mapping):
        raise InputError("the subaccount reply is not an object", source=source)
    sid = subaccount.get("subaccount_id", "?")
    row = f"subaccount {sid}"
    cash = 0.0
    coll: list[tuple[str, float, float]] = []
    raw = subaccount.get("collaterals", [])
    if not isinstance(raw, list):
        raise InputError("collaterals is not a list", source=source, row=row, field="collaterals")
    for i, c in enumerate(raw, start=1):
        if not isinstance(c, Mapping) or not isinstance(c.get("asset_name"), str):
            raise InputError("a collateral has no asset_name", source=source, row=f"{row} collateral {i}",
                             field="asset_name")
        name = c["asset_name"]
        amount = _num(c, "amount", source=source, row=f"{row} collateral {name}")
        if name == CASH_ASSET:
            cash += amount
        elif amount != 0.0:
            price = _num(c, "mark_price", source=source, row=f"{row} collateral {name}", positive=True)
            coll.append((name, amount, price))
    pos = subaccount.get("positions", []) if positions is None else positions
    pnl = funding = 0.0
    psrc = "derive private/get_positions"
    for label, p in _rows(pos, psrc, "positions"):
        if p["instrument_name"].endswith("-PERP"):
            pnl += _num(p, "unrealized_pnl", source=psrc, row=p["instrument_name"])
            funding += _num(p, "pending_funding", source=psrc, row=p["instrument_name"],
                            required=False) or 0.0
    fig = {k: _num(subaccount, k, source=source, row=row)
           for k in ("subaccount_value", "initial_margin", "maintenance_margin")}
    return DeriveSubaccount(
        subaccount_id=sid, margin_type=str(subaccount.get("margin_type", "")),
        currency=str(subaccount.get("currency", "") or ""), **fig,
        open_orders_margin=_num(subaccount, "open_orders_margin", source=source, row=row,
                                required=False) or 0.0,
        cash=cash, collaterals=tuple(coll), perp_unrealised_pnl=pnl, perp_pending_funding=funding)


# --------------------------------------------------------------------------- oracle feeds
def _feed(data: Mapping[str, Any], key: str, ccy: str, source: str) -> Mapping[str, Any]:
    block = data.get(key)
    if not isinstance(block, Mapping):
        raise InputError(f"no {key} object", source=source, field=key)
    return block.get(ccy) if isinstance(block.get(ccy), Mapping) else {}


def derive_feeds(feeds: Mapping[str, Any], currency: str, *, valuation_time: datetime | str | float,
                 source: str = "derive public/get_latest_signed_feeds") -> dict[str, Any]:
    """The PM2 market block (``DeriveMarket`` keys) of ``currency`` from the oracles' signed
    feeds: spot and its confidence, the perp's price (spot + the ``P`` feed's
    ``spot_diff_value``), the stable coin (the USDC spot feed), and one option feed per expiry
    after ``valuation_time`` with a vol (SVI) feed: forward = spot + ``fwd_diff``, its rate and
    the confidences."""
    if not isinstance(feeds, Mapping):
        raise InputError("the feeds reply is not an object", source=source)
    ccy = currency.upper()
    now = whole_second(valuation_time)
    spots = feeds.get("spot_data")
    if not isinstance(spots, Mapping) or not isinstance(spots.get(ccy), Mapping):
        raise MissingMarketData(f"no spot feed for {ccy}", source=source, row=ccy, field="spot_data")
    spot = _num(spots[ccy], "price", source=source, row=f"spot_data.{ccy}", positive=True)
    spot_conf = _num(spots[ccy], "confidence", source=source, row=f"spot_data.{ccy}")
    if not isinstance(spots.get(CASH_ASSET), Mapping):
        raise MissingMarketData(f"no spot feed for {CASH_ASSET} (PM2's stable coin)", source=source,
                                row=CASH_ASSET, field="spot_data")
    stable = _num(spots[CASH_ASSET], "price", source=source, row=f"spot_data.{CASH_ASSET}",
                  positive=True)
    stable_conf = _num(spots[CASH_ASSET], "confidence", source=source, row=f"spot_data.{CASH_ASSET}")
    out: dict[str, Any] = {"SpotPrice": spot, "SpotConfidence": spot_conf, "StablePrice": stable,
                           "StableConfidence": stable_conf}
    perp = _feed(feeds, "perp_data", ccy, source).get(PERP_FEED)
    if isinstance(perp, Mapping):
        row = f"perp_data.{ccy}.{PERP_FEED}"
        out["PerpPrice"] = spot + _num(perp, "spot_diff_value", source=source, row=row)
        out["PerpConfidence"] = _num(perp, "confidence", source=source, row=row)
    vols, fwds, rates = (_feed(feeds, k, ccy, source) for k in ("vol_data", "fwd_data", "rate_data"))
    option_feeds = []
    for exp in sorted(vols, key=lambda e: int(e)):
        seconds = int(exp) - int(now.timestamp())
        if seconds <= 0:
            continue  # expired: settled at its settlement price, no longer margined by a feed
        row = f"{ccy} expiry {exp}"
        v = vols[exp]
        svi = v.get("vol_data") if isinstance(v, Mapping) else None
        if not isinstance(svi, Mapping):
            raise InputError("a vol feed has no vol_data", source=source, row=row, field="vol_data")
        f, r = fwds.get(exp), rates.get(exp)
        if not isinstance(f, Mapping):
            raise MissingMarketData("an expiry with a vol feed has no forward feed", source=source,
                                    row=row, field="fwd_data")
        if not isinstance(r, Mapping):
            raise MissingMarketData("an expiry with a vol feed has no rate feed", source=source,
                                    row=row, field="rate_data")
        forward = spot + _num(f, "fwd_diff", source=source, row=row)
        option_feeds.append({
            "FeedExpiry": seconds, "Forward": forward,
            "ForwardConfidence": _num(f, "confidence", source=source, row=row),
            "Rate": _num(r, "rate", source=source, row=row),
            "RateConfidence": _num(r, "confidence", source=source, row=row),
            "SVIparam": [_num(svi, k, source=source, row=row) for k in
                         ("SVI_a", "SVI_b", "SVI_rho", "SVI_m", "SVI_sigma", "SVI_fwd", "SVI_refTau")],
            "OptionVolConfidences": _num(v, "confidence", source=source, row=row),
        })
    out["OptionFeeds"] = option_feeds
    return out


# --------------------------------------------------------------------------- the model
def derive_model(subaccount: DeriveSubaccount | Mapping[str, Any], feeds: Mapping[str, Any], *,
                 valuation_time: datetime | str | float, currency: str | None = None,
                 positions: Any = None,
                 collateral_params: Mapping[str, Mapping[str, Any]] | None = None,
                 parameters: Mapping[str, Any] | None = None, base: str = "derive-pm2") -> Any:
    """``derive-pm2`` (or ``base``) with the subaccount's cash, collaterals and perp P&L and the
    oracles' market (``derive_feeds``): PM2 as the exchange computes it for this account.

    ``collateral_params``: per non-USDC collateral, ``IMHaircut``, ``MMHaircut`` and
    ``IsRiskCancelling`` (the risk manager's settings; no reply carries them). ``parameters``
    override the PM2 rule parameters key by key."""
    from marginopt.margins import MarginModel, load_model
    acct = subaccount if isinstance(subaccount, DeriveSubaccount) else \
        derive_subaccount(subaccount, positions)
    ccy = (currency or acct.currency).upper()
    if not ccy:
        raise InputError("the subaccount names no currency: pass currency", field="currency")
    now = whole_second(valuation_time)
    market = derive_feeds(feeds, ccy, valuation_time=now)
    spots = feeds.get("spot_data", {})
    collaterals = []
    for name, amount, price in acct.collaterals:
        params = (collateral_params or {}).get(name)
        if not isinstance(params, Mapping):
            raise InputError(f"the subaccount holds {name} as collateral: give its IMHaircut, "
                             f"MMHaircut and IsRiskCancelling in collateral_params (the risk "
                             f"manager's settings are not in the exchange's replies)",
                             source="collateral_params", row=name, field="IMHaircut")
        for key in ("IMHaircut", "MMHaircut"):
            if key not in params:
                raise InputError(f"no {key} for collateral {name}", source="collateral_params",
                                 row=name, field=key)
        feed = spots.get(name) if isinstance(spots, Mapping) else None
        if "Confidence" in params:
            conf = float(params["Confidence"])
        elif isinstance(feed, Mapping):
            conf = _num(feed, "confidence", source="derive public/get_latest_signed_feeds",
                        row=f"spot_data.{name}")
        else:
            raise MissingMarketData(f"no spot feed for collateral {name} (its oracle confidence): "
                                    "give Confidence in collateral_params",
                                    source="derive public/get_latest_signed_feeds", row=name,
                                    field="spot_data")
        collaterals.append({"Name": name, "Amount": amount, "Price": price,
                            "Confidence": conf,
                            "IsRiskCancelling": bool(params.get("IsRiskCancelling", False)),
                            "IMHaircut": float(params["IMHaircut"]),
                            "MMHaircut": float(params["MMHaircut"])})
    state = {"underlying": ccy, "valuation_time": now,
             "account": {"Cash": acct.cash, "Collaterals": collaterals,
                         "UnrealisedPerpPNL": acct.perp_unrealised_pnl,
                         "UnrealisedFunding": acct.perp_pending_funding},
             "market": market}
    model = load_model(base)
    data = model.model_dump(exclude={"path"})
    found = False
    for rules in data["currencies"].values():
        for comp in [*rules["initial"], *(rules.get("maintenance") or [])]:
            if comp["type"] == "derive_pm2":
                comp.update(state)
                if parameters:
                    comp["parameters"] = {**comp.get("parameters", {}), **dict(parameters)}
                found = True
    if not found:
        raise InputError(f"model {base!r} has no derive_pm2 component", field="base", value=base)
    data["description"] = (f"{data['description']} Account: Derive subaccount "
                           f"{acct.subaccount_id} ({ccy}) at {now:%Y-%m-%d %H:%M:%S} UTC.")
    return MarginModel.model_validate({**data, "path": model.path})


def book_for_margin(book: Any, currency: str) -> Any:
    """The book, or a zero perp position when it is empty: the engine margins the account's
    collaterals in a pool, and an empty book has none (as ``to_marginopt`` does)."""
    from marginopt.portfolio import Portfolio
    if len(book):
        return book
    return Portfolio({_DERIVE.format(currency.upper(), Kind.PERPETUAL, Settlement.LINEAR): 0.0},
                     source=getattr(book, "source", "derive"))


def expiry_timestamp(expiry: datetime) -> int:
    """Unix seconds of an expiry (the key of Derive's per-expiry feeds)."""
    return int(_utc(expiry).timestamp())


__all__ = ["CASH_ASSET", "DeriveSubaccount", "book_for_margin", "derive_feeds", "derive_market",
           "derive_model", "derive_portfolio", "derive_subaccount", "expiry_timestamp",
           "market_rows", "marginopt_name", "native_name", "position_rows", "whole_second"]
