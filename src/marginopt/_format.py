"""How numbers, units and statuses read in reports (Markdown, HTML, the CLI): fixed decimals (never
``3.88578e-16`` or ``1.17e+05``), solver dust shown as zero, every value with its unit, every
status in words."""

from __future__ import annotations

import math
from typing import Any

#: each proposal status in words (the README's table says the same)
STATUS_WORDS = {
    "optimal": "the trades lower the initial margin and keep every limit",
    "no_trade": "no trade is proposed: nothing lowers the margin enough within the limits "
                "(the reason says why)",
    "restores_limits": "the book broke a limit; the trades bring it back inside, which may "
                       "cost margin",
}


def status_words(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def num(v: Any, decimals: int = 2, *, sign: bool = False) -> str:
    """``v`` with thousands separators and fixed decimals; values that round to zero are 0."""
    if v is None:
        return ""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return "unbounded" if math.isinf(x) else "n/a"
    if abs(x) < 0.5 * 10.0 ** -decimals:
        x = 0.0
    return format(x, f"{'+' if sign and x else ''},.{decimals}f")


def price_unit(instrument_name: str) -> str:
    """The unit a Deribit price is quoted in: coin-settled options in their coin (BTC, ETH),
    USDC-settled contracts in USDC, coin-settled futures and perpetuals in USD."""
    from .errors import InputError
    from .instruments import parse_instrument
    try:
        inst = parse_instrument(instrument_name)
    except InputError:
        return ""
    if inst.settlement.value == "linear":
        return "USDC"
    return inst.underlying if inst.is_option else "USD"


def price_decimals(unit: str) -> int:
    return 2 if unit in ("USD", "USDC") else 4


def limit_unit(name: str) -> str:
    """The unit of a greek limit from its name (``BTC.delta``, ``ETH.vega[0-30d] (relative)``,
    ``BTC.delta_usd``)."""
    und, _, rest = name.partition(".")
    if rest.startswith("delta_usd"):
        return "USD"
    if rest.startswith("delta"):
        return und or "coin"
    if rest.startswith("vega"):
        return "USD per vol point"
    if rest.startswith("gamma"):
        return f"{und or 'coin'} per 1% move"
    return ""


def limit_decimals(name: str) -> int:
    _, _, rest = name.partition(".")
    if rest.startswith(("delta_usd", "vega")):
        return 2
    if rest.startswith("gamma"):
        return 6
    return 4


def bound_unit(name: str) -> str:
    """The unit of a trade bound (``turnover_usd``, ``max_instruments``, ``<instrument>.buy_max``)."""
    if name == "turnover_usd":
        return "USD"
    if name == "max_instruments":
        return "instruments"
    return "coin"


def bound_decimals(name: str) -> int:
    return {"turnover_usd": 2, "max_instruments": 0}.get(name, 6)
