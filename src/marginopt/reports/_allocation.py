"""The HTML report of a desk allocation: the summary, the margin of each account before and after
(chart), the moves as a from-to table, transfers, trades, the desk's greeks against its limits
(chart) and every binding limit with its shadow price. One self-contained file (charts as base64
PNG), drawn from the allocation's ``to_dict()`` form, so a saved allocation.json can be rendered."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from .._format import limit_decimals, limit_unit, num, price_decimals, price_unit
from ._charts import _AFTER, _BEFORE, _png, _usd, limits_chart
from ._html import _CSS, _e, _num, _table
from ._write import atomic_write_bytes, atomic_write_text

_WORDS = {
    "optimal": "the allocation lowers the desk's initial margin and keeps every limit",
    "no_allocation": "nothing is proposed (the reason says why)",
    "restores_limits": "the desk broke a limit; the allocation brings it back inside",
}


def margin_by_account_chart(allocation: Mapping[str, Any]) -> bytes | None:
    """Initial margin per account before and after, side by side (USD)."""
    accounts = list(allocation.get("accounts") or [])
    if not accounts:
        return None
    names = [a["name"] for a in accounts]
    before = np.array([a["margin_before_usd"] for a in accounts], dtype=float)
    after = np.array([a["margin_after_usd"] for a in accounts], dtype=float)
    fig = Figure(figsize=(max(6.0, 1.3 * len(names) + 3), 4.2))
    ax = fig.subplots()
    x = np.arange(len(names))
    w = 0.38
    bars_b = ax.bar(x - w / 2, before, w, color=_BEFORE, label="before")
    bars_a = ax.bar(x + w / 2, after, w, color=_AFTER, label="after")
    for bars in (bars_b, bars_a):
        for bar in bars:
            ax.annotate(_usd(bar.get_height()), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    for i, a in enumerate(accounts):
        eq = a.get("equity_after_usd")
        if eq is not None:
            room = eq - a.get("buffer_usd", 0.0)
            ax.hlines(room, i - 0.45, i + 0.45, colors="#c62828", linestyles="dashed", lw=1.2,
                      label="equity after transfers less buffer" if i == 0 else None)
    ax.set_xticks(x, [f"{n}\n({a['model']})" for n, a in zip(names, accounts)], fontsize=9)
    ax.set_ylabel("initial margin (USD)")
    ax.yaxis.set_major_formatter(lambda v, _: _usd(v))
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Desk: {_usd(allocation['margin_before_usd'])} -> {_usd(allocation['margin_after_usd'])} USD",
                 loc="left", fontsize=10)
    return _png(fig)


def desk_limits_chart(allocation: Mapping[str, Any]) -> bytes | None:
    """The desk's aggregate greeks against its limits (the proposal limits chart's form)."""
    limits = []
    for lim in allocation.get("desk_limits") or []:
        lim = dict(lim)
        if lim.get("binding") and lim.get("shadow_price") is None:
            # no dual from the solver that answered: say binding without a price
            lim["binding"] = False
            lim["name"] = f"{lim['name']} (binding)"
        limits.append(lim)
    return limits_chart({"limits": limits}) if limits else None


def allocation_charts(allocation: Mapping[str, Any]) -> dict[str, bytes]:
    out = {}
    for name, fn in (("margin_by_account", margin_by_account_chart), ("desk_limits", desk_limits_chart)):
        png = fn(allocation)
        if png is not None:
            out[name] = png
    return out


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_allocation_html(allocation: Any, *, charts: Mapping[str, bytes] | None = None) -> str:
    """The report page of an ``Allocation`` (or its ``to_dict()`` form)."""
    d = allocation if isinstance(allocation, Mapping) else allocation.to_dict()
    charts = allocation_charts(d) if charts is None else charts
    status = d["status"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Desk allocation</title>"
             f"<style>{_CSS}</style></head><body><main>",
             "<h1>Desk allocation</h1>",
             f'<p class="meta"><span class="status {_e(status)}">{_e(status)}</span> '
             f"{_e(_WORDS.get(status, status))}. {_e(d['reason'])}</p>",
             '<div class="cards">']
    cards = [("margin before (USD)", _num(d["margin_before_usd"]), ""),
             ("margin after (USD)", _num(d["margin_after_usd"]), ""),
             ("saved (USD)", f"{_num(d['margin_saved_usd'])} ({d['margin_saved_pct']:.2f}%)",
              "good" if d["margin_saved_usd"] > 0 else ""),
             ("cost and fees (USD)", _num(d["cost_usd"] + d["fees_usd"]), "")]
    parts += [f'<div class="card"><div class="k">{_e(k)}</div><div class="v {c}">{v}</div></div>'
              for k, v, c in cards]
    parts.append("</div>")
    if d.get("saving_from_moves_usd") is not None:
        parts.append(f"<p>Moves (and transfers) alone save {_num(d['saving_from_moves_usd'])} USD; "
                     f"trades add {_num(d['saving_from_trades_usd'])} USD.</p>")
    parts.append("<h2>Margin per account</h2>")
    if "margin_by_account" in charts:
        parts.append(_img(charts["margin_by_account"], "initial margin per account before and after"))
    rows = [[_e(a["name"]), _e(f"{a['venue']} ({a['main_account']})"), _e(a["model"]),
             _num(a["margin_before_usd"]), _num(a["margin_after_usd"]), _num(a["margin_saved_usd"]),
             str(len(a["trades"])), str(sum(1 for q in a["moves"].values() if q)), _num(a["equity_after_usd"]),
             _num(a["headroom_usd"])] for a in d["accounts"]]
    parts.append(_table([("account", False), ("venue (main account)", False), ("model", False),
                         ("margin before (USD)", True), ("margin after (USD)", True), ("saved (USD)", True),
                         ("trades", True), ("instruments moved", True), ("equity after (USD)", True),
                         ("headroom (USD)", True)], rows))
    parts.append("<h2>Moves</h2>")
    if d["moves"]:
        parts.append('<p class="small">Positions moved at mark between subaccounts of one main account '
                     "(no P&amp;L for either side). Quantity in coin; negative: a short position.</p>")
        rows = []
        for m in d["moves"]:
            unit = price_unit(m["instrument_name"])
            rows.append([_e(m["instrument_name"]), _e(m["from_account"]), _e(m["to_account"]),
                         _num(m["quantity"], 6, sign=True), _e(f"{num(m['mark_price'], price_decimals(unit))} {unit}"),
                         _num(m["notional_usd"]), _num(m["fee_usd"])])
        parts.append(_table([("instrument", False), ("from", False), ("to", False), ("quantity", True),
                             ("mark", True), ("notional (USD)", True), ("fee (USD)", True)], rows))
    else:
        parts.append("<p>No move.</p>")
    if d["transfers"]:
        parts.append("<h2>Collateral transfers</h2>")
        rows = [[_e(t["currency"]), _e(t["from_account"]), _e(t["to_account"]), _num(t["amount"], 6),
                 _num(t["amount_usd"]), _num(t["fee_usd"])] for t in d["transfers"]]
        parts.append(_table([("currency", False), ("from", False), ("to", False), ("amount", True),
                             ("USD", True), ("fee (USD)", True)], rows, narrow=True))
    parts.append("<h2>Trades</h2>")
    trades = [(a["name"], t) for a in d["accounts"] for t in a["trades"]]
    if trades:
        rows = []
        for name, t in trades:
            unit = price_unit(t["instrument_name"])
            rows.append([_e(name), _e(t["instrument_name"]), _e(t["side"]), _num(t["quantity"], 6, sign=True),
                         _e(f"{num(t['price'], price_decimals(unit))} {unit}"), _num(t["cost"])])
        parts.append(_table([("account", False), ("instrument", False), ("side", False), ("quantity", True),
                             ("price", True), ("cost (USD)", True)], rows))
    else:
        parts.append("<p>No trade.</p>")
    parts.append("<h2>Desk greeks against desk limits</h2>")
    if "desk_limits" in charts:
        parts.append(_img(charts["desk_limits"], "desk greeks against desk limits"))
    rows = []
    for u, gb in d["greeks_before"].items():
        ga = d["greeks_after"].get(u, {})
        rows.append([_e(u), _num(gb["delta"], 4), _num(ga.get("delta", 0.0), 4), _num(gb["vega"]),
                     _num(ga.get("vega", 0.0)), _num(gb["gamma"], 4), _num(ga.get("gamma", 0.0), 4)])
    parts.append(_table([("underlying", False), ("delta before (coin)", True), ("delta after (coin)", True),
                         ("vega before (USD/vol pt)", True), ("vega after", True),
                         ("gamma before (coin/1%)", True), ("gamma after", True)], rows))
    if d["desk_limits"]:
        rows, cls = [], []
        for l in d["desk_limits"]:
            k = limit_decimals(l["name"])
            price = "n/a" if l["binding"] and l["shadow_price"] is None else (_num(l["shadow_price"]) if l["binding"] else "")
            rows.append([_e(l["name"]), _e(limit_unit(l["name"])), _num(l["lower"], k), _num(l["upper"], k),
                         _num(l["before"], k), _num(l["after"], k), "yes" if l["binding"] else "", price])
            cls.append("binding" if l["binding"] else "")
        parts.append(_table([("limit", False), ("unit", False), ("lower", True), ("upper", True),
                             ("before", True), ("after", True), ("binding", False),
                             ("shadow price (USD/unit)", True)], rows, cls))
    if d["binding_limits"]:
        parts.append("<h2>Binding limits</h2>")
        rows = [[_e(b["kind"]), _e(b["account"] or ""), _e(b["name"]), _num(b["value"], 4), _num(b["bound"], 4),
                 "n/a" if b["shadow_price"] is None else _num(b["shadow_price"], 4)] for b in d["binding_limits"]]
        parts.append(_table([("kind", False), ("account", False), ("limit", False), ("value", True),
                             ("bound", True), ("shadow price (USD/unit)", True)], rows))
    solver = d.get("solver") or {}
    if solver.get("name"):
        parts.append(f'<p class="small">Solver {_e(solver["name"])} ({_e(solver.get("problem_class"))}); '
                     f"verified: {_e(d.get('verified_by', ''))}. Every margin is recomputed by the account's "
                     "own calculator on its post-allocation book.</p>")
    if d["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in d["notes"]) + "</ul>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_allocation_report(allocation: Any, folder: str | Path) -> dict[str, Path]:
    """``report.html`` and the charts as PNG files in ``folder``."""
    out = Path(folder)
    d = allocation if isinstance(allocation, Mapping) else json.loads(allocation.to_json())
    charts = allocation_charts(d)
    paths: dict[str, Path] = {}
    for name, png in charts.items():
        paths[name] = out / f"{name}.png"
        atomic_write_bytes(paths[name], png)
    paths["html"] = out / "report.html"
    atomic_write_text(paths["html"], render_allocation_html(d, charts=charts))
    return paths
