"""Writes ``derive-market.json``, the example desk's Derive snapshot, from the sample Deribit
snapshot (``src/marginopt/data/sample_market.json``): the BTC options of two expiries again as
Derive's USDC-settled contracts (marks, bids and asks in USD at each option's forward, the same
vols, forwards and open interest) and the USDC perpetual. Run from the repository root:

    python examples/allocate/make_derive_market.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPIRIES = ("27NOV26", "29JAN27")


def main() -> None:
    sample = json.loads((ROOT / "src/marginopt/data/sample_market.json").read_text())
    rows = []
    for r in sample["instruments"]:
        name = r["instrument_name"]
        parts = name.split("-")
        if name == "BTC_USDC-PERPETUAL":
            rows.append(r)
        elif parts[0] == "BTC" and len(parts) == 4 and parts[1] in EXPIRIES:
            f = r["underlying_price"]
            usd = {k: (None if r.get(k) is None else round(r[k] * f, 2))
                   for k in ("mark_price", "bid_price", "ask_price")}
            rows.append({**r, **usd, "instrument_name": "BTC_USDC-" + "-".join(parts[1:])})
    out = {"venue": "derive", "valuation_time": sample["valuation_time"],
           "index_prices": {"BTC": sample["index_prices"]["BTC"]}, "instruments": rows}
    (Path(__file__).parent / "derive-market.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
