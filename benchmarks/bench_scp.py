"""Sequential convex programming on Derive PM2 books: iterations, final IM and wall time, before
(a git revision, default the commit before the trust-region SCP) against the working tree.

Every golden case (``MARGINOPT_DERIVE_CASES``, else ``../shared/data/derive-pm2``) is optimised
with the spec of ``tests/derive/test_engine.py`` (the held universe, no spread, delta within 0.5
and vega within 200 of the book's, at most 1 contract per trade), and a three-account desk
(``--desk``: two Deribit PM subaccounts and a Derive account built from case 63) is allocated.
Each side runs in its own interpreter: the revision's ``src`` is exported with ``git archive``
(read-only) into a temporary folder and put first on ``PYTHONPATH``.

    python benchmarks/bench_scp.py [--before 486e74a] [--cases 63,43] [--repeats 3] [--no-desk]

Columns: linearised solves (the SCP's iterations), initial margin after (USD), its change
against before (negative: the new SCP ends lower), best wall time of the optimize call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = Path(os.environ.get("MARGINOPT_DERIVE_CASES") or REPO.parent / "shared/data/derive-pm2")
ITERATIONS = re.compile(r"(\d+) linearised solve")


def _spec(und: str) -> dict:
    return {"universe": "held", "costs": {"spread": False},
            "limits": {und: {"delta": 0.5, "vega": 200.0, "relative": True}},
            "trade_bounds": {"max_quantity": 1.0}}


def _iterations(notes) -> int | None:
    found = [int(m.group(1)) for n in notes for m in [ITERATIONS.search(n)] if m]
    return sum(found) if found else None


def worker(stems: list[str], repeats: int, desk: bool) -> None:
    """One side: one JSON line per case (and one for the desk) on stdout."""
    import marginopt
    from marginopt.derive import load_case_as_book

    for stem in stems:
        row: dict = {"case": stem}
        try:
            book, market, model = load_case_as_book(CASES / f"{stem}.json")
            (und,) = market.index_prices
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                p = marginopt.optimize(book, market, model, spec=_spec(und))
                best = min(best, time.perf_counter() - t)
            row.update(status=str(p.status), before=p.margin_before.initial_margin_usd,
                       after=p.margin_after.initial_margin_usd, iterations=_iterations(p.notes),
                       seconds=best)
        except Exception as exc:  # a case the optimizer refuses: reported, not fatal
            row.update(status=f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
        print(json.dumps(row), flush=True)
    if desk:
        print(json.dumps(_desk(repeats)), flush=True)


def _desk(repeats: int) -> dict:
    """Two Deribit PM subaccounts (sample market) and a Derive account (case 63's book, market
    and account), a desk limit on BTC delta: the Derive block enters by SCP."""
    import marginopt as mo
    from marginopt.allocate import Account, allocate
    from marginopt.cli import sample_paths
    from marginopt.derive import load_case_as_book

    market = mo.load_market(sample_paths()["market"])
    book, dmarket, dmodel = load_case_as_book(CASES / "test_63_general_random_3.json")
    (und,) = dmarket.index_prices
    accounts = [
        Account.build("A", model="deribit-pm", portfolio={"BTC-PERPETUAL": 2.0}, market=market,
                      spec={"universe": "held"}),
        Account.build("B", model="deribit-pm", portfolio={"BTC-25JUN27": -1.0}, market=market,
                      spec={"universe": "held"}),
        Account.build("D", model=dmodel, portfolio=book, market=dmarket, venue="derive",
                      spec=_spec(und)),
    ]
    rules = {"moves": {"instruments": ["BTC-PERPETUAL", "BTC-25JUN27"]}, "split_savings": False}
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        al = allocate(accounts, rules)
        best = min(best, time.perf_counter() - t)
    return {"case": "desk: 2 Deribit PM + Derive case 63", "status": str(al.status),
            "before": al.margin_before_usd, "after": al.margin_after_usd,
            "iterations": _iterations(al.notes), "seconds": best}


def _side(src: Path, args: argparse.Namespace, stems: list[str]) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats),
           "--cases", ",".join(stems)] + ([] if args.desk else ["--no-desk"])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in rows}


def _fmt(r: dict | None) -> tuple[str, str, str]:
    if r is None or "after" not in r:
        return "-", (r or {}).get("status", "-")[:30], "-"
    it = "-" if r["iterations"] is None else str(r["iterations"])
    return it, f"{r['after']:,.2f}", f"{r['seconds']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="486e74a", help="git revision of the 'before' side")
    ap.add_argument("--cases", default="", help="comma-separated case numbers or stems (default: all)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-desk", dest="desk", action="store_false")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    every = sorted(p.stem for p in CASES.glob("*.json"))
    stems = every
    if args.cases:
        want = [c.strip() for c in args.cases.split(",") if c.strip()]
        stems = [s for s in every if any(s == w or s.startswith(f"test_{w}_") for w in want)]
    if args.worker:
        worker(stems, args.repeats, args.desk)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "before.tar"
        subprocess.run(["git", "archive", "--format=tar", f"--output={archive}", args.before, "src"],
                       cwd=REPO, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        old = _side(Path(tmp) / "src", args, stems)
    new = _side(REPO / "src", args, stems)
    print(f"SCP on Derive books: before = {args.before}, after = working tree "
          f"(best of {args.repeats}; iterations = linearised solves)\n")
    head = f"{'case':<58} {'margin before':>14} | {'it':>3} {'IM after':>14} {'s':>7} | " \
           f"{'it':>3} {'IM after':>14} {'s':>7} | {'IM change':>11} {'time x':>7}"
    print(f"{'':<58} {'':>14} | {'before':^26} | {'after':^26} |")
    print(head)
    print("-" * len(head))
    worse = 0
    for case in [*stems, *(k for k in new if k not in stems)]:
        o, n = old.get(case), new.get(case)
        if n is None and o is None:
            continue
        base = (n or o or {}).get("before")
        change = ratio = "-"
        if o and n and "after" in o and "after" in n:
            d = n["after"] - o["after"]
            change = f"{d:+,.2f}"
            worse += d > 1e-6 * max(abs(o["after"]), 1.0)
            ratio = f"{n['seconds'] / max(o['seconds'], 1e-9):.2f}"
        it0, im0, s0 = _fmt(o)
        it1, im1, s1 = _fmt(n)
        print(f"{case[:58]:<58} {'-' if base is None else f'{base:,.2f}':>14} | {it0:>3} {im0:>14} {s0:>7} | "
              f"{it1:>3} {im1:>14} {s1:>7} | {change:>11} {ratio:>7}")
    ran = [c for c in new if "iterations" in new[c] and new[c]["iterations"] is not None]
    for side, rows in (("before", old), ("after", new)):
        its = [rows[c]["iterations"] for c in ran if c in rows and rows[c].get("iterations") is not None]
        secs = [rows[c]["seconds"] for c in ran if c in rows and "seconds" in rows[c]]
        if its:
            print(f"\n{side}: {len(its)} runs by SCP, iterations mean {sum(its) / len(its):.2f}, "
                  f"max {max(its)}; total time {sum(secs):.2f} s", end="")
    print(f"\ncases where the new SCP ends with a higher margin than before: {worse}")


if __name__ == "__main__":
    main()
