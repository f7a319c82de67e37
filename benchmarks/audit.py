"""The randomised audit of issue 8, with the whole breakdown: counts by outcome and by violation
category (with examples), and the cached-vs-fresh property over snapshot sequences.

    python benchmarks/audit.py [--cases 400] [--sequences 200] [--start 0] [--examples 3]

The generators and the independent checker are in tests/rebalance/_audit.py (the same seeds as
tests/rebalance/test_audit.py).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.optimize import _audit as A  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--sequences", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    t0 = time.perf_counter()
    results = [A.run_case(A.make_case(s)) for s in range(args.start, args.start + args.cases)]
    summary = A.summarise(results, n_examples=args.examples)
    print(A.format_report(summary))
    fails = Counter()
    for r in results:
        for f in r.findings:
            if f.category == "failed_to_deliver":
                fails[(r.case.model_name, (r.case.spec.get("lots") or {}).get("mode", "none"),
                       re.sub(r"\d[\d,.]*", "#", f.detail)[:140])] += 1
    if fails:
        print("\nfailed_to_deliver by model, lots mode and message:")
        for k, v in fails.most_common():
            print(f"  {v:4d}  {k}")
    print(f"audit: {time.perf_counter() - t0:.1f} s")

    t1 = time.perf_counter()
    bad: list[str] = []
    for s in range(args.start, args.start + args.sequences):
        bad += A.run_sequence(A.make_sequence(s))
    seqs = {b.split(" ")[0] for b in bad}
    kinds = Counter()
    for b in bad:
        body = b.split("] ", 1)[1]
        kinds["raw exception" if "raw exception" in body else
              "error vs answer" if body.startswith("cached") and ("| fresh" in body) and
              ("Proposal" in body or "Error" in body or "Infeasible" in body or "Failed" in body) else
              "status" if body.startswith("status") else "trades" if body.startswith("trade") else
              "margin after"] += 1
    print(f"\ncached vs fresh: {len(bad)} differing answers in {len(seqs)} of {args.sequences} sequences "
          f"({dict(kinds)}); {time.perf_counter() - t1:.1f} s")
    for b in bad[: args.examples * 3]:
        print("   ", b[:600])


if __name__ == "__main__":
    main()
