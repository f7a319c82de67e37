"""Charts and a self-contained HTML page for ``marginopt.explain``: the largest margin
contributors, the scenario chart of equity against maintenance margin with the liquidation
points, and the capacity and attribution tables. Drawn from the explanation's ``to_dict()`` form,
in the proposal report's style (same CSS, number formats, Agg canvas)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from ._charts import _AFTER, _BEFORE, _png, _usd
from ._html import _CSS, _e, _num, _table
from ._write import atomic_write_bytes, atomic_write_text

_EQUITY, _MM, _LIQ = "#1a4f8b", "#c62828", "#8a4b00"


def _as_dict(explanation: Any) -> dict[str, Any]:
    return explanation.to_dict() if hasattr(explanation, "to_dict") else dict(explanation)


# --------------------------------------------------------------------------- charts
def contributors_chart(explanation: Any, top: int = 15) -> bytes | None:
    """The ``top`` positions by absolute marginal (Euler) contribution, as bars, with each one's
    standalone and incremental margin as markers (USD)."""
    attr = _as_dict(explanation).get("attribution") or {}
    positions = list(attr.get("positions") or [])
    if not positions:
        return None
    positions.sort(key=lambda p: abs(p["marginal_usd"]), reverse=True)
    rows = positions[:top][::-1]
    y = np.arange(len(rows))
    fig = Figure(figsize=(11, 1.2 + 0.42 * len(rows)))
    ax = fig.add_subplot()
    marginal = np.array([p["marginal_usd"] for p in rows])
    ax.barh(y, marginal, 0.6, color=np.where(marginal >= 0, _AFTER, "#2e7d32"),
            label="marginal (Euler) contribution")
    ax.plot([p["standalone_usd"] for p in rows], y, "o", ms=6, mfc="white", mec=_BEFORE, mew=1.8,
            label="standalone (the position alone)")
    ax.plot([p["incremental_usd"] for p in rows], y, "D", ms=5, color="#d62728",
            label="incremental (saved without it)")
    ax.set_yticks(y, [f"{p['instrument']}  ({p['quantity']:+,.4g})" for p in rows], fontsize=8.5)
    ax.axvline(0, color="black", lw=0.6)
    ax.xaxis.set_major_formatter(lambda v, _: _usd(v))
    ax.set_xlabel("initial margin (USD)")
    total = attr.get("initial_margin_usd", 0.0)
    ax.set_title(f"Largest contributors to initial margin ({_usd(total)} USD, {attr.get('model', '')})",
                 loc="left", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def liquidation_chart(explanation: Any) -> bytes | None:
    """The scenario chart: per underlying, equity (moving with the book's P&L) and maintenance
    margin against the index move; one panel for the vol shift; the liquidation points marked."""
    liq = _as_dict(explanation).get("liquidation") or {}
    curves = liq.get("curves") or {}
    if not curves:
        return None
    names = list(curves)
    fig = Figure(figsize=(11, 3.4 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    points = liq.get("points") or []
    for ax, name in zip(axes, names):
        data = np.asarray(curves[name], dtype=float).reshape(-1, 3)
        vol = name == "vol"
        scale = 100.0
        move, equity, mm = data[:, 0] * scale, data[:, 1], data[:, 2]
        ax.plot(move, equity, "-", color=_EQUITY, lw=2, label="equity (with the book's P&L)")
        ax.plot(move, mm, "-", color=_MM, lw=2, label="maintenance margin")
        ax.fill_between(move, equity, mm, where=mm > equity, color=_MM, alpha=0.12, lw=0,
                        label="maintenance above equity")
        for p in points:
            family = "vol" if p["kind"] == "vol" else f"{p['underlying']} index"
            if family != name or p["move"] is None:
                continue
            x = p["move"] * scale
            ax.axvline(x, color=_LIQ, ls="--", lw=1.2)
            unit = " vol pts" if vol else "%"
            ax.annotate(f"{x:+.2f}{unit}", (x, p["maintenance_margin_usd"] or 0.0), fontsize=8,
                        color=_LIQ, xytext=(4, 6), textcoords="offset points")
        ax.axvline(0, color="black", lw=0.4, alpha=0.5)
        ax.set_xlabel("vol shift (vol points, every option)" if vol else f"{name} move (%)")
        ax.set_ylabel("USD")
        ax.yaxis.set_major_formatter(lambda v, _: _usd(v))
        ax.set_title(f"{'Implied vol' if vol else name}: equity and maintenance margin", loc="left",
                     fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="best")
    fig.subplots_adjust(hspace=0.45)
    return _png(fig)


def explain_charts(explanation: Any) -> dict[str, bytes]:
    """Every chart that applies, by name (``contributors``, ``liquidation``)."""
    out = {}
    for name, draw in (("contributors", contributors_chart), ("liquidation", liquidation_chart)):
        png = draw(explanation)
        if png is not None:
            out[name] = png
    return out


# --------------------------------------------------------------------------- HTML
def _qty(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isinf(v)):
        return "unbounded"
    return _num(v, 6)


def render_explain_html(explanation: Any, *, charts: Mapping[str, bytes] | None = None,
                        capacity_rows: int = 60) -> str:
    """The explanation as one HTML page (charts embedded). The capacity table shows the book's
    instruments and then the first ``capacity_rows`` others; the JSON has every row."""
    d = _as_dict(explanation)
    charts = explain_charts(d) if charts is None else charts
    m, attr = d["margin"], d["attribution"]
    cards = [("initial margin", f"{m['initial_margin_usd']:,.2f} USD"),
             ("maintenance margin", f"{m['maintenance_margin_usd']:,.2f} USD")]
    if d.get("equity_usd") is not None:
        cards.append(("equity", f"{d['equity_usd']:,.2f} USD"))
        cards.append(("equity over initial margin", f"{d['equity_usd'] - m['initial_margin_usd']:,.2f} USD"))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>Margin explained ({_e(d['model'])})</title>",
           f"<style>{_CSS}</style></head><body><main>",
           "<h1>Margin explained</h1>", f'<p class="meta">model <b>{_e(d["model"])}</b></p>',
           '<div class="cards">']
    out += [f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
            for k, v in cards]
    out.append("</div>")

    out.append("<h2>What drives the margin</h2>")
    if "contributors" in charts:
        out.append('<p class="small">Bars: each position\'s marginal (Euler) contribution, quantity '
                   "times the derivative of margin; they add up to the margin where the model is "
                   "positively homogeneous. Circles: the position's margin alone. Diamonds: the "
                   "margin the book would save without it.</p>")
        out.append(_img("contributors", charts["contributors"], "largest contributors"))
    comps = attr.get("components") or []
    out.append(_table([("pool", False), ("component", False), ("margin (USD)", True),
                       ("sum of contributions (USD)", True), ("residual (USD)", True),
                       ("derivative", False), ("why a residual", False)],
                      [[_e(c["pool"]), _e(c["component"]), _num(c["value_usd"]),
                        _num(c["marginal_sum_usd"]), _num(c["residual_usd"]), _e(c["method"]),
                        _e(c["note"])] for c in comps]))
    positions = sorted(attr.get("positions") or [], key=lambda p: -p["marginal_usd"])
    out.append(_table([("instrument", False), ("pool", False), ("quantity (coin)", True),
                       ("standalone (USD)", True), ("incremental (USD)", True),
                       ("marginal (USD)", True)],
                      [[_e(p["instrument"]), _e(p["pool"]), _num(p["quantity"], 6, sign=True),
                        _num(p["standalone_usd"]), _num(p["incremental_usd"]),
                        _num(p["marginal_usd"])] for p in positions]))

    liq = d.get("liquidation")
    out.append("<h2>Distance to liquidation</h2>")
    if liq:
        out.append('<p class="small">The index move of each underlying, and the parallel shift of '
                   "every option's implied vol, at which maintenance margin would exceed the equity "
                   "(equity moving with the book's P&amp;L; full revaluation, margin recomputed at "
                   "the moved market).</p>")
        if "liquidation" in charts:
            out.append(_img("liquidation", charts["liquidation"], "scenario chart"))
        rows = []
        for p in liq["points"]:
            unit = "vol points" if p["kind"] == "vol" else "%"
            move = "" if p["move"] is None else f"{100 * p['move']:+.3f} {unit}"
            searched = f"{100 * p['searched_to']:+.1f} {unit}"
            rows.append([_e(p["shock"]), _e(move or "beyond the range searched"), _e(searched),
                         _num(p["equity_usd"]), _num(p["maintenance_margin_usd"]), _e(p["status"])])
        out.append(_table([("shock", False), ("move at liquidation", False), ("searched to", False),
                           ("equity there (USD)", True), ("maintenance there (USD)", True),
                           ("status", False)], rows))
    else:
        out.append("<p>Give the account's equity to compute it.</p>")

    cap = d.get("capacity")
    out.append("<h2>Capacity</h2>")
    if cap:
        rows_all = cap["instruments"]
        held = [r for r in rows_all if r["position"]]
        rest = [r for r in rows_all if not r["position"]]
        shown = held + rest[:capacity_rows]
        out.append(f'<p class="small">The largest quantity of each instrument that can be bought or '
                   f"sold before initial margin reaches {cap['budget_usd']:,.2f} USD (or a limit "
                   f"breaks). {len(shown)} of {len(rows_all)} instruments shown (the book's first); "
                   "explain.json has all.</p>")
        out.append(_table([("instrument", False), ("position (coin)", True), ("buy up to (coin)", True),
                           ("limited by", False), ("sell up to (coin)", True), ("limited by", False),
                           ("method", False)],
                          [[_e(r["instrument"]), _num(r["position"], 6, sign=True), _qty(r["buy_max"]),
                            _e(r["buy_limited_by"]), _qty(r["sell_max"]), _e(r["sell_limited_by"]),
                            _e(r["method"])] for r in shown]))
    else:
        out.append("<p>Give the account's equity or a margin budget to compute it.</p>")
    notes = d.get("notes") or []
    if notes:
        out += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"]
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="chart-{_e(name)}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def write_explanation(explanation: Any, folder: str | Path) -> dict[str, Path]:
    """Write ``explain.json``, ``explain.html`` (self-contained) and the charts as PNG files
    (``contributors.png``, ``liquidation.png``, each when it applies). Returns the paths by kind."""
    folder = Path(folder)
    try:
        d = _as_dict(explanation)
        paths = {"json": folder / "explain.json"}
        atomic_write_text(paths["json"], json.dumps(d, indent=1))
        pngs = explain_charts(d)
        for name, data in pngs.items():
            paths[name] = folder / f"{name}.png"
            atomic_write_bytes(paths[name], data)
        paths["html"] = folder / "explain.html"
        atomic_write_text(paths["html"], render_explain_html(d, charts=pngs))
        return paths
    except OSError as exc:
        from ..errors import OutputError
        where = exc.filename if isinstance(exc.filename, str) else str(folder)
        raise OutputError(f"cannot write the explanation ({exc.strerror or type(exc).__name__})",
                          source=where, field="out") from None


__all__ = ["contributors_chart", "explain_charts", "liquidation_chart", "render_explain_html",
           "write_explanation"]
