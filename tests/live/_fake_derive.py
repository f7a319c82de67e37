"""A Derive-shaped exchange for the live tests: JSON-RPC over HTTP POST on 127.0.0.1, built from
one of Derive's golden PM2 cases, scripted to misbehave (429 with Retry-After, 500, malformed
JSON, a reply without ``result``, a held reply).

Replies follow Derive's documented shapes (``{"id": ..., "result": ...}``; errors ``{"id": ...,
"error": {"code", "message", "data"}}`` with HTTP 400, 429 for ``-32000`` rate limit exceeded),
numbers as decimal strings. Private calls are checked as Derive checks them: the
``X-DeriveWallet`` header must be the subaccount's owner and ``X-DeriveSignature`` must be the
session key's Ethereum signature of ``X-DeriveTimestamp`` (verified with the key's public key).

The case becomes: tickers (mark, index, ``option_pricing`` with the SVI vol and forward) and
instruments for its options and perp; the positions (the perp's unrealised P&L and funding on its
row); the subaccount (cash as USDC, the other collaterals, the case's ``PortfolioMTM``, ``IM`` and
``MM`` as ``subaccount_value``, ``initial_margin`` and ``maintenance_margin``); the oracles'
signed feeds (spot, USDC, collateral spots, the perp feed, and per expiry forward, rate and SVI).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import ccxt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from werkzeug import Request, Response

from marginopt.derive import load_case, to_marginopt
from marginopt.derive._params import params_to_block
from marginopt.derive._api import CASH_ASSET, expiry_timestamp, native_name
from marginopt.instruments import parse_instrument

from ._fake import MARK

#: the test session key (a private key must be hex, so it cannot carry MARK: the leak check looks
#: for the key itself), the owner wallet and the subaccount
SESSION_KEY = "0x5e55104a3c4b1d0e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"
WRONG_KEY = "0x" + "7" * 64
WALLET = "0x7e57Wa11e7" + MARK + "0000000000000000"
SUBACCOUNT = 424242


def _s(x: float) -> str:
    """Derive's decimal strings (``repr`` round-trips a float exactly)."""
    return repr(float(x))


class NotExpressible(Exception):
    """A case that Derive's replies cannot carry (the test skips it, saying why)."""


def _public_key(hex_key: str) -> ec.EllipticCurvePublicKey:
    return ec.derive_private_key(int(hex_key.removeprefix("0x"), 16), ec.SECP256K1()).public_key()


class FakeDerive:
    """State and scripted faults of the fake exchange; ``handle`` is the WSGI handler."""

    def __init__(self, case_path: str | Path) -> None:
        self.case = load_case(case_path)
        book, market, _ = to_marginopt(self.case)
        self.book, self.market = book, market
        (self.currency,) = market.index_prices
        self.now = int(market.valuation_time.timestamp())
        self.faults: dict[str, deque] = defaultdict(deque)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.entered: dict[str, threading.Event] = defaultdict(threading.Event)
        self._hasher = ccxt.derive()
        self._key = _public_key(SESSION_KEY)
        self._check_expressible()

    # ------------------------------------------------------------------ scripting
    def script(self, endpoint: str, *faults: Any) -> None:
        """Faults for the next calls of ``endpoint`` (``public/get_tickers``), in order:
        ``("status", 429, retry_after)``, ``("status", 500)``, ``("malformed",)``,
        ``("no_result",)``, ``("hold",)``, ``("ok",)``."""
        self.faults[endpoint].extend(faults)

    def calls(self, endpoint: str) -> int:
        return sum(1 for p, _ in self.requests if p == endpoint)

    def replies(self) -> dict[str, Any]:
        """Every reply a fetch reads, as the exchange's ``result`` objects (no HTTP)."""
        tickers = {}
        for kind in ("option", "perp"):
            tickers.update(self._tickers(self.currency, kind, None))
        return {"tickers": tickers, "feeds": self._feeds(), "subaccount": self._subaccount(),
                "positions": self._positions()}

    def _check_expressible(self) -> None:
        c = self.case
        names = list(c.collateral_name)
        if len(set(names)) != len(names):
            raise NotExpressible("two collaterals of one name (Derive lists one balance per asset)")
        for n, p, conf in zip(names, c.collateral_price, c.collateral_confidence):
            if n == CASH_ASSET:
                raise NotExpressible("a USDC collateral apart from cash (Derive's USDC is the cash)")
            if n == self.currency and (p != c.spot or conf != c.spot_confidence):
                raise NotExpressible(f"collateral {n} priced apart from the {n} spot feed")

    # ------------------------------------------------------------------ replies
    @staticmethod
    def _ok(result: Any) -> Response:
        return Response(json.dumps({"id": str(uuid.uuid4()), "result": result}), status=200,
                        content_type="application/json")

    @staticmethod
    def _error(code: int, message: str, data: str | None = None, status: int = 400,
               headers: dict[str, str] | None = None) -> Response:
        err: dict[str, Any] = {"code": code, "message": message}
        if data:
            err["data"] = data
        return Response(json.dumps({"id": str(uuid.uuid4()), "error": err}), status=status,
                        content_type="application/json", headers=headers or {})

    def handle(self, request: Request) -> Response:
        endpoint = request.path.strip("/")
        try:
            params = json.loads(request.get_data(as_text=True) or "{}")
        except ValueError:
            return self._error(-32700, "Parse error")
        with self.lock:
            self.requests.append((endpoint, params))
            fault = self.faults[endpoint].popleft() if self.faults[endpoint] else ("ok",)
        self.entered[endpoint].set()
        kind = fault[0]
        if kind == "status":
            if fault[1] == 429:
                headers = {"Retry-After": str(fault[2])} if len(fault) > 2 else {}
                return self._error(-32000, "Rate limit exceeded", status=429, headers=headers)
            return Response("Internal Server Error", status=fault[1], content_type="text/html")
        if kind == "hold":
            self.release.wait(30)
        if kind == "malformed":
            return Response('{"id": "1", "result": {"tickers": {"ETH-PERP', status=200,
                            content_type="application/json")
        if kind == "no_result":
            return Response(json.dumps({"id": "1"}), status=200, content_type="application/json")
        return self._route(endpoint, params, request)

    def _authorised(self, request: Request, params: dict[str, Any]) -> Response | None:
        wallet = request.headers.get("X-DeriveWallet")
        ts = request.headers.get("X-DeriveTimestamp", "")
        sig = request.headers.get("X-DeriveSignature", "")
        if not wallet:
            return self._error(14021, "The X-DeriveWallet header not provided")
        if wallet != WALLET or params.get("subaccount_id") != SUBACCOUNT:
            return self._error(14020, "The X-DeriveWallet header does not match the requested "
                                      "subaccount_id or wallet")
        try:
            raw = bytes.fromhex(sig.removeprefix("0x"))
            r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
            digest = bytes.fromhex(self._hasher.hash_message(ts).removeprefix("0x"))
            self._key.verify(utils.encode_dss_signature(r, s), digest,
                             ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except (ValueError, InvalidSignature):
            return self._error(14014, "Signature invalid for message or transaction",
                               "Signature does not match data")
        return None

    def _route(self, endpoint: str, params: dict[str, Any], request: Request) -> Response:
        if endpoint.startswith("private/"):
            refused = self._authorised(request, params)
            if refused is not None:
                return refused
        ccy = str(params.get("currency", "")).upper()
        if endpoint == "public/get_instruments":
            return self._ok(self._instruments(ccy, params.get("instrument_type")))
        if endpoint == "public/get_tickers":
            return self._ok({"tickers": self._tickers(ccy, params.get("instrument_type"),
                                                      params.get("expiry_date"))})
        if endpoint == "public/get_latest_signed_feeds":
            return self._ok(self._feeds())
        if endpoint == "private/get_subaccount":
            return self._ok(self._subaccount())
        if endpoint == "private/get_positions":
            return self._ok({"subaccount_id": SUBACCOUNT, "positions": self._positions()})
        return self._error(-32601, "Method not found")

    # ------------------------------------------------------------------ the case as Derive shows it
    def _listed(self, ccy: str, kind: str | None) -> list[str]:
        if ccy != self.currency:
            return []
        out = []
        for n in self.market.rows.index:
            k = parse_instrument(n).kind.value
            if kind is None or (kind == "perp" and k == "perpetual") or (kind == "option" and k == "option"):
                out.append(n)
        return out

    def _instruments(self, ccy: str, kind: str | None) -> list[dict[str, Any]]:
        out = []
        for n in self._listed(ccy, kind):
            inst = parse_instrument(n)
            row: dict[str, Any] = {"instrument_name": native_name(n), "instrument_type": kind,
                                   "is_active": True, "base_currency": ccy, "quote_currency": "USDC",
                                   "amount_step": "0.01", "tick_size": "0.1"}
            if inst.kind.value == "option":
                row["option_details"] = {"index": f"{ccy}-USD", "expiry": expiry_timestamp(inst.expiry),
                                         "strike": _s(inst.strike),
                                         "option_type": "C" if inst.is_call else "P",
                                         "settlement_price": None}
                row["perp_details"] = None
            else:
                row["option_details"] = None
                row["perp_details"] = {"index": f"{ccy}-USD", "max_rate_per_hour": "0.004",
                                       "min_rate_per_hour": "-0.004", "static_interest_rate": "0"}
            out.append(row)
        return out

    def _tickers(self, ccy: str, kind: str | None, expiry_date: str | None) -> dict[str, Any]:
        out = {}
        spot = float(self.market.index_prices[self.currency])
        for n in self._listed(ccy, kind):
            inst = parse_instrument(n)
            if expiry_date and inst.kind.value == "option" and f"{inst.expiry:%Y%m%d}" != expiry_date:
                continue
            mark = float(self.market.column([n], "mark_price")[0])
            t: dict[str, Any] = {"instrument_name": native_name(n), "instrument_type": kind,
                                 "timestamp": self.now * 1000, "mark_price": _s(mark),
                                 "index_price": _s(spot), "best_bid_price": "0",
                                 "best_bid_amount": "0", "best_ask_price": "0",
                                 "best_ask_amount": "0", "stats": {"open_interest": "0",
                                                                   "contract_volume": "0"}}
            if inst.kind.value == "option":
                iv = float(self.market.column([n], "mark_iv")[0]) / 100.0
                fwd = float(self.market.column([n], "underlying_price")[0])
                t["option_pricing"] = {"iv": _s(iv), "forward_price": _s(fwd), "mark_price": _s(mark),
                                       "delta": "0", "gamma": "0", "vega": "0", "theta": "0",
                                       "rho": "0", "bid_iv": "0", "ask_iv": "0"}
            else:
                t["option_pricing"] = None
                t["funding_rate"] = "0"
            out[native_name(n)] = t
        return out

    def _feeds(self) -> dict[str, Any]:
        c, u = self.case, self.currency

        def signed(d: dict[str, Any]) -> dict[str, Any]:
            return {**d, "currency": d.get("currency", u), "timestamp": self.now * 1000,
                    "deadline": self.now + 60, "signatures": {"signers": ["0x0"], "signatures": ["0x0"]}}

        spot = {u: signed({"price": _s(c.spot), "confidence": _s(c.spot_confidence)}),
                CASH_ASSET: signed({"currency": CASH_ASSET, "price": _s(c.stable_price),
                                    "confidence": _s(c.stable_confidence)})}
        for n, p, conf in zip(c.collateral_name, c.collateral_price, c.collateral_confidence):
            if n not in spot:
                spot[n] = signed({"currency": n, "price": _s(p), "confidence": _s(conf)})
        perp_price = float(c.perp_price) if c.perp_price > 0 else float(c.spot)
        vol, fwd, rate = {}, {}, {}
        for i, sec in enumerate(c.feed_expiry.tolist()):
            exp = str(self.now + int(sec))
            a, b, rho, m, sigma, f0, tau = (float(v) for v in c.feed_svi[i])
            vol[exp] = signed({"expiry": int(exp), "confidence": _s(c.feed_vol_confidence[i]),
                               "vol_data": {"SVI_a": _s(a), "SVI_b": _s(b), "SVI_rho": _s(rho),
                                            "SVI_m": _s(m), "SVI_sigma": _s(sigma),
                                            "SVI_fwd": _s(f0), "SVI_refTau": _s(tau)}})
            fwd[exp] = signed({"expiry": int(exp), "confidence": _s(c.feed_forward_confidence[i]),
                               "fwd_diff": _s(float(c.feed_forward[i]) - float(c.spot)),
                               "spot_aggregate_start": "0", "spot_aggregate_latest": "0"})
            rate[exp] = signed({"expiry": int(exp), "confidence": _s(c.feed_rate_confidence[i]),
                                "rate": _s(c.feed_rate[i])})
        return {"spot_data": spot,
                "perp_data": {u: {"P": signed({"type": "P", "spot_diff_value": _s(perp_price - float(c.spot)),
                                               "confidence": _s(c.perp_confidence)})}},
                "fwd_data": {u: fwd}, "rate_data": {u: rate}, "vol_data": {u: vol},
                "funding_data": {}}

    def _positions(self) -> list[dict[str, Any]]:
        c = self.case
        out = []
        for n, q in self.book.positions.items():
            inst = parse_instrument(n)
            perp = inst.kind.value == "perpetual"
            if perp and q == 0.0 and c.unrealised_perp_pnl == 0.0 and c.unrealised_funding == 0.0:
                continue
            mark = float(self.market.column([n], "mark_price")[0])
            out.append({"instrument_type": "perp" if perp else "option",
                        "instrument_name": native_name(n), "amount": _s(q),
                        "average_price": _s(mark), "mark_price": _s(mark),
                        "mark_value": _s(q * mark), "index_price": _s(c.spot),
                        "unrealized_pnl": _s(c.unrealised_perp_pnl if perp else 0.0),
                        "pending_funding": _s(c.unrealised_funding if perp else 0.0),
                        "cumulative_funding": "0", "realized_pnl": "0", "net_settlements": "0",
                        "initial_margin": "0", "maintenance_margin": "0", "open_orders_margin": "0",
                        "delta": "0", "gamma": "0", "vega": "0", "theta": "0",
                        "creation_timestamp": 0, "leverage": None, "liquidation_price": None})
        return out

    def _subaccount(self) -> dict[str, Any]:
        c, r = self.case, self.case.expected.raw
        coll = [{"asset_name": CASH_ASSET, "asset_type": "erc20", "currency": CASH_ASSET,
                 "amount": _s(c.cash), "mark_price": _s(c.stable_price),
                 "mark_value": _s(c.cash * c.stable_price)}]
        for n, a, p in zip(c.collateral_name, c.collateral_amount, c.collateral_price):
            coll.append({"asset_name": n, "asset_type": "erc20", "currency": n, "amount": _s(a),
                         "mark_price": _s(p), "mark_value": _s(a * p)})
        return {"subaccount_id": SUBACCOUNT, "owner_address": WALLET, "margin_type": "PM2",
                "currency": self.currency, "is_under_liquidation": False,
                "subaccount_value": _s(r["PortfolioMTM"]), "initial_margin": _s(r["IM"]),
                "maintenance_margin": _s(r["MM"]), "open_orders_margin": "0",
                "projected_margin_change": "0", "collaterals_value": "0", "positions_value": "0",
                "collaterals": coll, "positions": self._positions(), "open_orders": []}

    def parameters(self) -> dict[str, Any]:
        """The case's PM2 rule parameters (the risk manager's settings, in no reply)."""
        return params_to_block(self.case.params)

    def collateral_params(self) -> dict[str, dict[str, Any]]:
        """The risk manager's settings for the case's collaterals (no reply carries them)."""
        c = self.case
        return {n: {"IMHaircut": float(im), "MMHaircut": float(mm), "IsRiskCancelling": bool(rc)}
                for n, im, mm, rc in zip(c.collateral_name, c.collateral_im_haircut,
                                         c.collateral_mm_haircut, c.collateral_risk_cancelling)}
