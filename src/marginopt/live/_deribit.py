"""Deribit over ccxt's raw endpoints: the exchange's JSON unchanged, with time-outs, retries with
back-off, Retry-After, one fresh login on an expired token, and a typed error for every failure.

ccxt's implicit methods (``publicGetGetBookSummaryByCurrency`` ...) build each request and parse
the reply; this module adds what a desk's unattended job needs around them. Private calls use
Deribit's OAuth flow over HTTP (``public/auth`` with ``grant_type=client_credentials``, then the
bearer token), as Deribit documents for HTTP clients. ccxt's own debug logging (it prints URLs
and headers, so credentials) is switched off for the exchange object.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

import ccxt

from ..errors import (ExchangeAuthError, ExchangeError, ExchangeNetworkError, ExchangeRateLimited,
                      ExchangeRejected, ExchangeServerError, ExchangeTimeout, MalformedReply)
from ._credentials import Credentials
from ._retry import RetryPolicy

log = logging.getLogger("marginopt.live")

#: the exchange's REST roots (ccxt's ``urls['api']['rest']`` is pointed at one of them, or --url)
DERIBIT_URLS = {"live": "https://www.deribit.com", "testnet": "https://test.deribit.com"}
#: Deribit error codes that mean the token or the key pair was refused
#: (10000 authorization_required, 13004 invalid_credentials, 13009 unauthorized: wrong or
#: expired token, 13001 account_not_activated, 13007 user_not_found)
AUTH_CODES = frozenset({10000, 13001, 13004, 13007, 13009})
#: 10028 too_many_requests: Deribit's own rate-limit code (sent with HTTP 429)
RATE_LIMIT_CODES = frozenset({10028})
#: ccxt's wire logger: records carry URLs and headers, so credentials; never emitted
_WIRE_LOG = logging.getLogger("marginopt.live.wire")
_WIRE_LOG.disabled = True
_WIRE_LOG.propagate = False
#: a query parameter that carries a credential (``public/auth`` takes them in its query)
_SECRET_PARAM = re.compile(r"((?:client_id|client_secret|access_token|refresh_token)=)[^&\s\"']+")


class _RedactCredentials(logging.Filter):
    """urllib3 logs each request line, query string included, at DEBUG: redact credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "=" in text:
            clean = _SECRET_PARAM.sub(r"\1***", text)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactCredentials())


class _CcxtDeribit(ccxt.deribit):
    """ccxt's Deribit with bearer-token private calls and the last reply's status, headers and
    JSON kept for classification."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.logger = _WIRE_LOG
        self.access_token: str | None = None
        self.reply_status: int | None = None
        self.reply_headers: Mapping[str, str] = {}
        self.reply_json: Any = None

    def sign(self, path, api=["public"], method="GET", params={}):  # noqa: B006 - ccxt's signature
        if api[0] != "private" or self.access_token is None:
            return super().sign(path, api, method, params)
        request = f"/api/{self.version}/private/{path}"
        if params:
            request += "?" + self.urlencode(params)
        return {"url": self.urls["api"]["rest"] + request, "method": method, "body": None,
                "headers": {"Authorization": "Bearer " + self.access_token}}

    def handle_errors(self, httpCode, reason, url, method, headers, body, response, requestHeaders, requestBody):  # noqa: N803
        self.reply_status = httpCode
        self.reply_headers = headers or {}
        self.reply_json = response
        return super().handle_errors(httpCode, reason, url, method, headers, body, response,
                                     requestHeaders, requestBody)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by a Retry-After header (seconds, or an HTTP date), if any."""
    raw = None
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            raw = v
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class DeribitClient:
    """Deribit's public and private JSON-RPC-over-HTTP endpoints, each reply's ``result``
    returned as the exchange sent it.

    ``url`` replaces the exchange's root (a local test server); ``testnet`` picks
    test.deribit.com. ``credentials`` are needed for private endpoints only."""

    venue = "deribit"

    def __init__(self, credentials: Credentials | None = None, *, testnet: bool = False,
                 url: str | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.testnet = testnet
        self.base_url = (url or DERIBIT_URLS["testnet" if testnet else "live"]).rstrip("/")
        self._ex = _CcxtDeribit({"enableRateLimit": True, "timeout": int(1000 * self.retry.timeout_s)})
        self._ex.urls["api"] = {"rest": self.base_url}
        self._sleep = sleep
        self._token_expires = 0.0
        #: attempts per endpoint (requests sent), for the manifest and the tests
        self.calls: Counter[str] = Counter()
        #: the exchange's clock (microseconds, ``usOut``) of the last reply that gave it
        self.server_time_us: int | None = None
        self.exchange_says_testnet: bool | None = None

    # ------------------------------------------------------------------ public surface
    def public(self, endpoint: str, **params: Any) -> Any:
        return self._call("public", endpoint, params)

    def private(self, endpoint: str, **params: Any) -> Any:
        if self.credentials is None:
            raise ExchangeAuthError("a private endpoint needs credentials (DERIBIT_CLIENT_ID and "
                                    "DERIBIT_CLIENT_SECRET, or --credentials FILE)",
                                    venue=self.venue, endpoint=f"private/{endpoint}")
        if self._ex.access_token is None or time.monotonic() >= self._token_expires:
            self.login()
        return self._call("private", endpoint, params)

    def login(self) -> None:
        """A fresh access token by ``public/auth`` (client credentials)."""
        if self.credentials is None:
            raise ExchangeAuthError("logging in needs credentials", venue=self.venue,
                                    endpoint="public/auth")
        self._ex.access_token = None
        result = self._call("public", "auth", {"grant_type": "client_credentials",
                                                "client_id": self.credentials.client_id,
                                                "client_secret": self.credentials.client_secret})
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedReply("the login reply has no access_token", venue=self.venue,
                                 endpoint="public/auth")
        expires = result.get("expires_in")
        life = float(expires) if isinstance(expires, (int, float)) and expires > 0 else 900.0
        self._ex.access_token = token
        # renew before the exchange would refuse it
        self._token_expires = time.monotonic() + 0.9 * life

    # ------------------------------------------------------------------ the call
    def _scrub(self, text: str) -> str:
        if self.credentials is None:
            return text.replace(self._ex.access_token, "***") if self._ex.access_token else text
        return self.credentials.scrub(text, self._ex.access_token)

    def _error_detail(self) -> tuple[Any, str]:
        """The exchange's own error code and message, from the last reply's JSON-RPC error."""
        body = self._ex.reply_json
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return None, ""
        code = err.get("code")
        msg = str(err.get("message", ""))
        data = err.get("data")
        if isinstance(data, dict) and data.get("reason"):
            msg += f" ({data['reason']})"
        return code, self._scrub(msg)

    def _call(self, api: str, endpoint: str, params: dict[str, Any]) -> Any:
        name = f"{api}/{endpoint}"
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            self.calls[name] += 1
            self._ex.reply_status, self._ex.reply_headers, self._ex.reply_json = None, {}, None
            wait: float | None = None
            try:
                reply = self._ex.request(endpoint, [api], "GET", dict(params))
            except ccxt.BaseError as exc:
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
                elif code_num in AUTH_CODES or (code is None and isinstance(exc, ccxt.AuthenticationError)):
                    if api == "private" and not relogged:
                        # an expired or revoked token: log in once more and repeat the call
                        relogged = True
                        log.info("%s: the exchange refused the session token; logging in again", name)
                        self.login()
                        attempt -= 1
                        continue
                    what = "the exchange refused the credentials" if endpoint == "auth" else \
                        "the exchange refused the session after a fresh login"
                    raise ExchangeAuthError(what + (f": {detail}" if detail else ""),
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
        us = reply.get("usOut", reply.get("usIn"))
        if isinstance(us, (int, float)) and math.isfinite(us) and us > 0:
            self.server_time_us = int(us)
        if isinstance(reply.get("testnet"), bool):
            self.exchange_says_testnet = reply["testnet"]
        return reply["result"]

    # ------------------------------------------------------------------ endpoints used by fetch
    def book_summary(self, currency: str, kind: str) -> list[dict[str, Any]]:
        """``public/get_book_summary_by_currency`` rows (every listed instrument of ``kind``)."""
        return self._rows(self.public("get_book_summary_by_currency", currency=currency, kind=kind),
                          "public/get_book_summary_by_currency")

    def index_price(self, index_name: str) -> float:
        name = "public/get_index_price"
        result = self.public("get_index_price", index_name=index_name)
        px = result.get("index_price") if isinstance(result, dict) else None
        if isinstance(px, bool) or not isinstance(px, (int, float)) or not math.isfinite(px) or px <= 0:
            raise MalformedReply(f"no positive index_price for {index_name} (got {px!r})",
                                 venue=self.venue, endpoint=name)
        return float(px)

    def positions(self, currency: str) -> list[dict[str, Any]]:
        return self._rows(self.private("get_positions", currency=currency), "private/get_positions")

    def open_orders(self, currency: str) -> list[dict[str, Any]]:
        return self._rows(self.private("get_open_orders_by_currency", currency=currency),
                          "private/get_open_orders_by_currency")

    def account_summary(self, currency: str) -> dict[str, Any]:
        name = "private/get_account_summary"
        result = self.private("get_account_summary", currency=currency, extended="true")
        if not isinstance(result, dict):
            raise MalformedReply("the account summary is not an object", venue=self.venue, endpoint=name)
        for fld in ("equity", "initial_margin", "maintenance_margin"):
            v = result.get(fld)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MalformedReply(f"the account summary for {currency} has no number in "
                                     f"'{fld}' (got {v!r})", venue=self.venue, endpoint=name)
        return result

    def pme_simulate(self, currency: str) -> dict[str, Any]:
        """``private/pme/simulate`` for the account's current positions (ccxt lists no implicit
        method for it, so the raw request goes through ccxt's ``request``)."""
        result = self.private("pme/simulate", currency=currency)
        if not isinstance(result, dict):
            raise MalformedReply("the simulation is not an object", venue=self.venue,
                                 endpoint="private/pme/simulate")
        return result

    def _rows(self, result: Any, name: str) -> list[dict[str, Any]]:
        if not isinstance(result, list):
            raise MalformedReply(f"expected a list of rows, got {type(result).__name__}",
                                 venue=self.venue, endpoint=name)
        for i, row in enumerate(result, start=1):
            if not isinstance(row, dict) or not isinstance(row.get("instrument_name"), str):
                raise MalformedReply(f"row {i} has no instrument_name", venue=self.venue, endpoint=name)
        return result
