"""A Deribit-shaped exchange for the live tests: JSON-RPC over HTTP on 127.0.0.1, built from the
package's sample market and book, scripted to misbehave (429 with Retry-After, 500, slow replies,
malformed JSON, an expired token, a market that moves between calls).

Replies follow Deribit's documented shapes: ``{"jsonrpc": "2.0", "result": ..., "usIn": ...,
"usOut": ..., "usDiff": ..., "testnet": true}``, errors ``{"jsonrpc": "2.0", "error": {"code",
"message", "data"}}`` with HTTP 400 (429 for too_many_requests).
"""

from __future__ import annotations

import csv
import json
import threading
from collections import defaultdict, deque
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from werkzeug import Request, Response


#: every credential the suite uses carries this marker: no file or log may contain it
MARK = "LEAKCHECK"
CLIENT_ID = f"cid-{MARK}-3f9a1c"
CLIENT_SECRET = f"sec-{MARK}-7b2e4d"
DATA = Path(str(resources.files("marginopt") / "data"))


def _sample_market() -> dict[str, Any]:
    return json.loads((DATA / "sample_market.json").read_text())


def _sample_book() -> dict[str, float]:
    with open(DATA / "sample_portfolio.csv") as fh:
        return {r["instrument"]: float(r["quantity"]) for r in csv.DictReader(fh)}


def _currency_of(name: str) -> str:
    head = name.split("-")[0]
    return head.split("_")[1] if "_" in head else head


def _kind_of(name: str) -> str:
    return "option" if name.endswith(("-C", "-P")) else "future"


class FakeDeribit:
    """State and scripted faults of the fake exchange; ``handle`` is the WSGI handler."""

    def __init__(self, *, margin_model: str = "segregated_pm", book: dict[str, float] | None = None,
                 market: dict[str, Any] | None = None, moving: bool = False,
                 exchange_im: dict[str, dict[str, float]] | None = None) -> None:
        self.market = market or _sample_market()
        self.book = dict(_sample_book() if book is None else book)
        self.margin_model = margin_model
        self.moving = moving
        self.moves = 0
        self.clock = datetime.fromisoformat(self.market["valuation_time"].replace("Z", "+00:00"))
        self.tokens: set[str] = set()
        self.n_tokens = 0
        self.faults: dict[str, deque] = defaultdict(deque)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.entered: dict[str, threading.Event] = defaultdict(threading.Event)
        self.release = threading.Event()
        #: per currency: the exchange's own figures the account summary and pme/simulate report
        self.exchange_im = exchange_im or {}
        #: a cross-collateral account's totals in USD (initial, maintenance)
        self.total_usd = (0.0, 0.0)
        #: answer pme/simulate with this JSON-RPC error (code, message) instead
        self.refuse_pme: tuple[int, str] | None = None

    # ------------------------------------------------------------------ scripting
    def script(self, endpoint: str, *faults: Any) -> None:
        """Faults for the next calls of ``endpoint`` (``public/get_index_price``), in order:
        ``("status", 429, retry_after)``, ``("status", 500)``, ``("slow", seconds)``,
        ``("malformed",)``, ``("expired",)``, ``("no_result",)``, ``("hold",)`` (wait until
        ``release`` is set), ``("ok",)``."""
        self.faults[endpoint].extend(faults)

    def calls(self, endpoint: str) -> int:
        return sum(1 for p, _ in self.requests if p == endpoint)

    def move(self, factor: float) -> None:
        """Move the market: index, forwards and futures' marks by ``factor``, vols by +1 point
        per 1% of move."""
        for u in self.market["index_prices"]:
            self.market["index_prices"][u] *= factor
        for r in self.market["instruments"]:
            for k in ("underlying_price",):
                if r.get(k):
                    r[k] *= factor
            if _kind_of(r["instrument_name"]) == "future":
                for k in ("mark_price", "bid_price", "ask_price"):
                    if r.get(k):
                        r[k] *= factor
            elif r.get("mark_iv"):
                r["mark_iv"] += 100.0 * (factor - 1.0)

    # ------------------------------------------------------------------ replies
    def _us(self) -> int:
        return int(self.clock.timestamp() * 1e6)

    def _ok(self, result: Any) -> Response:
        us = self._us()
        body = {"jsonrpc": "2.0", "result": result, "usIn": us, "usOut": us + 150, "usDiff": 150,
                "testnet": True}
        return Response(json.dumps(body), status=200, content_type="application/json")

    def _error(self, code: int, message: str, status: int = 400, reason: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
        err: dict[str, Any] = {"code": code, "message": message}
        if reason:
            err["data"] = {"reason": reason}
        body = {"jsonrpc": "2.0", "error": err, "usIn": self._us(), "usOut": self._us(),
                "usDiff": 0, "testnet": True}
        return Response(json.dumps(body), status=status, content_type="application/json",
                        headers=headers or {})

    def handle(self, request: Request) -> Response:
        endpoint = request.path.removeprefix("/api/v2/")
        args = dict(request.args)
        with self.lock:
            self.requests.append((endpoint, args))
            fault = self.faults[endpoint].popleft() if self.faults[endpoint] else ("ok",)
        self.entered[endpoint].set()
        kind = fault[0]
        if kind == "status":
            status = fault[1]
            if status == 429:
                headers = {"Retry-After": str(fault[2])} if len(fault) > 2 else {}
                return self._error(10028, "too_many_requests", status=429, headers=headers)
            return Response("<html><body>502 Bad Gateway</body></html>" if status == 502 else
                            "Internal Server Error", status=status, content_type="text/html")
        if kind == "slow":
            self.release.wait(fault[1])
        if kind == "hold":
            self.release.wait(30)
        if kind == "malformed":
            return Response('{"jsonrpc": "2.0", "result": [{"instrument_name": "BTC-PERP',
                            status=200, content_type="application/json")
        if kind == "no_result":
            return Response(json.dumps({"jsonrpc": "2.0", "usIn": 1, "usOut": 2}), status=200,
                            content_type="application/json")
        if kind == "expired":
            self.tokens.clear()  # the exchange forgets every session
        return self._route(endpoint, args, request)

    def _route(self, endpoint: str, args: dict[str, str], request: Request) -> Response:
        if endpoint == "public/auth":
            if args.get("grant_type") != "client_credentials":
                return self._error(-32602, "Invalid params", reason="grant_type")
            if args.get("client_id") != CLIENT_ID or args.get("client_secret") != CLIENT_SECRET:
                return self._error(13004, "invalid_credentials")
            self.n_tokens += 1
            token = f"tok-{MARK}-{self.n_tokens:04d}"
            self.tokens.add(token)
            return self._ok({"access_token": token, "expires_in": 900, "refresh_token": f"ref-{MARK}",
                             "scope": "account:read trade:read", "token_type": "bearer"})
        if endpoint.startswith("private/"):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return self._error(13009, "unauthorized", reason="invalid_token")
        ccy = args.get("currency", "").upper()
        if endpoint == "public/get_book_summary_by_currency":
            if self.moving and ccy == "BTC" and args.get("kind") == "option":
                self.moves += 1
                if self.moves > 1:
                    self.move(1.01)
            return self._ok(self._book_summary(ccy, args.get("kind")))
        if endpoint == "public/get_index_price":
            u = args.get("index_name", "").split("_")[0].upper()
            if u not in self.market["index_prices"]:
                return self._error(10020, "invalid_index_name")
            px = self.market["index_prices"][u]
            return self._ok({"index_price": px, "estimated_delivery_price": px})
        if endpoint == "private/get_positions":
            return self._ok(self._positions(ccy))
        if endpoint == "private/get_open_orders_by_currency":
            return self._ok(self._orders(ccy))
        if endpoint == "private/get_account_summary":
            return self._ok(self._summary(ccy))
        if endpoint == "private/pme/simulate":
            if self.refuse_pme:
                return self._error(*self.refuse_pme)
            if not self.margin_model.endswith("_pm"):
                return self._error(13021, "not_allowed", reason="portfolio margin not enabled")
            return self._ok(self._pme(ccy))
        return self._error(-32601, "Method not found")

    # ------------------------------------------------------------------ state as Deribit shows it
    def _rows(self, ccy: str) -> list[dict[str, Any]]:
        return [r for r in self.market["instruments"] if _currency_of(r["instrument_name"]) == ccy]

    def _book_summary(self, ccy: str, kind: str | None) -> list[dict[str, Any]]:
        out = []
        ms = int(self.clock.timestamp() * 1000)
        for r in self._rows(ccy):
            name = r["instrument_name"]
            if kind and _kind_of(name) != kind:
                continue
            u = name.split("-")[0].split("_")[0]
            row = {**r, "creation_timestamp": ms, "base_currency": u,
                   "quote_currency": "USD" if "_" not in name.split("-")[0] else "USDC",
                   "estimated_delivery_price": self.market["index_prices"][u],
                   "mid_price": None if r.get("bid_price") is None or r.get("ask_price") is None
                   else 0.5 * (r["bid_price"] + r["ask_price"]), "volume_usd": 0.0,
                   "price_change": None, "last": r.get("mark_price"), "high": None, "low": None}
            if _kind_of(name) == "option":
                row["underlying_index"] = name.split("-")[0] + "-" + name.split("-")[1]
                row["interest_rate"] = 0.0
            elif name.endswith("PERPETUAL"):
                row["current_funding"] = 0.0
                row["funding_8h"] = 0.0
            out.append(row)
        return out

    def _positions(self, ccy: str) -> list[dict[str, Any]]:
        rows = {r["instrument_name"]: r for r in self.market["instruments"]}
        out = []
        for name, q in self.book.items():
            if _currency_of(name) != ccy:
                continue
            r = rows[name]
            kind = _kind_of(name)
            u = name.split("-")[0].split("_")[0]
            pos = {"instrument_name": name, "kind": kind, "direction": "buy" if q > 0 else "sell",
                   "mark_price": r["mark_price"], "index_price": self.market["index_prices"][u],
                   "average_price": r["mark_price"], "delta": q, "floating_profit_loss": 0.0,
                   "realized_profit_loss": 0.0, "total_profit_loss": 0.0,
                   "initial_margin": 0.0, "maintenance_margin": 0.0, "open_orders_margin": 0.0,
                   "settlement_price": r["mark_price"]}
            if kind == "option":
                pos.update(size=q, vega=0.0, gamma=0.0, theta=0.0)
            elif "_" in name.split("-")[0]:  # USDC-settled: sizes in coin
                pos.update(size=q, size_currency=q, leverage=50)
            else:  # coin-settled futures: size in USD contracts, size_currency in coin
                pos.update(size=round(q * r["mark_price"] / 10.0) * 10.0, size_currency=q, leverage=50)
            out.append(pos)
        return out

    def _orders(self, ccy: str) -> list[dict[str, Any]]:
        if ccy != "BTC":
            return []
        return [{"order_id": "11223344", "instrument_name": "BTC-PERPETUAL", "direction": "buy",
                 "amount": 1000.0, "price": 90000.0, "order_type": "limit", "order_state": "open",
                 "filled_amount": 0.0, "post_only": True, "reduce_only": False, "label": "",
                 "creation_timestamp": int(self.clock.timestamp() * 1000), "time_in_force": "good_til_cancelled"}]

    def _figures(self, ccy: str) -> dict[str, float]:
        return self.exchange_im.get(ccy, {"worst_case": 0.0, "roll_shock": 0.0, "open_orders_margin": 0.0,
                                          "mmp_margin": 0.0, "initial_margin": 0.0,
                                          "maintenance_margin": 0.0})

    def _summary(self, ccy: str) -> dict[str, Any]:
        f = self._figures(ccy)
        equity = 10.0 if ccy == "BTC" else 150.0
        return {"currency": ccy, "equity": equity, "balance": equity, "margin_balance": equity,
                "initial_margin": f["initial_margin"], "maintenance_margin": f["maintenance_margin"],
                "projected_initial_margin": f["initial_margin"],
                "projected_maintenance_margin": f["maintenance_margin"],
                "available_funds": equity - f["initial_margin"], "margin_model": self.margin_model,
                "portfolio_margining_enabled": self.margin_model.endswith("_pm"),
                "cross_collateral_enabled": self.margin_model.startswith("cross"),
                "delta_total": 0.0, "options_value": 0.0, "futures_pl": 0.0, "total_pl": 0.0,
                "fee_balance": 0.0, "session_rpl": 0.0, "session_upl": 0.0,
                "estimated_liquidation_ratio": 0.0, "username": "desk-test", "type": "main",
                "id": 4242,
                **({"total_initial_margin_usd": self.total_usd[0],
                    "total_maintenance_margin_usd": self.total_usd[1]}
                   if self.margin_model.startswith("cross") else {})}

    def _pme(self, ccy: str) -> dict[str, Any]:
        f = self._figures(ccy)
        risk = f["worst_case"] + f["roll_shock"]
        c = ccy.lower()
        return {"model_params": {"general": {"mm_factor": 0.8, "buckets_count": 4, "vol_scenarios_count": 3}},
                "margins": {c: {"initial_margin_details": {
                    "risk_matrix_margin_details": {"delta_shock": 0, "roll_shock": f["roll_shock"],
                                                   "worst_case": f["worst_case"],
                                                   "worst_case_bucket": {"bucket": 4, "side": "left",
                                                                         "source": "standard", "index": 1},
                                                   "correlation_contingency": 0},
                    "risk_matrix_margin": risk, "spot_margin": 0, "mmp_margin": f["mmp_margin"],
                    "open_orders_margin": f["open_orders_margin"]},
                    "initial_margin": f["initial_margin"], "maintenance_margin": f["maintenance_margin"]}},
                "portfolio": {"currency": {}, "position": {n: q for n, q in self.book.items()
                                                           if _currency_of(n) == ccy}},
                "index_price": {f"{c}_usd": self.market["index_prices"].get(ccy)}}
