"""Matplotlib charts of a proposal, drawn from its ``to_dict()`` form (so a saved proposal.json
can be charted too). Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas: no
pyplot state, safe in worker threads and processes, no display needed.

Each function returns PNG bytes, or ``None`` when the proposal has nothing to draw.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

#: Deribit-style risk-matrix labels: "+8.00% vol up", "-66% vol up (extended)"
_LABEL = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)%\s+vol\s+(\w+)(\s+\(extended\))?\s*$")
_VOL_COLOURS = {"down": "#1f77b4", "flat": "#7f7f7f", "none": "#7f7f7f", "up": "#d62728"}
_BEFORE, _AFTER = "#8c8c8c", "#1a4f8b"
_DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _usd(v: float) -> str:
    a = abs(v)
    if a < 0.005:  # solver dust on a closed position: a cent is the resolution of a USD figure
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:,.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:,.1f}k"
    return f"{v:,.0f}" if a >= 100 else f"{v:,.3g}"


# --------------------------------------------------------------------------- scenario P&L
def parse_grid(labels: Sequence[str]) -> list[tuple[float, str, bool]] | None:
    """``(move %, vol state, extended)`` per label, or None if any label is not a grid label."""
    out = []
    for lab in labels:
        m = _LABEL.match(str(lab))
        if m is None:
            return None
        out.append((float(m[1]), m[2].lower(), bool(m[3])))
    return out or None


def _pool_pnl(pool: Mapping[str, Any] | None) -> tuple[list[str], np.ndarray] | None:
    if not pool or not pool.get("scenario_labels"):
        return None
    pnl = np.asarray(pool.get("scenario_pnl") or [], dtype=float) * float(pool.get("usd_rate", 1.0))
    labels = list(pool["scenario_labels"])
    if pnl.size != len(labels):
        return None
    return labels, pnl


def _series(labels: list[str], pnl: np.ndarray, extended: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    grid = parse_grid(labels)
    assert grid is not None
    out: dict[str, list[tuple[float, float]]] = {}
    for (move, vol, ext), p in zip(grid, pnl):
        if ext == extended:
            out.setdefault(vol, []).append((move, p))
    return {v: (np.array([m for m, _ in pts]), np.array([p for _, p in pts]))
            for v, pts in ((v, sorted(pts)) for v, pts in out.items())}


def scenario_pnl_chart(proposal: Mapping[str, Any]) -> bytes | None:
    """Per pool, scenario P&L in USD against the price move: one line per vol state, the book
    before dashed and after solid; the extended (tail) moves in a panel of their own. Models whose
    scenarios are not a price grid get their sorted scenario P&L instead."""
    before = proposal["margin_before"]["by_underlying"]
    after = proposal["margin_after"]["by_underlying"]
    pools = [p for p in sorted(set(before) | set(after))
             if _pool_pnl(before.get(p)) or _pool_pnl(after.get(p))]
    if not pools:
        return None
    fig = Figure(figsize=(11, 3.6 * len(pools)))
    gs = fig.add_gridspec(len(pools), 3, hspace=0.55, wspace=0.28)
    for row, pool in enumerate(pools):
        b, a = _pool_pnl(before.get(pool)), _pool_pnl(after.get(pool))
        labels = (b or a)[0]
        grid = parse_grid(labels)
        missing = "" if (b and a) else (" (no positions before)" if not b else " (no positions after)")
        if grid is None:
            ax = fig.add_subplot(gs[row, :])
            for data, style, colour, name in ((b, "--", _BEFORE, "before"), (a, "-", _AFTER, "after")):
                if data:
                    ax.plot(np.arange(1, data[1].size + 1), np.sort(data[1]), style, color=colour,
                            lw=1.8, label=name)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xlabel("scenario, sorted from worst to best")
            ax.set_ylabel("P&L (USD)")
            ax.set_title(f"{pool}: scenario P&L, sorted{missing}", loc="left", fontsize=11)
            ax.legend(fontsize=8, frameon=False)
            ax.grid(alpha=0.3)
            ax.yaxis.set_major_formatter(lambda v, _: _usd(v))
            continue
        has_ext = any(e for _, _, e in grid)
        ax = fig.add_subplot(gs[row, :2] if has_ext else gs[row, :])
        vols_seen: list[str] = []
        for data, style, width in ((b, "--", 1.4), (a, "-", 2.0)):
            if not data:
                continue
            for vol, (x, y) in _series(*data, extended=False).items():
                ax.plot(x, y, style, color=_VOL_COLOURS.get(vol, "#2ca02c"), lw=width, marker=".", ms=4)
                if vol not in vols_seen:
                    vols_seen.append(vol)
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.4, alpha=0.5)
        ax.set_xlabel("price move (%)")
        ax.set_ylabel("P&L (USD)")
        ax.set_title(f"{pool}: risk-matrix P&L{missing}", loc="left", fontsize=11)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(lambda v, _: _usd(v))
        handles = [Line2D([], [], color=_VOL_COLOURS.get(v, "#2ca02c"), lw=2, label=f"vol {v}")
                   for v in vols_seen]
        handles += [Line2D([], [], color="black", ls="--", lw=1.4, label="before"),
                    Line2D([], [], color="black", ls="-", lw=2.0, label="after")]
        ax.legend(handles=handles, fontsize=8, frameon=False, ncol=len(handles), loc="upper center",
                  bbox_to_anchor=(0.5, -0.2))
        if has_ext:
            ex = fig.add_subplot(gs[row, 2])
            moves: list[float] = []
            for data in (b, a):
                if data:
                    for _, (x, _y) in _series(*data, extended=True).items():
                        moves += [m for m in x.tolist() if m not in moves]
            moves.sort()
            pos = {m: i for i, m in enumerate(moves)}
            for data, style, width in ((b, "--", 1.4), (a, "-", 2.0)):
                if not data:
                    continue
                for vol, (x, y) in _series(*data, extended=True).items():
                    ex.plot([pos[m] for m in x], y, style, color=_VOL_COLOURS.get(vol, "#2ca02c"),
                            lw=width, marker="o", ms=3.5)
            ex.axhline(0, color="black", lw=0.6)
            ex.set_xticks(range(len(moves)), [f"{m:+g}%" for m in moves], fontsize=7, rotation=45)
            ex.set_xlabel("extended moves (undamped)")
            ex.set_title("tail moves", loc="left", fontsize=10)
            ex.grid(alpha=0.3)
            ex.yaxis.set_major_formatter(lambda v, _: _usd(v))
    return _png(fig)


# --------------------------------------------------------------------------- components
def components_chart(proposal: Mapping[str, Any]) -> bytes | None:
    """Initial margin by pool and component in USD, before and after, as paired bars."""
    before = proposal["margin_before"]["by_underlying"]
    after = proposal["margin_after"]["by_underlying"]
    rows: list[tuple[str, float, float]] = []
    for pool in sorted(set(before) | set(after)):
        pb, pa = before.get(pool) or {}, after.get(pool) or {}
        names = list(dict.fromkeys([*(pb.get("components") or {}), *(pa.get("components") or {})]))
        for n in names:
            vb = float((pb.get("components") or {}).get(n, 0.0)) * float(pb.get("usd_rate", 1.0))
            va = float((pa.get("components") or {}).get(n, 0.0)) * float(pa.get("usd_rate", 1.0))
            rows.append((f"{pool}  {n}", vb, va))
    if not rows:
        return None
    rows = rows[::-1]  # first pool on top
    y = np.arange(len(rows))
    fig = Figure(figsize=(11, 1.0 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    h = 0.38
    vb = np.array([r[1] for r in rows])
    va = np.array([r[2] for r in rows])
    ax.barh(y + h / 2, vb, h, color=_BEFORE, label="before")
    ax.barh(y - h / 2, va, h, color=_AFTER, label="after")
    span = max(float(np.max(np.abs(np.r_[vb, va]))), 1e-9)
    for yy, v in [*zip(y + h / 2, vb), *zip(y - h / 2, va)]:
        ax.text(v + 0.01 * span * (1 if v >= 0 else -1), yy, _usd(v), va="center",
                ha="left" if v >= 0 else "right", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    ax.set_xlim(min(0.0, float(np.min(np.r_[vb, va])) * 1.15), span * 1.15)
    ax.xaxis.set_major_formatter(lambda v, _: _usd(v))
    ax.set_xlabel("initial margin (USD)")
    b_tot = proposal["margin_before"]["initial_margin_usd"]
    a_tot = proposal["margin_after"]["initial_margin_usd"]
    ax.set_title(f"Initial margin by component: {_usd(b_tot)} before, {_usd(a_tot)} after (USD)",
                 loc="left", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# --------------------------------------------------------------------------- limits
def _unit(name: str) -> str:
    greek = name.split(".", 1)[-1].split(" ")[0].split("[")[0]
    unit = {"delta": "coin", "vega": "USD per vol point", "gamma": "coin of delta per 1% move"}.get(greek)
    return f" [{unit}]" if unit else ""


def limits_chart(proposal: Mapping[str, Any]) -> bytes | None:
    """Per limit: the allowed interval, the book before (hollow) and after (filled)."""
    limits = list(proposal.get("limits") or [])
    if not limits:
        return None
    fig = Figure(figsize=(11, 0.6 + 0.95 * len(limits)))
    axes = fig.subplots(len(limits), 1, squeeze=False)[:, 0]
    for ax, lim in zip(axes, limits):
        lo, hi = lim.get("lower"), lim.get("upper")
        b, a = float(lim["before"]), float(lim["after"])
        finite = [v for v in (lo, hi, b, a) if v is not None and math.isfinite(v)]
        left, right = min(finite), max(finite)
        pad = 0.12 * (right - left) if right > left else max(abs(right), 1.0) * 0.12
        x0, x1 = left - pad, right + pad
        if lo is None:
            x0 -= pad
        if hi is None:
            x1 += pad
        ax.set_xlim(x0, x1)
        ax.set_ylim(-1, 1)
        band_lo = x0 if lo is None else lo
        band_hi = x1 if hi is None else hi
        ax.axvspan(band_lo, band_hi, ymin=0.3, ymax=0.7, color="#b7dfb9", lw=0)
        for edge in (lo, hi):
            if edge is not None:
                ax.axvline(edge, ymin=0.2, ymax=0.8, color="#2e7d32", lw=1.5)
        breached = bool(lim.get("breached_before"))
        ax.plot([b], [0], "o", ms=9, mfc="white", mec="#c62828" if breached else _BEFORE, mew=2)
        ax.plot([a], [0], "D", ms=8, color=_AFTER)
        if abs(a - b) > 1e-12 * max(abs(a), abs(b), 1.0):
            ax.annotate("", xy=(a, 0.45), xytext=(b, 0.45),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=1))
        ax.set_yticks([])
        for s in ("left", "right", "top"):
            ax.spines[s].set_visible(False)
        ax.tick_params(axis="x", labelsize=8)
        tag = ""
        if lim.get("binding"):
            tag = f"  binding, shadow price {lim.get('shadow_price', 0.0):,.4g} USD/unit"
        if breached:
            tag += "  breached before"
        scale = max(abs(v) for v in finite) or 1.0
        show = lambda v: f"{0.0 if abs(v) < 1e-6 * scale else v:,.4g}"  # noqa: E731 - dust as 0
        ax.set_title(f"{lim['name']}{_unit(lim['name'])}   before {show(b)}  after {show(a)}{tag}", loc="left",
                     fontsize=9, fontweight="bold" if lim.get("binding") else "normal")
    handles = [Line2D([], [], marker="s", ls="", ms=10, color="#b7dfb9", label="allowed"),
               Line2D([], [], marker="o", ls="", ms=8, mfc="white", mec=_BEFORE, mew=2, label="before"),
               Line2D([], [], marker="D", ls="", ms=7, color=_AFTER, label="after")]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.subplots_adjust(hspace=1.6)
    return _png(fig)


CHARTS = {"scenario_pnl": scenario_pnl_chart, "margin_components": components_chart,
          "limits": limits_chart}


def proposal_charts(proposal: Mapping[str, Any]) -> dict[str, bytes]:
    """Every chart that applies to the proposal, by name."""
    out = {}
    for name, draw in CHARTS.items():
        png = draw(proposal)
        if png is not None:
            out[name] = png
    return out
