"""A self-contained HTML report of a proposal: summary, charts (base64 PNG), trades, limits with
shadow prices, greeks and notes. One file, no external assets, viewable offline or mailed."""

from __future__ import annotations

import base64
import html
from typing import Any, Mapping

from .._format import (bound_decimals, bound_unit, limit_decimals, limit_unit, num, price_decimals,
                       price_unit, status_words)
from ._charts import proposal_charts

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1d2733;margin:0;
background:#f4f6f8}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;
padding-bottom:4px}
p.meta{color:#5b6b7c;margin:0 0 14px;font-size:13px}
.status{display:inline-block;padding:2px 9px;border-radius:10px;font-size:12px;font-weight:600;
background:#e3ecf7;color:#1a4f8b}.status.optimal{background:#e1f3e3;color:#1b5e20}
.status.restores_limits{background:#fff3e0;color:#8a4b00}
.cards{display:flex;gap:12px;margin:14px 0}
.card{flex:1;border:1px solid #dde3ea;border-radius:6px;padding:10px 14px}
.card .k{font-size:12px;color:#5b6b7c}.card .v{font-size:20px;font-weight:600;margin-top:2px}
.card .v.good{color:#1b5e20}.card .v.bad{color:#b71c1c}
table{border-collapse:collapse;font-size:13px;margin:6px 0;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e7ebf0;text-align:left}
th{background:#f7f9fb;font-weight:600}table.narrow{width:auto;min-width:520px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.binding td{background:#fffbe6}
img{max-width:100%;display:block;margin:8px 0}
ul{font-size:13px;padding-left:18px}
.small{font-size:12px;color:#5b6b7c}
"""

_CHART_TITLES = {
    "scenario_pnl": ("Scenario P&L before and after",
                     "Per pool, the P&L of the book under each scenario of the model (USD at the "
                     "index). Dashed: before the trades; solid: after. The margin is driven by the "
                     "worst point. Tail moves are shown as the book's raw P&L; the model weights "
                     "them and subtracts a dampener before they count."),
    "margin_components": ("Margin by component", "Initial margin per pool and component, in USD."),
    "limits": ("Greeks against their limits",
               "Each limit's allowed interval (green), the book before (hollow) and after "
               "(filled)."),
}


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any, decimals: int = 2, *, sign: bool = False) -> str:
    """Fixed decimals, dust shown as zero (never ``3.88578e-16`` or ``1.17e+05``)."""
    return _e(num(v, decimals, sign=sign))


def _table(head: list[tuple[str, bool]], rows: list[list[str]], classes: list[str] | None = None,
           narrow: bool = False) -> str:
    th = "".join(f'<th class="n">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in head)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        tds = "".join(f'<td class="n">{c}</td>' if n else f"<td>{c}</td>" for c, (_, n) in zip(r, head))
        body.append(f"<tr{cls}>{tds}</tr>")
    attr = ' class="narrow"' if narrow else ""
    return f"<table{attr}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(proposal: Any, *, charts: Mapping[str, bytes] | None = None,
                market: Any = None, title: str | None = None) -> str:
    """The report of a ``Proposal`` (or its ``to_dict()``) as one HTML string. ``charts``: PNGs
    by name (drawn here when not given); ``market``: the snapshot (or its path), to show the
    valuation time and index prices."""
    d = proposal.to_dict() if hasattr(proposal, "to_dict") else dict(proposal)
    charts = proposal_charts(d) if charts is None else charts
    b, a = d["margin_before"], d["margin_after"]
    saved, pct = d["margin_saved_usd"], d["margin_saved_pct"]
    meta = [f"model <b>{_e(d['model'])}</b>"]
    if market is not None:
        try:
            from ..market import load_market
            snap = load_market(market)
            meta.append(f"market at {_e(snap.valuation_time.strftime('%Y-%m-%d %H:%M UTC'))}")
            meta.append("index " + ", ".join(f"{_e(k)} {v:,.2f}" for k, v in snap.index_prices.items()))
        except Exception:  # noqa: BLE001 - the report does not fail for want of a header line
            pass
    solver = d.get("solver") or {}
    if solver.get("name"):
        meta.append(f"solver {_e(solver['name'])} ({_e(solver.get('problem_class') or '')})")
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title or 'Margin proposal (' + d['model'] + ')')}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title or 'Margin proposal')}</h1>",
        f'<p class="meta">{" &middot; ".join(meta)}</p>',
        f'<p><span class="status {_e(d["status"])}">{_e(d["status"])}</span> '
        f'<i>{_e(status_words(d["status"]))}.</i> {_e(d["reason"])}</p>',
        '<div class="cards">',
        f'<div class="card"><div class="k">initial margin before</div>'
        f'<div class="v">{b["initial_margin_usd"]:,.2f} USD</div></div>',
        f'<div class="card"><div class="k">initial margin after</div>'
        f'<div class="v">{a["initial_margin_usd"]:,.2f} USD</div></div>',
        f'<div class="card"><div class="k">saved</div><div class="v {"good" if saved >= 0 else "bad"}">'
        f'{saved:,.2f} USD ({pct:.2f}%)</div></div>',
        f'<div class="card"><div class="k">estimated cost</div>'
        f'<div class="v">{d.get("cost_usd", 0.0):,.2f} USD</div></div>',
        "</div>",
        _table([("", False), ("initial margin (USD)", True), ("maintenance margin (USD)", True)],
               [["before", _num(b["initial_margin_usd"]), _num(b["maintenance_margin_usd"])],
                ["after", _num(a["initial_margin_usd"]), _num(a["maintenance_margin_usd"])],
                ["saved", _num(saved),
                 _num(b["maintenance_margin_usd"] - a["maintenance_margin_usd"])]], narrow=True),
    ]
    for name in ("scenario_pnl", "margin_components", "limits"):
        if name not in charts:
            continue
        head, caption = _CHART_TITLES[name]
        data = base64.b64encode(charts[name]).decode("ascii")
        out += [f"<h2>{_e(head)}</h2>", f'<p class="small">{_e(caption)}</p>',
                f'<img alt="{_e(head)}" src="data:image/png;base64,{data}">']
    if "scenario_pnl" not in charts:
        out += ["<h2>Scenario P&amp;L</h2>",
                f'<p class="small">Model {_e(d["model"])} reports no scenario P&amp;L.</p>']

    out.append(f"<h2>Trades ({len(d['trades'])})</h2>")
    if d["trades"]:
        rows = []
        for t in d["trades"]:
            unit = price_unit(t["instrument_name"])
            rows.append([_e(t["instrument_name"]), _e(t["side"]), _num(t["quantity"], 6, sign=True),
                         _num(t["price"], price_decimals(unit)), _e(unit),
                         _num(t["notional_usd"], 0), _num(t["cost"])])
        out.append(_table(
            [("instrument", False), ("side", False), ("quantity (coin)", True), ("price", True),
             ("price unit", False), ("notional (USD)", True), ("cost (USD)", True)], rows))
        out.append('<p class="small">Prices as the exchange quotes them: coin-settled options in '
                   "their coin (BTC, ETH), futures and perpetuals in USD, USDC-settled contracts in "
                   "USDC.</p>")
    else:
        out.append("<p>No trade.</p>")

    out.append("<h2>Limits</h2>")
    if d["limits"]:
        rows = []
        for l in d["limits"]:
            k = limit_decimals(l["name"])
            rows.append([_e(l["name"]), _e(limit_unit(l["name"])), _num(l["lower"], k),
                         _num(l["upper"], k),
                         _num(l["before"], k) + (" (breached)" if l["breached_before"] else ""),
                         _num(l["after"], k), "yes" if l["binding"] else "",
                         _num(l["shadow_price"]) if l["binding"] else ""])
        out.append(_table(
            [("limit", False), ("unit", False), ("lower", True), ("upper", True), ("before", True),
             ("after", True), ("binding", False), ("shadow price (USD per unit)", True)],
            rows, ["binding" if l["binding"] else "" for l in d["limits"]]))
        out.append('<p class="small">Shadow price: initial margin (plus cost) saved per unit the '
                   "binding bound is relaxed.</p>")
    else:
        out.append("<p>The spec sets no limit.</p>")

    bounds = d.get("bounds") or []
    if bounds:
        out.append("<h2>Trade bounds</h2>")
        out.append(_table(
            [("bound", False), ("unit", False), ("used", True), ("bound", True), ("binding", False),
             ("shadow price (USD per unit)", True)],
            [[_e(x["name"]), _e(bound_unit(x["name"])), _num(x["value"], bound_decimals(x["name"])),
              _num(x["bound"], bound_decimals(x["name"])), "yes" if x["binding"] else "",
              _num(x["shadow_price"], 4) if x["binding"] else ""] for x in bounds],
            ["binding" if x["binding"] else "" for x in bounds]))
        out.append('<p class="small">Trade bounds of the spec the proposal sits on: the turnover '
                   "budget, the number of instruments traded, per-instrument caps "
                   "(<code>max_quantity</code>, open interest). Shadow price: objective saved per "
                   "unit the bound is relaxed, where the solver reports one.</p>")

    out.append("<h2>Greeks</h2>")
    gb, ga = d.get("greeks_before") or {}, d.get("greeks_after") or {}
    rows = []
    for u in sorted(set(gb) | set(ga)):
        x, y = gb.get(u, {}), ga.get(u, {})
        rows.append([_e(u), _num(x.get("delta", 0.0), 4), _num(y.get("delta", 0.0), 4),
                     _num(x.get("delta_usd", 0.0)), _num(y.get("delta_usd", 0.0)),
                     _num(x.get("vega", 0.0)), _num(y.get("vega", 0.0)),
                     _num(x.get("gamma", 0.0), 6), _num(y.get("gamma", 0.0), 6)])
    out.append(_table([("underlying", False), ("delta before (coin)", True), ("delta after (coin)", True),
                       ("delta before (USD)", True), ("delta after (USD)", True),
                       ("vega before (USD per vol point)", True), ("vega after", True),
                       ("gamma before (coin per 1% move)", True), ("gamma after", True)], rows))

    out.append("<h2>Margin by pool and component</h2>")
    comp_rows = []
    for pool in sorted(set(b["by_underlying"]) | set(a["by_underlying"])):
        pb, pa = b["by_underlying"].get(pool) or {}, a["by_underlying"].get(pool) or {}
        ccy = (pb or pa).get("currency", "")
        for n in dict.fromkeys([*(pb.get("components") or {}), *(pa.get("components") or {})]):
            vb = (pb.get("components") or {}).get(n, 0.0)
            va = (pa.get("components") or {}).get(n, 0.0)
            k = 2 if ccy in ("USD", "USDC") else 6
            comp_rows.append([_e(pool), _e(ccy), _e(n), _num(vb, k), _num(va, k),
                              _num(vb * pb.get("usd_rate", 1.0)),
                              _num(va * pa.get("usd_rate", 1.0))])
        worst = [w for w in (pb.get("worst_scenario"), pa.get("worst_scenario")) if w]
        if worst:
            comp_rows.append([_e(pool), "", "<i>worst scenario</i>", _e(pb.get("worst_scenario") or ""),
                              _e(pa.get("worst_scenario") or ""), "", ""])
    out.append(_table([("pool", False), ("currency", False), ("component", False),
                       ("before", True), ("after", True), ("before (USD)", True),
                       ("after (USD)", True)], comp_rows))

    notes = list(d.get("notes") or [])
    if notes:
        out += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"]
    excluded = d.get("excluded") or {}
    if excluded:
        items = list(excluded.items())
        out.append(f'<p class="small">{len(items)} instruments left out of the universe: '
                   + _e("; ".join(f"{k} ({v})" for k, v in items[:20]))
                   + (" ..." if len(items) > 20 else "") + ".</p>")
    timings = d.get("timings") or {}
    if solver.get("name"):
        out.append(f'<p class="small">Solver {_e(solver["name"])} ({_e(solver.get("problem_class"))}, '
                   f'{_e(solver.get("status"))}); '
                   + _e(", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())) + ".</p>")
    out.append(f'<p class="small">Schema {_e(d.get("schema_version", ""))}. Margins recomputed on the '
               "post-trade book by the model's own calculator.</p>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
