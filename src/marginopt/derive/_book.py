"""A Derive PM2 case as a marginopt book: ``to_marginopt(case) -> (Portfolio, MarketSnapshot,
MarginModel)``, so ``marginopt.margin`` and ``marginopt.optimize`` run on it like on any book.

* Instruments are named as the Derive venue writes them (``marginopt.venues.derive``: Deribit's
  scheme for USDC-settled contracts): options ``ETH_USDC-28FEB25-3000-C`` and the perpetual
  ``ETH_USDC-PERPETUAL``, in coin. The case does
  not name its underlying: BTC when spot is at least 10,000, else ETH, unless ``underlying`` is
  given (the name only labels the instruments; the margin does not depend on it).
* The valuation time is the case's (``ExiryTs - Expiry`` of its options); expiries are the
  options' timestamps, which must fall at the venue's expiry hour, 08:00 UTC, as the names imply
  (they do in every golden case). A case with no option timestamps needs ``valuation_time`` unless it holds no
  options.
* The snapshot carries, per option, the PM2 mark (USD, discounted Black-76 on the expiry's SVI
  vol), the mark vol (percent), the expiry's forward; the perp's price; the index (spot) price.
  Bid/ask and open interest are absent (NaN): optimise with ``costs: {spread: false}``.
* The book holds the options (same expiry, strike and type summed) and the perp. An account
  with neither holds the perp at zero, so that the engine has a pool in which to margin its
  collaterals. A case without a perp price (no perp held) gets spot as the perp's price, which
  changes nothing at a zero perp position.
* The model is the shipped ``derive-pm2`` with this case's parameters, account (cash,
  collaterals, the perp's unrealised P&L and funding) and market (feeds, prices, confidences) in
  its ``derive_pm2`` components. Its margin is the PM2 requirement, ``PortfolioMTM - IM`` (and
  ``- MM``) in the exchange's terms; see ``marginopt.derive._component``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from marginopt.derive._case import DeriveCase, load_case
from marginopt.derive._params import DeriveCaseError, params_to_block
from marginopt.derive._pm2 import build_risk_arrays
from marginopt.instruments import Kind, Settlement, parse_instrument
from marginopt.venues import venue

#: the venue whose names and expiry hour a Derive book has
DERIVE = venue("derive")

#: valuation time used for a case that holds no options and gives none (margin does not depend
#: on it then): the one every golden case with option timestamps shares
DEFAULT_VALUATION_TIME = datetime(2025, 2, 19, 3, 12, 28, tzinfo=timezone.utc)

def _infer_underlying(case: DeriveCase) -> str:
    return "BTC" if case.spot >= 10_000.0 else "ETH"


def case_valuation_time(case: DeriveCase, valuation_time: datetime | str | None = None) -> datetime:
    """The case's valuation time (UTC): ``valuation_time`` if given, else ``ExiryTs - Expiry``."""
    if valuation_time is not None:
        ts = datetime.fromisoformat(valuation_time.replace("Z", "+00:00")) \
            if isinstance(valuation_time, str) else valuation_time
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    if case.valuation_time is not None:
        return datetime.fromtimestamp(case.valuation_time, tz=timezone.utc)
    if len(case.option_amount):
        raise DeriveCaseError("the case gives no option timestamps (ExiryTs): pass valuation_time",
                              source=case.name, field="Scenario.Options")
    return DEFAULT_VALUATION_TIME


def option_names(case: DeriveCase, underlying: str, now: datetime) -> list[str]:
    """Names of the case's options as the Derive venue writes them (expiring at its expiry hour,
    checked)."""
    out = []
    hour = DERIVE.expiry_hour_utc
    for i, (sec, k, call) in enumerate(zip(case.option_expiry.tolist(), case.option_strike,
                                           case.option_is_call)):
        expiry = datetime.fromtimestamp(now.timestamp() + sec, tz=timezone.utc)
        if (expiry.hour, expiry.minute, expiry.second, expiry.microsecond) != (hour, 0, 0, 0):
            raise DeriveCaseError(f"expires at {expiry:%Y-%m-%d %H:%M:%S} UTC; Derive's "
                                  f"instrument names expire at {hour:02d}:00 UTC", source=case.name,
                                  field=f"Scenario.Options[{i}].Expiry", value=sec)
        name = DERIVE.format(underlying, Kind.OPTION, Settlement.LINEAR, expiry, float(k), bool(call))
        inst = parse_instrument(name)
        if inst.expiry != expiry or inst.strike != float(k):
            raise DeriveCaseError(f"option does not round-trip through the name {name}",
                                  source=case.name, field=f"Scenario.Options[{i}]")
        out.append(inst.name)
    return out


def _perp_price(case: DeriveCase) -> float:
    """The perp's price; spot when the case has none (no perp held: the price then only
    matters for a perp the optimizer might add)."""
    return float(case.perp_price) if case.perp_price > 0.0 else float(case.spot)


def _component_state(case: DeriveCase, underlying: str, now: datetime) -> dict[str, Any]:
    """The ``derive_pm2`` component keys that carry this case's account, market, parameters."""
    collaterals = [
        {"Name": n, "Amount": float(a), "Price": float(p), "Confidence": float(c),
         "IsRiskCancelling": bool(r), "IMHaircut": float(im), "MMHaircut": float(mm)}
        for n, a, p, c, r, im, mm in zip(case.collateral_name, case.collateral_amount,
                                         case.collateral_price, case.collateral_confidence,
                                         case.collateral_risk_cancelling,
                                         case.collateral_im_haircut, case.collateral_mm_haircut)
    ]
    feeds = [
        {"FeedExpiry": int(e), "Forward": float(f), "ForwardConfidence": float(fc),
         "Rate": float(r), "RateConfidence": float(rc), "SVIparam": [float(v) for v in svi],
         "OptionVolConfidences": float(vc)}
        for e, f, fc, r, rc, svi, vc in zip(case.feed_expiry, case.feed_forward,
                                            case.feed_forward_confidence, case.feed_rate,
                                            case.feed_rate_confidence, case.feed_svi,
                                            case.feed_vol_confidence)
    ]
    return {
        "underlying": underlying,
        "valuation_time": now,
        "parameters": params_to_block(case.params),
        "account": {"Cash": float(case.cash), "Collaterals": collaterals,
                    "UnrealisedPerpPNL": float(case.unrealised_perp_pnl),
                    "UnrealisedFunding": float(case.unrealised_funding)},
        "market": {"SpotPrice": float(case.spot), "SpotConfidence": float(case.spot_confidence),
                   "PerpPrice": _perp_price(case),
                   "PerpConfidence": float(case.perp_confidence),
                   "StablePrice": float(case.stable_price),
                   "StableConfidence": float(case.stable_confidence), "OptionFeeds": feeds},
    }


def to_marginopt(case: DeriveCase, *, underlying: str | None = None,
                 valuation_time: datetime | str | None = None) -> tuple[Any, Any, Any]:
    """``(Portfolio, MarketSnapshot, MarginModel)`` of a Derive case (see the module docstring):
    ``marginopt.margin(*to_marginopt(case))`` is the case's PM2 requirement."""
    from marginopt.margins import MarginModel, load_model
    from marginopt.market import MarketSnapshot
    from marginopt.portfolio import Portfolio

    und = (underlying or _infer_underlying(case)).strip().upper()
    now = case_valuation_time(case, valuation_time)
    names = option_names(case, und, now)
    arrays = build_risk_arrays(case)
    positions: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        amount = float(case.option_amount[i])
        if amount != 0.0:
            positions[name] = positions.get(name, 0.0) + amount
        rows.setdefault(name, {
            "instrument_name": name,
            "mark_price": float(arrays.mark[i]),
            "mark_iv": 100.0 * float(arrays.option_vol[i]),
            "underlying_price": float(arrays.option_forward[i]),
        })
    perp = DERIVE.format(und, Kind.PERPETUAL, Settlement.LINEAR)
    price = _perp_price(case)
    rows[perp] = {"instrument_name": perp, "mark_price": price, "underlying_price": price}
    if case.perp_position != 0.0 or not positions:
        # an account without positions still has a requirement (its collaterals'): a zero perp
        # position gives the engine a pool to margin it in
        positions[perp] = float(case.perp_position)
    frame = pd.DataFrame(list(rows.values()),
                         columns=["instrument_name", "mark_price", "mark_iv", "underlying_price"])
    market = MarketSnapshot.from_rows(frame, valuation_time=now,
                                      index_prices={und: float(case.spot)},
                                      source=f"derive case {case.name}")
    base = load_model("derive-pm2")
    data = base.model_dump(exclude={"path"})
    state = _component_state(case, und, now)
    for rules in data["currencies"].values():
        for comp in [*rules["initial"], *(rules.get("maintenance") or [])]:
            if comp["type"] == "derive_pm2":
                comp.update(state)
    data["description"] = f"{data['description']} Account and market: Derive case {case.name}."
    model = MarginModel.model_validate({**data, "path": base.path})
    return Portfolio(positions, source=f"derive case {case.name}"), market, model


def load_case_as_book(path: str | os.PathLike[str], **kwargs: Any) -> tuple[Any, Any, Any]:
    """``to_marginopt(load_case(path))``; keyword arguments go to ``to_marginopt``."""
    return to_marginopt(load_case(path), **kwargs)
