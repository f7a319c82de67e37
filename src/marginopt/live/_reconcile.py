"""Reconcile marginopt's margin of a fetched account with the exchange's own figures.

Per account currency: the account summary's initial and maintenance margin against marginopt's
(the model chosen from the summary's ``margin_model``); for portfolio-margin accounts, the
``private/pme/simulate`` breakdown component by component (worst case, roll shock, delta shock,
correlation contingency, risk-matrix margin, open orders, market-maker protection); for
standard-margin accounts, position by position (``private/get_positions`` gives each position's
margin, and standard margin is a sum over positions). Differences in the account currency, in USD
and in percent of the exchange's figure.

Not modelled, and said so on every reconciliation: the margin of open orders (Deribit publishes
no rule for it that can be recomputed from the order list: ``pme/simulate`` reports
``open_orders_margin`` as one number, the positions their share), market-maker-protection margin
(``mmp_margin``), spot margin, and Deribit PM's delta shock and correlation contingency (zero
below their thresholds; marginopt keeps the book under the delta threshold as a limit).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import pandas as pd

from ..errors import SnapshotError
from ..margins import MarginResult, load_model
from ..margins import margin as compute_margin
from ..portfolio import Portfolio
from ._snapshot import Snapshot, load_snapshot, margin_model_of

#: pme/simulate figures marginopt does not compute, with why (for the report)
NOT_MODELLED = {
    "open_orders_margin": "open orders: Deribit publishes no rule to recompute it from the order "
                          "list; the exchange's figure is shown",
    "mmp_margin": "market-maker protection (MMP) margin: set by the account's MMP configuration, "
                  "not by the book",
    "spot_margin": "spot margin (spot orders and borrowing)",
    "delta_shock": "Deribit PM delta shock: charged only above delta_total_liq_shock_threshold; "
                   "its form is not public (marginopt keeps the book under it as a limit)",
    "correlation_contingency": "Deribit PM correlation contingency (form not public)",
}
#: marginopt's deribit-pm component for each pme/simulate risk-matrix detail
_PM_COMPONENTS = {"worst_case": "worst_case", "roll_shock": "roll_shock"}


@dataclass(frozen=True)
class ReconLine:
    """One figure compared: marginopt's (None when not modelled) against the exchange's, in the
    account currency, with the difference in USD and in percent of the exchange's figure."""

    currency: str
    figure: str
    source: str
    marginopt: float | None
    exchange: float | None
    usd_rate: float

    @property
    def modelled(self) -> bool:
        return self.marginopt is not None

    @property
    def difference(self) -> float | None:
        if self.marginopt is None or self.exchange is None:
            return None
        return self.marginopt - self.exchange

    @property
    def difference_usd(self) -> float | None:
        d = self.difference
        return None if d is None else d * self.usd_rate

    @property
    def difference_pct(self) -> float | None:
        d = self.difference
        if d is None or not self.exchange:
            return None
        return 100.0 * d / abs(self.exchange)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "modelled": self.modelled, "difference": self.difference,
                "difference_usd": self.difference_usd, "difference_pct": self.difference_pct}


@dataclass(frozen=True)
class Reconciliation:
    """marginopt against the exchange for one snapshot's account."""

    snapshot: str
    venue: str
    model: str
    margin_model: str
    cross_collateral: bool
    lines: tuple[ReconLine, ...]
    initial_margin_usd: float
    exchange_initial_margin_usd: float
    maintenance_margin_usd: float
    exchange_maintenance_margin_usd: float
    not_modelled: tuple[str, ...]
    notes: tuple[str, ...] = ()
    margin: MarginResult | None = field(default=None, repr=False, compare=False)

    @property
    def difference_usd(self) -> float:
        return self.initial_margin_usd - self.exchange_initial_margin_usd

    @property
    def difference_pct(self) -> float | None:
        e = self.exchange_initial_margin_usd
        return 100.0 * self.difference_usd / abs(e) if e else None

    def to_frame(self) -> pd.DataFrame:
        cols = ["currency", "figure", "source", "marginopt", "exchange", "usd_rate", "modelled",
                "difference", "difference_usd", "difference_pct"]
        return pd.DataFrame([l.to_dict() for l in self.lines], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "venue": self.venue, "model": self.model,
                "margin_model": self.margin_model, "cross_collateral": self.cross_collateral,
                "initial_margin_usd": self.initial_margin_usd,
                "exchange_initial_margin_usd": self.exchange_initial_margin_usd,
                "difference_usd": self.difference_usd, "difference_pct": self.difference_pct,
                "maintenance_margin_usd": self.maintenance_margin_usd,
                "exchange_maintenance_margin_usd": self.exchange_maintenance_margin_usd,
                "lines": [l.to_dict() for l in self.lines], "not_modelled": list(self.not_modelled),
                "notes": list(self.notes)}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _account_currency(pool_currency: str) -> str:
    # USDC-settled contracts are margined in USD, posted in USDC
    return "USDC" if pool_currency in ("USD", "USDC") else pool_currency


def reconcile(snapshot: Snapshot | str, *, model: str | None = None,
              collateral_params: Mapping[str, Mapping[str, Any]] | None = None,
              derive_parameters: Mapping[str, Any] | None = None) -> Reconciliation:
    """Compare marginopt's margin of the snapshot's account with the exchange's figures.
    ``model`` overrides the one the account summary's ``margin_model`` names. A Derive
    snapshot is reconciled by ``_derive.reconcile_derive`` (``collateral_params``: the
    haircuts of its non-USDC collaterals; ``derive_parameters``: PM2 rule parameters)."""
    snap = snapshot if isinstance(snapshot, Snapshot) else load_snapshot(snapshot)
    if snap.venue == "derive":
        from ._derive import reconcile_derive
        return reconcile_derive(snap, model=model, collateral_params=collateral_params,
                                parameters=derive_parameters)
    summaries = snap.account_summaries
    if not summaries:
        raise SnapshotError("the snapshot has no account summary", source=str(snap.path))
    models = {c: margin_model_of(s) for c, s in summaries.items()}
    if len(set(models.values())) != 1:
        raise SnapshotError(f"the account summaries name different margin models: {models}",
                            source=str(snap.path), field="margin_model")
    model_name = model or next(iter(models.values()))
    first = next(iter(summaries.values()))
    margin_model = str(first.get("margin_model") or
                       ("portfolio margin" if first.get("portfolio_margining_enabled") else "standard"))
    cross = bool(first.get("cross_collateral_enabled")) or margin_model.startswith("cross")
    market = snap.market
    book = snap.portfolio()
    result = compute_margin(book, market, load_model(model_name)) if len(book) else None
    pools_by_ccy: dict[str, list] = {}
    for pool in (result.by_underlying.values() if result else ()):
        pools_by_ccy.setdefault(_account_currency(pool.currency), []).append(pool)

    lines: list[ReconLine] = []
    notes: list[str] = []
    ex_im_usd = ex_mm_usd = 0.0
    for ccy, summary in summaries.items():
        rate = 1.0 if ccy in ("USDC", "USDT") else market.index_prices.get(ccy)
        if rate is None:
            raise SnapshotError(f"no index price for {ccy} in the market", source=str(snap.path),
                                field="index_prices")
        pools = pools_by_ccy.pop(ccy, [])
        im = sum(p.initial_margin for p in pools)
        mm = sum(p.maintenance_margin for p in pools)
        ex_im, ex_mm = float(summary["initial_margin"]), float(summary["maintenance_margin"])
        if not cross:
            ex_im_usd += ex_im * rate
            ex_mm_usd += ex_mm * rate
            lines += [ReconLine(ccy, "initial_margin", "account summary", im, ex_im, rate),
                      ReconLine(ccy, "maintenance_margin", "account summary", mm, ex_mm, rate)]
        sim = snap.pme.get(ccy)
        if isinstance(sim, dict) and isinstance(sim.get("refused"), dict):
            why = sim["refused"]
            notes.append(f"the exchange refused pme/simulate for {ccy} (error {why.get('code')}: "
                         f"{why.get('message')}): no component breakdown for {ccy}")
        elif isinstance(sim, dict):
            lines += _pme_lines(ccy, sim, pools, rate)
        elif model_name == "deribit-standard":
            lines += _position_lines(ccy, snap, book, market, rate)
    if cross:
        # a cross-collateral account's per-currency figures are the whole account's, converted:
        # compare the account in USD
        ex_im_usd = _num(first.get("total_initial_margin_usd")) or 0.0
        ex_mm_usd = _num(first.get("total_maintenance_margin_usd")) or 0.0
        if not ex_im_usd:
            notes.append("cross-collateral account without total_initial_margin_usd: the USD "
                         "totals use the first currency's figures at its index")
            ccy0 = next(iter(summaries))
            r0 = market.index_prices.get(ccy0, 1.0)
            ex_im_usd, ex_mm_usd = float(first["initial_margin"]) * r0, float(first["maintenance_margin"]) * r0
        lines += [ReconLine("USD", "initial_margin", "account summary (total, USD)",
                            result.initial_margin_usd if result else 0.0, ex_im_usd, 1.0),
                  ReconLine("USD", "maintenance_margin", "account summary (total, USD)",
                            result.maintenance_margin_usd if result else 0.0, ex_mm_usd, 1.0)]
    for ccy, pools in pools_by_ccy.items():
        notes.append(f"positions margined in {ccy} ({', '.join(p.currency for p in pools)} pools), "
                     f"but no {ccy} account summary was fetched: add {ccy} to --currency")
    not_modelled = [NOT_MODELLED["open_orders_margin"], NOT_MODELLED["mmp_margin"]]
    if snap.open_orders:
        not_modelled[0] += f" ({len(snap.open_orders)} open orders in the snapshot)"
    if model_name == "deribit-pm":
        not_modelled += [NOT_MODELLED["spot_margin"], NOT_MODELLED["delta_shock"],
                         NOT_MODELLED["correlation_contingency"]]
    if model_name == "deribit-pm" and not snap.pme:
        notes.append("no pme/simulate reply in the snapshot: no component breakdown from the exchange")
    return Reconciliation(
        snapshot=snap.name, venue=snap.venue, model=model_name, margin_model=margin_model,
        cross_collateral=cross, lines=tuple(lines),
        initial_margin_usd=result.initial_margin_usd if result else 0.0,
        exchange_initial_margin_usd=ex_im_usd,
        maintenance_margin_usd=result.maintenance_margin_usd if result else 0.0,
        exchange_maintenance_margin_usd=ex_mm_usd,
        not_modelled=tuple(not_modelled), notes=tuple(notes), margin=result)


def _pme_lines(ccy: str, sim: Mapping[str, Any], pools: list, rate: float) -> list[ReconLine]:
    """The pme/simulate breakdown of ``ccy`` against marginopt's deribit-pm components."""
    margins = sim.get("margins")
    if not isinstance(margins, dict):
        return []
    m = margins.get(ccy.lower())
    if m is None and len(margins) == 1:
        m = next(iter(margins.values()))
    if not isinstance(m, dict):
        return []
    src = "pme/simulate"
    ours: dict[str, float] = {}
    for p in pools:
        for k, v in p.components.items():
            ours[k] = ours.get(k, 0.0) + v
    details = m.get("initial_margin_details") or {}
    rm = details.get("risk_matrix_margin_details") or {}
    out = []
    for fld, comp in _PM_COMPONENTS.items():
        if fld in rm:
            out.append(ReconLine(ccy, fld, src, ours.get(comp, 0.0), _num(rm[fld]), rate))
    for fld in ("delta_shock", "correlation_contingency"):
        if fld in rm:
            out.append(ReconLine(ccy, fld, src, None, _num(rm[fld]), rate))
    risk = sum(p.initial_margin for p in pools)
    if "risk_matrix_margin" in details:
        out.append(ReconLine(ccy, "risk_matrix_margin", src, risk, _num(details["risk_matrix_margin"]), rate))
    for fld in ("open_orders_margin", "mmp_margin", "spot_margin"):
        if fld in details:
            out.append(ReconLine(ccy, fld, src, None, _num(details[fld]), rate))
    for fld, ourv in (("initial_margin", risk), ("maintenance_margin",
                                                 sum(p.maintenance_margin for p in pools))):
        if fld in m:
            out.append(ReconLine(ccy, fld, src, ourv, _num(m[fld]), rate))
    # marginopt's risk-matrix margin plus what the exchange charges outside the book's risk:
    # what is left is the modelling difference alone
    extra = sum(_num(details.get(f)) or 0.0 for f in ("open_orders_margin", "mmp_margin", "spot_margin"))
    extra += sum(_num(rm.get(f)) or 0.0 for f in ("delta_shock", "correlation_contingency"))
    if "initial_margin" in m:
        out.append(ReconLine(ccy, "initial_margin + unmodelled (exchange's)", src,
                             risk + extra, _num(m["initial_margin"]), rate))
    return out


def _position_lines(ccy: str, snap: Snapshot, book: Portfolio, market, rate: float) -> list[ReconLine]:
    """Standard margin is a sum over positions: each position's margin alone against the
    exchange's ``initial_margin`` / ``maintenance_margin`` of that position."""
    model = load_model("deribit-standard")
    out = []
    for row in snap.positions:
        name = row.get("instrument_name")
        q = book.positions.get(name) if isinstance(name, str) else None
        if not q:
            continue
        alone = compute_margin(Portfolio({name: q}), market, model)
        pools = [p for p in alone.by_underlying.values() if _account_currency(p.currency) == ccy]
        if not pools:
            continue
        for fld, ours in (("initial_margin", sum(p.initial_margin for p in pools)),
                          ("maintenance_margin", sum(p.maintenance_margin for p in pools))):
            if _num(row.get(fld)) is not None:
                out.append(ReconLine(ccy, f"{fld} {name}", "get_positions", ours, _num(row[fld]), rate))
        if _num(row.get("open_orders_margin")):
            out.append(ReconLine(ccy, f"open_orders_margin {name}", "get_positions", None,
                                 _num(row["open_orders_margin"]), rate))
    return out
