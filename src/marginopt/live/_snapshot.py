"""Fetch a venue's market and account into a snapshot folder, atomically; read one back.

A snapshot is one folder, ``<venue>[-testnet]-<UTC time>Z``, holding:

- ``market.json``: ``valuation_time`` (the exchange's clock), ``index_prices`` and the
  book-summary rows of every listed option, future and perpetual, as the exchange sent them (the
  shape ``marginopt.load_market`` reads);
- ``positions.json``: ``{"positions": [...]}``, the ``private/get_positions`` rows unchanged (the
  shape ``marginopt.load_portfolio`` reads);
- ``open_orders.json``, ``account_summary.json`` (per currency) and, for portfolio-margin
  accounts, ``pme_simulate.json`` (per currency): the exchange's replies unchanged;
- Derive: the same files in marginopt's names (``native_name`` keeps Derive's), the subaccount
  reply as the account summary, and ``derive.json`` with the oracles' signed feeds and the raw
  positions (``marginopt.live._derive``);
- ``manifest.json``, written last: venue, currencies, times, calls per endpoint, files.

Everything is fetched into memory first, then written into a hidden sibling folder and renamed
into place: ``--out`` only ever holds complete snapshots (a process killed mid-fetch leaves
nothing; one killed mid-write leaves only a hidden ``.partial`` folder, removed by the next fetch
and ignored by every reader).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import ExchangeRejected, InputError, OutputError, PartialData, SnapshotError
from ..instruments import parse_instrument
from ..market import MarketSnapshot, load_market
from ..portfolio import Portfolio, load_portfolio
from ._credentials import Credentials, load_credentials
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._deribit import DeribitClient
    from ._derive import DeriveClient

FILES = {"market": "market.json", "positions": "positions.json", "open_orders": "open_orders.json",
         "account": "account_summary.json", "pme": "pme_simulate.json", "manifest": "manifest.json",
         "derive": "derive.json"}
#: venues ``fetch`` can fetch
VENUES = ("deribit", "derive")
#: Deribit's book-summary kinds (``future`` includes the perpetual)
KINDS = ("option", "future")
#: settlement currencies whose instruments span several underlyings
_STABLE = ("USDC", "USDT")
FORMAT = 1


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"


def index_name(underlying: str, settlement_currency: str) -> str:
    """Deribit's index for an underlying: ``btc_usd`` for coin-settled books, ``sol_usdc`` for
    the underlyings listed only under USDC."""
    if settlement_currency.upper() in _STABLE and underlying.upper() != settlement_currency.upper():
        return f"{underlying.lower()}_{settlement_currency.lower()}"
    return f"{underlying.lower()}_usd"


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot folder (see the module docstring)."""

    path: Path
    manifest: Mapping[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def venue(self) -> str:
        return str(self.manifest.get("venue", ""))

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("currencies", ()))

    @property
    def has_account(self) -> bool:
        return bool(self.manifest.get("account", False))

    def _json(self, key: str) -> Any:
        path = self.path / FILES[key]
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SnapshotError(f"the snapshot has no {FILES[key]}", source=str(self.path)) from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"cannot read {FILES[key]} ({type(exc).__name__})",
                                source=str(self.path)) from None

    @cached_property
    def market(self) -> MarketSnapshot:
        return load_market(self.path / FILES["market"])

    @cached_property
    def positions(self) -> list[dict[str, Any]]:
        return list(self._need_account("positions").get("positions", []))

    def portfolio(self) -> Portfolio:
        """The book: every position with a non-zero size (Deribit also lists closed ones)."""
        rows = [r for r in self.positions if _size(r) != 0.0]
        return load_portfolio({"positions": rows}) if rows else Portfolio({}, str(self.path))

    @cached_property
    def open_orders(self) -> list[dict[str, Any]]:
        return list(self._need_account("open_orders").get("orders", []))

    @cached_property
    def account_summaries(self) -> dict[str, dict[str, Any]]:
        return dict(self._need_account("account").get("summaries", {}))

    @cached_property
    def derive(self) -> dict[str, Any]:
        """A Derive snapshot's raw replies: ``feeds`` (``public/get_latest_signed_feeds``) and,
        with the account, ``positions`` (``private/get_positions``)."""
        if not (self.path / FILES["derive"]).exists():
            return {}
        data = self._json("derive")
        if not isinstance(data, dict):
            raise SnapshotError(f"{FILES['derive']} is not a JSON object", source=str(self.path))
        return data

    @cached_property
    def pme(self) -> dict[str, Any]:
        if not (self.path / FILES["pme"]).exists():
            return {}
        return dict(self._json("pme").get("simulations", {}))

    def _need_account(self, key: str) -> dict[str, Any]:
        if not self.has_account:
            raise SnapshotError("the snapshot holds the market only (fetched with --market-only): "
                                "no account data", source=str(self.path))
        data = self._json(key)
        if not isinstance(data, dict):
            raise SnapshotError(f"{FILES[key]} is not a JSON object", source=str(self.path))
        return data


def _size(row: Mapping[str, Any]) -> float:
    for k in ("size_currency", "size", "quantity"):
        v = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0


def is_snapshot(path: Path) -> bool:
    """A complete snapshot folder (not hidden, manifest present)."""
    return path.is_dir() and not path.name.startswith(".") and (path / FILES["manifest"]).is_file()


def load_snapshot(path: str | Path) -> Snapshot:
    """A snapshot folder written by ``fetch``; a typed error if it is not a complete one."""
    p = Path(path)
    if not p.is_dir():
        raise SnapshotError("no such snapshot folder", source=str(p))
    if not is_snapshot(p):
        raise SnapshotError("not a complete snapshot (no manifest.json, or a hidden partial "
                            "folder)", source=str(p))
    try:
        manifest = json.loads((p / FILES["manifest"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"cannot read manifest.json ({type(exc).__name__})", source=str(p)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"manifest.json is not a marginopt snapshot manifest (format {FORMAT})",
                            source=str(p))
    return Snapshot(p, manifest)


def list_snapshots(folder: str | Path) -> list[Path]:
    """The complete snapshots in ``folder``, oldest first (their names sort by time)."""
    f = Path(folder)
    if not f.is_dir():
        return []
    return sorted((p for p in f.iterdir() if is_snapshot(p)), key=_time_key)


_STAMP = re.compile(r"(\d{8}T\d{6}\.\d{3}Z)(?:-(\d+))?$")


def _time_key(p: Path) -> tuple[str, int, str]:
    m = _STAMP.search(p.name)
    return (m.group(1), int(m.group(2) or 0), p.name) if m else ("", 0, p.name)


# ---------------------------------------------------------------------------- fetching
def fetch_data(client: DeribitClient | DeriveClient, currencies: Sequence[str], *,
               account: bool = True) -> dict[str, Any]:
    """Everything a snapshot holds, in memory (nothing is written here). Typed errors for every
    failure; ``PartialData`` when a reply parses but lacks what the snapshot needs."""
    if client.venue == "derive":
        from ._derive import fetch_derive_data
        return fetch_derive_data(client, currencies, account=account)  # type: ignore[arg-type]
    started = _utc_now()
    rows: list[dict[str, Any]] = []
    underlyings: dict[str, str] = {}
    valuation_us: int | None = None
    for ccy in currencies:
        got = []
        for kind in KINDS:
            got += client.book_summary(ccy, kind)
            if valuation_us is None:
                valuation_us = client.server_time_us
        if not got:
            raise PartialData(f"no instruments listed for {ccy}", venue=client.venue,
                              endpoint="public/get_book_summary_by_currency")
        rows += got
        for r in got:
            try:
                u = parse_instrument(r["instrument_name"]).underlying
            except InputError:
                continue  # a listing marginopt cannot name: kept in the rows, never priced
            underlyings.setdefault(u, index_name(u, ccy))
    names = [r["instrument_name"] for r in rows]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PartialData(f"{dup} listed twice across the currencies", venue=client.venue,
                          endpoint="public/get_book_summary_by_currency")
    index_prices = {u: client.index_price(name) for u, name in sorted(underlyings.items())}
    when = (datetime.fromtimestamp(valuation_us / 1e6, tz=timezone.utc) if valuation_us
            else started)
    data: dict[str, Any] = {
        "market": {"valuation_time": when.isoformat().replace("+00:00", "Z"),
                   "index_prices": index_prices, "instruments": rows},
        "account": account,
    }
    if account:
        listed = set(names)
        positions: list[dict[str, Any]] = []
        orders: list[dict[str, Any]] = []
        summaries: dict[str, Any] = {}
        for ccy in currencies:
            positions += client.positions(ccy)
            orders += client.open_orders(ccy)
            summaries[ccy] = client.account_summary(ccy)
        for p in positions:
            if _size(p) != 0.0 and p["instrument_name"] not in listed:
                raise PartialData(f"the account holds {p['instrument_name']}, which the book "
                                  f"summaries do not list (currencies fetched: "
                                  f"{', '.join(currencies)})", venue=client.venue,
                                  endpoint="private/get_positions")
        data["positions"] = {"positions": positions}
        data["open_orders"] = {"orders": orders}
        data["account_summary"] = {"summaries": summaries}
        sims: dict[str, Any] = {}
        for ccy, summary in summaries.items():
            if margin_model_of(summary) == "deribit-pm":
                try:
                    sims[ccy] = client.pme_simulate(ccy)
                except ExchangeRejected as exc:
                    # the account may not allow the simulation: keep the refusal, not the fetch's end
                    sims[ccy] = {"refused": {"code": exc.code, "message": exc.message}}
        if sims:
            data["pme"] = {"simulations": sims}
    data["fetched"] = {"started": started.isoformat().replace("+00:00", "Z"),
                       "finished": _utc_now().isoformat().replace("+00:00", "Z")}
    return data


def margin_model_of(summary: Mapping[str, Any]) -> str:
    """marginopt's model for a Deribit account summary: ``deribit-pm`` for a portfolio-margin
    account (``margin_model`` ``cross_pm``/``segregated_pm``), ``deribit-standard`` for a
    standard one (``cross_sm``/``segregated_sm``); older replies carry only
    ``portfolio_margining_enabled``."""
    if isinstance(summary.get("margin_type"), str):
        # a Derive subaccount (private/get_subaccount): PM2 is the portfolio manager marginopt models
        if summary["margin_type"].upper() == "PM2":
            return "derive-pm2"
        raise SnapshotError(f"Derive margin_type {summary['margin_type']!r} is not modelled "
                            "(marginopt models PM2)", field="margin_type", value=summary["margin_type"])
    mm = summary.get("margin_model")
    if isinstance(mm, str) and mm:
        if mm.endswith("_pm") or mm == "pm":
            return "deribit-pm"
        if mm.endswith("_sm") or mm == "sm":
            return "deribit-standard"
        raise SnapshotError(f"unknown Deribit margin_model {mm!r}", field="margin_model", value=mm)
    if isinstance(summary.get("portfolio_margining_enabled"), bool):
        return "deribit-pm" if summary["portfolio_margining_enabled"] else "deribit-standard"
    raise SnapshotError("the account summary says neither margin_model nor "
                        "portfolio_margining_enabled", field="margin_model")


def _public_url(url: str | None) -> str | None:
    """The address without any user:password part."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _clean_stale(out: Path) -> None:
    """Remove the hidden partial folders of fetches that died (their process is gone)."""
    for p in out.glob(".*.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process


def write_snapshot(data: Mapping[str, Any], out: str | Path, *, venue: str, currencies: Sequence[str],
                   testnet: bool, calls: Mapping[str, int] | None = None,
                   base_url: str | None = None) -> Path:
    """Write ``data`` (from ``fetch_data``) as a new snapshot folder in ``out``, atomically."""
    from .. import __version__
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder ({exc.strerror})", source=str(out), field="out") from None
    _clean_stale(out)
    t = _utc_now()
    base = f"{venue}{'-testnet' if testnet else ''}-{_stamp(t)}"
    name, k = base, 0
    while (out / name).exists():
        k += 1
        name = f"{base}-{k}"
    tmp = out / f".{name}.partial-{os.getpid()}"
    files = {"market": data["market"]}
    if data.get("account"):
        files.update(positions=data["positions"], open_orders=data["open_orders"],
                     account=data["account_summary"])
        if "pme" in data:
            files["pme"] = data["pme"]
    if "derive" in data:
        files["derive"] = data["derive"]
    manifest = {
        "format": FORMAT, "venue": venue, "testnet": testnet, "currencies": list(currencies),
        "account": bool(data.get("account")), "valuation_time": data["market"]["valuation_time"],
        **data.get("fetched", {}), "written": t.isoformat().replace("+00:00", "Z"),
        "url": _public_url(base_url), "calls": dict(calls or {}), "marginopt": __version__,
        "files": sorted(FILES[k] for k in files) + [FILES["manifest"]],
    }
    try:
        tmp.mkdir()
        for key, obj in files.items():
            _write_json(tmp / FILES[key], obj)
        _write_json(tmp / FILES["manifest"], manifest)
        os.replace(tmp, out / name)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write the snapshot ({exc.strerror or type(exc).__name__}); "
                          "nothing was left behind", source=str(out), field="out") from None
    except ValueError:  # json: NaN or infinity (a reply parsed leniently)
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError("the fetched data holds a number JSON cannot carry (NaN or infinity); "
                          "nothing was written", source=str(out), field="out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / name


def fetch(out: str | Path, currencies: Iterable[str] = ("BTC", "ETH"), *, venue: str = "deribit",
          testnet: bool = False, url: str | None = None, credentials: Credentials | None = None,
          credentials_file: str | Path | None = None, account: bool = True,
          retry: RetryPolicy | None = None, client: DeribitClient | DeriveClient | None = None
          ) -> Snapshot:
    """Fetch the market (and, with ``account``, the account) of ``currencies`` from ``venue``
    into a new snapshot folder in ``out``; returns it.

    Credentials: ``credentials``, else ``credentials_file``, else the environment
    (``DERIBIT_CLIENT_ID``, ``DERIBIT_CLIENT_SECRET``; Derive: ``DERIVE_WALLET``,
    ``DERIVE_SESSION_KEY``, ``DERIVE_SUBACCOUNT_ID``). ``url`` replaces the exchange's address
    (a local server); ``testnet`` uses the exchange's test environment."""
    if venue not in VENUES:
        raise InputError(f"venue {venue!r} cannot be fetched (known: {', '.join(VENUES)})",
                         field="venue", value=venue)
    ccys = [c.strip().upper() for c in currencies if c and c.strip()]
    if not ccys:
        raise InputError("no currency given (e.g. BTC,ETH)", field="currency")
    if client is None:
        if account and credentials is None:
            credentials = load_credentials(venue, credentials_file)
        if venue == "derive":
            from ._derive import DeriveClient
            client = DeriveClient(credentials, testnet=testnet, url=url, retry=retry)
        else:
            from ._deribit import DeribitClient
            client = DeribitClient(credentials, testnet=testnet, url=url, retry=retry)
    data = fetch_data(client, ccys, account=account)
    path = write_snapshot(data, out, venue=client.venue, currencies=ccys, testnet=client.testnet,
                          calls=client.calls, base_url=client.base_url)
    return load_snapshot(path)
