"""Derive over ccxt's raw endpoints: JSON-RPC over HTTP POST, the exchange's replies unchanged,
with time-outs, retries with back-off, Retry-After, and a typed error for every failure.

ccxt's ``derive`` class signs private calls as Derive asks: the session key signs the request's
millisecond timestamp (an Ethereum personal-message signature), sent with the owner wallet in the
``X-DeriveWallet`` / ``X-DeriveTimestamp`` / ``X-DeriveSignature`` headers (``X-Lyra*`` before
Derive's v3 API). Credentials: the owner wallet address (``DERIVE_WALLET``), the session key's
private key (``DERIVE_SESSION_KEY``) and the subaccount id (``DERIVE_SUBACCOUNT_ID``), or a file
readable only by its owner (``wallet``, ``session_key``, ``subaccount_id``).

Endpoints a fetch calls: ``public/get_instruments`` (options and perps of each currency),
``public/get_tickers`` (one call per option expiry, one for the perps),
``public/get_latest_signed_feeds`` (the oracles PM2 margins with), ``private/get_subaccount``
(its margin figures, collaterals and open orders) and ``private/get_positions``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from ..errors import (ExchangeAuthError, ExchangeError, ExchangeNetworkError, ExchangeRateLimited,
                      ExchangeRejected, ExchangeServerError, ExchangeTimeout, InputError,
                      MalformedReply, PartialData)
from ._credentials import Credentials
from ._retry import RetryPolicy

log = logging.getLogger("marginopt.live")

#: the exchange's JSON-RPC roots (``/public/...``, ``/private/...`` under them), or --url
DERIVE_URLS = {"live": "https://api.derive.xyz/v3", "testnet": "https://testnet.api.derive.xyz/v3"}
#: -32000 rate limit exceeded (sent with HTTP 429)
RATE_LIMIT_CODES = frozenset({-32000})
#: Derive's codes for a refused signature, wallet or session key: 14000 account not found,
#: 14014 signature invalid, 14020/14021 X-DeriveWallet wrong or missing, 14023 signer not owner
#: or session key, 14026 session key not found, 14029 IP not whitelisted, 14030 session key
#: expired, 14031 unauthorized key scope
AUTH_CODES = frozenset({14000, 14014, 14020, 14021, 14023, 14026, 14029, 14030, 14031})
#: Derive's instrument types fetched
KINDS = ("option", "perp")


def _ccxt_derive(config: dict[str, Any]) -> Any:
    """ccxt's Derive with the last reply's status, headers and JSON kept for classification
    (ccxt is imported here, on first use: reading and reconciling snapshots does not need it)."""
    import ccxt

    from ._deribit import _WIRE_LOG

    class _CcxtDerive(ccxt.derive):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.logger = _WIRE_LOG
            self.reply_status: int | None = None
            self.reply_headers: Mapping[str, str] = {}
            self.reply_json: Any = None

        def handle_errors(self, httpCode, reason, url, method, headers, body, response, requestHeaders, requestBody):  # noqa: N803
            self.reply_status = httpCode
            self.reply_headers = headers or {}
            self.reply_json = response
            return super().handle_errors(httpCode, reason, url, method, headers, body, response,
                                         requestHeaders, requestBody)

    return _CcxtDerive(config)


class DeriveClient:
    """Derive's public and private JSON-RPC endpoints, each reply's ``result`` as sent.

    ``credentials``: ``client_id`` is the owner wallet, ``client_secret`` the session key's
    private key, ``account`` the subaccount id (needed for private endpoints only)."""

    venue = "derive"

    def __init__(self, credentials: Credentials | None = None, *, testnet: bool = False,
                 url: str | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.testnet = testnet
        self.base_url = (url or DERIVE_URLS["testnet" if testnet else "live"]).rstrip("/")
        config: dict[str, Any] = {"enableRateLimit": True,
                                  "timeout": int(1000 * self.retry.timeout_s)}
        if credentials is not None:
            config.update(walletAddress=credentials.client_id, privateKey=credentials.client_secret)
        self._ex = _ccxt_derive(config)
        self._ex.urls["api"] = {"public": self.base_url + "/public",
                                "private": self.base_url + "/private"}
        self._sleep = sleep
        self.calls: Counter[str] = Counter()
        #: the exchange's clock (ms) of the last reply that gave it (tickers' ``timestamp``/``t``)
        self.server_time_ms: int | None = None

    @property
    def subaccount_id(self) -> int:
        if self.credentials is None or not self.credentials.account:
            raise ExchangeAuthError("a private endpoint needs the subaccount id (DERIVE_SUBACCOUNT_ID, "
                                    "or subaccount_id in --credentials FILE)", venue=self.venue,
                                    endpoint="private")
        try:
            return int(self.credentials.account)
        except ValueError:
            raise InputError("the subaccount id is not an integer", source=self.credentials.source,
                             field="subaccount_id") from None

    # ------------------------------------------------------------------ public surface
    def public(self, endpoint: str, **params: Any) -> Any:
        return self._call("public", endpoint, params)

    def private(self, endpoint: str, **params: Any) -> Any:
        if self.credentials is None:
            raise ExchangeAuthError("a private endpoint needs credentials (DERIVE_WALLET, "
                                    "DERIVE_SESSION_KEY and DERIVE_SUBACCOUNT_ID, or --credentials "
                                    "FILE)", venue=self.venue, endpoint=f"private/{endpoint}")
        return self._call("private", endpoint, {"subaccount_id": self.subaccount_id, **params})

    # ------------------------------------------------------------------ the call
    def _scrub(self, text: str) -> str:
        return self.credentials.scrub(text) if self.credentials is not None else text

    def _error_detail(self) -> tuple[Any, str]:
        body = self._ex.reply_json
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return None, ""
        msg = str(err.get("message", ""))
        if err.get("data"):
            msg += f" ({err['data']})"
        return err.get("code"), self._scrub(msg)

    def _call(self, api: str, endpoint: str, params: dict[str, Any]) -> Any:
        import ccxt
        name = f"{api}/{endpoint}"
        attempt = 0
        while True:
            attempt += 1
            self.calls[name] += 1
            self._ex.reply_status, self._ex.reply_headers, self._ex.reply_json = None, {}, None
            wait: float | None = None
            try:
                reply = self._ex.request(endpoint, [api], "POST", dict(params))
            except ccxt.BaseError as exc:
                from ._deribit import _retry_after
                status = self._ex.reply_status
                code, detail = self._error_detail()
                code_num = int(code) if isinstance(code, (int, str)) and str(code).lstrip("-").isdigit() else None
                failure: ExchangeError
                if isinstance(exc, ccxt.RequestTimeout):
                    failure = ExchangeTimeout(f"no reply within {self.retry.timeout_s:g} s",
                                              venue=self.venue, endpoint=name, attempts=attempt)
                elif status == 429 or code_num in RATE_LIMIT_CODES:
                    asked = _retry_after(self._ex.reply_headers)
                    failure = ExchangeRateLimited(
                        "too many requests (HTTP 429" + (f", Retry-After {asked:g} s" if asked is not None else "") + ")",
                        retry_after_s=asked, venue=self.venue, endpoint=name, attempts=attempt)
                    if asked is not None and asked > self.retry.max_retry_after_s:
                        raise failure from None
                    wait = asked
                elif status is not None and status >= 500:
                    failure = ExchangeServerError(f"server error HTTP {status}" + (f": {detail}" if detail else ""),
                                                  status=status, venue=self.venue, endpoint=name,
                                                  attempts=attempt)
                elif code_num in AUTH_CODES or status in (401, 403) or \
                        (code is None and isinstance(exc, ccxt.AuthenticationError)):
                    # a signature is made afresh for every request: retrying cannot fix a refusal
                    raise ExchangeAuthError("the exchange refused the wallet, session key or "
                                            "subaccount" + (f": {detail}" if detail else ""),
                                            venue=self.venue, endpoint=name) from None
                elif isinstance(exc, ccxt.NetworkError) and status is None:
                    failure = ExchangeNetworkError(f"connection failed ({type(exc).__name__})",
                                                   venue=self.venue, endpoint=name, attempts=attempt)
                elif code is not None:
                    raise ExchangeRejected(f"the exchange answered error {code}: {detail}", code=code,
                                           venue=self.venue, endpoint=name) from None
                elif status is not None and self._ex.reply_json is None and 200 <= status < 300:
                    raise MalformedReply("the reply is not JSON", venue=self.venue,
                                         endpoint=name) from None
                else:
                    raise ExchangeRejected(f"HTTP {status if status is not None else '?'} "
                                           f"({type(exc).__name__})", code=status, venue=self.venue,
                                           endpoint=name) from None
                if attempt >= self.retry.attempts:
                    raise failure from None
                delay = wait if wait is not None else self.retry.backoff(attempt)
                log.warning("%s %s: %s (attempt %d of %d); retrying in %.2f s", self.venue, name,
                            self._scrub(failure.message), attempt, self.retry.attempts, delay)
                self._sleep(delay)
                continue
            return self._result(name, reply)

    def _result(self, name: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise MalformedReply("the reply is not a JSON object" if isinstance(reply, (list, int, float))
                                 else "the reply is not JSON", venue=self.venue, endpoint=name)
        if "result" not in reply:
            raise MalformedReply("the reply has no 'result'", venue=self.venue, endpoint=name)
        return reply["result"]

    # ------------------------------------------------------------------ endpoints used by fetch
    def instruments(self, currency: str, kind: str) -> list[dict[str, Any]]:
        name = "public/get_instruments"
        rows = self.public("get_instruments", currency=currency, instrument_type=kind, expired=False)
        if not isinstance(rows, list):
            raise MalformedReply(f"expected a list of instruments, got {type(rows).__name__}",
                                 venue=self.venue, endpoint=name)
        for i, r in enumerate(rows, start=1):
            if not isinstance(r, dict) or not isinstance(r.get("instrument_name"), str):
                raise MalformedReply(f"row {i} has no instrument_name", venue=self.venue, endpoint=name)
            if kind == "option":
                exp = (r.get("option_details") or {}).get("expiry") if isinstance(r.get("option_details"), dict) else None
                if isinstance(exp, bool) or not isinstance(exp, (int, float)):
                    raise MalformedReply(f"{r['instrument_name']}: no option_details.expiry",
                                         venue=self.venue, endpoint=name)
        return rows

    def tickers(self, currency: str, kind: str, expiry: int | None = None) -> dict[str, dict[str, Any]]:
        """``public/get_tickers`` as ``{instrument_name: ticker}`` (options: one expiry per call)."""
        name = "public/get_tickers"
        params: dict[str, Any] = {"instrument_type": kind, "currency": currency}
        if expiry is not None:
            params["expiry_date"] = datetime.fromtimestamp(expiry, tz=timezone.utc).strftime("%Y%m%d")
        result = self.public("get_tickers", **params)
        tickers = result.get("tickers") if isinstance(result, dict) else None
        if isinstance(tickers, list):
            tickers = {t.get("instrument_name"): t for t in tickers if isinstance(t, dict)}
        if not isinstance(tickers, dict) or not all(isinstance(k, str) and isinstance(v, dict)
                                                    for k, v in tickers.items()):
            raise MalformedReply("the reply has no 'tickers' object of rows", venue=self.venue,
                                 endpoint=name)
        for t in tickers.values():
            ms = t.get("timestamp", t.get("t"))
            if isinstance(ms, (int, float)) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0:
                self.server_time_ms = int(ms) if self.server_time_ms is None else max(self.server_time_ms, int(ms))
        return tickers

    def feeds(self) -> dict[str, Any]:
        name = "public/get_latest_signed_feeds"
        result = self.public("get_latest_signed_feeds")
        if not isinstance(result, dict) or not isinstance(result.get("spot_data"), dict):
            raise MalformedReply("the reply has no spot_data object", venue=self.venue, endpoint=name)
        return result

    def subaccount(self) -> dict[str, Any]:
        name = "private/get_subaccount"
        result = self.private("get_subaccount")
        if not isinstance(result, dict):
            raise MalformedReply("the subaccount is not an object", venue=self.venue, endpoint=name)
        for fld in ("subaccount_value", "initial_margin", "maintenance_margin"):
            v = result.get(fld)
            try:
                ok = not isinstance(v, bool) and math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise MalformedReply(f"the subaccount has no number in '{fld}' (got {v!r})",
                                     venue=self.venue, endpoint=name)
        return result

    def positions(self) -> list[dict[str, Any]]:
        name = "private/get_positions"
        result = self.private("get_positions")
        rows = result.get("positions") if isinstance(result, dict) else result
        if not isinstance(rows, list):
            raise MalformedReply("the reply has no list of positions", venue=self.venue, endpoint=name)
        for i, r in enumerate(rows, start=1):
            if not isinstance(r, dict) or not isinstance(r.get("instrument_name"), str):
                raise MalformedReply(f"row {i} has no instrument_name", venue=self.venue, endpoint=name)
        return rows


# ---------------------------------------------------------------------------- fetching
def _as_reply(exc: InputError, client: DeriveClient, endpoint: str) -> MalformedReply:
    return MalformedReply(exc.args[0] if exc.args else str(exc), venue=client.venue, endpoint=endpoint)


def _redact(obj: Any, secrets: Sequence[str]) -> Any:
    """``obj`` with every string holding a secret (any case: addresses come checksummed or not)
    replaced by ``***``."""
    if isinstance(obj, dict):
        return {k: _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str) and any(s.lower() in obj.lower() for s in secrets):
        return "***"
    return obj


def fetch_derive_data(client: DeriveClient, currencies: Sequence[str], *, account: bool = True
                      ) -> dict[str, Any]:
    """Everything a Derive snapshot holds, in memory (``_snapshot.write_snapshot`` writes it):
    marginopt's market rows (``native_name`` kept), the positions in marginopt's names, the
    subaccount reply as the account summary, and Derive's raw replies under ``derive``."""
    from ..derive._api import market_rows, position_rows, whole_second
    started = datetime.now(timezone.utc)
    tickers: dict[str, dict[str, Any]] = {}
    listed: dict[str, str] = {}
    for ccy in currencies:
        for kind in KINDS:
            insts = client.instruments(ccy, kind)
            if kind == "option":
                expiries = sorted({int(r["option_details"]["expiry"]) for r in insts})
                for exp in expiries:
                    tickers.update(client.tickers(ccy, kind, exp))
            elif insts:
                tickers.update(client.tickers(ccy, kind))
            for r in insts:
                listed[r["instrument_name"]] = ccy
        if not any(c == ccy for c in listed.values()):
            raise PartialData(f"no instruments listed for {ccy}", venue=client.venue,
                              endpoint="public/get_instruments")
    missing = sorted(n for n in listed if n not in tickers)
    if missing:
        raise PartialData(f"no ticker for {missing[0]} ({len(missing)} listed instruments without "
                          "one)", venue=client.venue, endpoint="public/get_tickers")
    feeds = client.feeds()
    try:
        rows, _ = market_rows({n: t for n, t in tickers.items() if n in listed})
    except InputError as exc:
        raise _as_reply(exc, client, "public/get_tickers") from None
    spots = feeds["spot_data"]
    index_prices: dict[str, float] = {}
    for ccy in currencies:
        spot = spots.get(ccy)
        try:
            px = float(spot["price"]) if isinstance(spot, dict) else math.nan
        except (TypeError, ValueError, KeyError):
            px = math.nan
        if not (math.isfinite(px) and px > 0):
            raise PartialData(f"no spot price for {ccy} in spot_data", venue=client.venue,
                              endpoint="public/get_latest_signed_feeds")
        index_prices[ccy] = px  # PM2 values spot at the oracle's spot feed
    when = (datetime.fromtimestamp(client.server_time_ms / 1000.0, tz=timezone.utc)
            if client.server_time_ms else started)
    when = whole_second(when)
    data: dict[str, Any] = {
        "market": {"valuation_time": when.isoformat().replace("+00:00", "Z"),
                   "index_prices": index_prices, "instruments": rows},
        "account": account,
        "derive": {"feeds": feeds},
    }
    if account:
        sub = client.subaccount()
        positions = client.positions()
        try:
            held = position_rows(positions)
        except InputError as exc:
            raise _as_reply(exc, client, "private/get_positions") from None
        for p in held:
            if p["native_name"] not in listed:
                raise PartialData(f"the subaccount holds {p['native_name']}, which the instrument "
                                  f"lists do not hold (currencies fetched: {', '.join(currencies)})",
                                  venue=client.venue, endpoint="private/get_positions")
        ccy = str(sub.get("currency") or "").upper()
        orders = sub.get("open_orders") if isinstance(sub.get("open_orders"), list) else []
        # the owner wallet is a credential here: replies that echo it (owner_address) keep "***"
        hide = client.credentials.secrets() if client.credentials is not None else ()
        data["positions"] = {"positions": held}
        data["open_orders"] = {"orders": _redact(orders, hide)}
        data["account_summary"] = {"summaries": {ccy or str(sub.get("subaccount_id")): _redact(sub, hide)}}
        data["derive"]["positions"] = _redact(positions, hide)
    data["fetched"] = {"started": started.isoformat().replace("+00:00", "Z"),
                       "finished": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    return data


# ---------------------------------------------------------------------------- reconciling
#: what a Derive reconciliation does not model, with why (printed on every one)
NOT_MODELLED = (
    "open orders: Derive reports their margin as open_orders_margin (shown); marginopt margins "
    "the positions and collaterals only",
    "collateral haircuts and risk-cancelling flags: the risk manager's settings, not in the "
    "exchange's replies; marginopt uses the collateral_params given (none: cash only)",
    "the forward in the settlement window: Derive's forward feed blends in the settlement "
    "average in the last hour before expiry; marginopt takes spot + fwd_diff",
)


def reconcile_derive(snap: Any, *, model: str | None = None,
                     collateral_params: Mapping[str, Mapping[str, Any]] | None = None,
                     parameters: Mapping[str, Any] | None = None) -> Any:
    """marginopt's PM2 requirement of a Derive snapshot's subaccount against Derive's: Derive
    publishes ``initial_margin`` as the surplus ``subaccount_value - requirement``, so both
    are compared as requirements and as Derive's surplus, in USD (USDC at 1) and percent.

    ``model``: a model by name instead of ``derive-pm2`` with the account's collaterals and the
    oracles' feeds (``marginopt.derive.derive_model``); ``collateral_params`` and ``parameters``
    (PM2 rule parameters over the shipped set) are the risk manager's settings, in no reply."""
    from ..derive._api import book_for_margin, derive_model, derive_subaccount
    from ..errors import SnapshotError
    from ..margins import load_model
    from ..margins import margin as compute_margin
    from ._reconcile import ReconLine, Reconciliation

    summaries = snap.account_summaries
    if len(summaries) != 1:
        raise SnapshotError(f"a Derive snapshot holds one subaccount, this one {len(summaries)}",
                            source=str(snap.path), field="summaries")
    sub = next(iter(summaries.values()))
    acct = derive_subaccount(sub, snap.derive.get("positions"))
    if acct.margin_type.upper() != "PM2":
        raise SnapshotError(f"Derive margin_type {acct.margin_type!r} is not modelled (marginopt "
                            "models PM2)", source=str(snap.path), field="margin_type")
    market = snap.market
    book = book_for_margin(snap.portfolio(), acct.currency)
    if model is None:
        feeds = snap.derive.get("feeds")
        if not isinstance(feeds, dict):
            raise SnapshotError("the snapshot has no oracle feeds (derive.json)", source=str(snap.path),
                                field="feeds")
        m = derive_model(acct, feeds, valuation_time=market.valuation_time,
                         collateral_params=collateral_params, parameters=parameters)
        name = "derive-pm2 (the subaccount's collaterals, the oracles' feeds)"
    else:
        m, name = load_model(model), model
    result = compute_margin(book, market, m)
    (pool,) = m.bind(book.instruments, market).pools
    value = float(pool.initial[0].details(book.quantities)["account_value"])
    src = "private/get_subaccount"
    im_req, mm_req = result.initial_margin_usd, result.maintenance_margin_usd
    lines = (
        ReconLine("USD", "subaccount_value", src, value, acct.subaccount_value, 1.0),
        ReconLine("USD", "initial requirement", src, im_req,
                  acct.initial_requirement, 1.0),
        ReconLine("USD", "maintenance requirement", src, mm_req,
                  acct.maintenance_requirement, 1.0),
        ReconLine("USD", "initial_margin (surplus)", src, value - im_req,
                  acct.initial_margin, 1.0),
        ReconLine("USD", "maintenance_margin (surplus)", src, value - mm_req,
                  acct.maintenance_margin, 1.0),
        ReconLine("USD", "open_orders_margin", src, None, acct.open_orders_margin, 1.0),
    )
    notes = ["Derive publishes initial_margin and maintenance_margin as the surplus "
             "subaccount_value - requirement (trades are refused below 0); the margins above are "
             "the requirements"]
    if snap.open_orders:
        notes.append(f"{len(snap.open_orders)} open orders in the snapshot (their margin is not "
                     "modelled)")
    return Reconciliation(
        snapshot=snap.name, venue=snap.venue, model=name, margin_model=acct.margin_type,
        cross_collateral=False, lines=lines, initial_margin_usd=im_req,
        exchange_initial_margin_usd=acct.initial_requirement, maintenance_margin_usd=mm_req,
        exchange_maintenance_margin_usd=acct.maintenance_requirement,
        not_modelled=NOT_MODELLED, notes=tuple(notes), margin=result)
