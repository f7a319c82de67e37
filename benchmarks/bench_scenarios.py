"""Large user scenario sets: scenario-max and scenario-es solved by scenario generation.

Per case (model, scenarios x instruments), each in its own process so that its peak memory (the
process's maximum resident set) is its own:

- cold: a new Rebalancer optimizes the book, the matrix file read once (a CSV, or a .npy where
  the CSV would be too large to write in reasonable time: ``--npy-from``), the relaxation grown
  until no scenario is violated, every answer verified on the full set;
- warm snapshot: the same Rebalancer on a moved snapshot (index +0.3%, implied vols +0.1 points):
  the matrix is not read again and the active set starts from the last answer's binding set;
- warm book: the same again with three positions resized;
- rounds and the final active set of each (scenarios for scenario-max; for scenario-es the
  scenarios of the exact form it ends in, or its tail cuts where it ends in cuts: tails above
  ``EXACT_MAX_TAIL``, e.g. 100,000 scenarios at 97.5%);
- full LP: in another process, the raw persistent HiGHS model (``NativeProblem``) on the whole LP
  of the same cold case (scenario rows for scenario-max, Rockafellar-Uryasev's row and column per
  scenario for scenario-es): build + both stages, its stage-1 margin beside the generated one.
  Skipped above ``--full-limit`` coefficients (scenarios x instruments), where it does not fit
  this machine's time (or, for scenario-es, memory) budget.

The matrices are synthetic but shaped like a desk's: P&L per unit = delta x a fat-tailed spot
move (BTC and ETH correlated) + gamma + vega x a vol shock (against the spot move, larger at
short expiries) + noise, so the worst scenarios of a hedged book are many and not one.

    python benchmarks/bench_scenarios.py [--quick] [--sizes 1000 5000 20000 100000]
                                         [--instruments 200 1000] [--kinds max es]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- the cases
def make_case(instruments: int, seed: int = 0):
    """Market, book and spec with ``instruments`` names in the universe (the book's and others)."""
    import marginopt as mo
    from marginopt.synthetic import make_book, make_market

    strikes = max(13, int(np.ceil(instruments / 40)))
    market = make_market(strikes_per_expiry=strikes)
    while len(market.instrument_names) < instruments + 60:  # strikes round to the grid: grow
        strikes = int(strikes * 1.2) + 1
        market = make_market(strikes_per_expiry=strikes)
    book = make_book(market, n_structures=28)
    rng = np.random.default_rng(seed)
    others = sorted(n for n in market.instrument_names if n not in book.positions)
    extra = list(rng.choice(others, size=min(instruments - len(book), len(others)), replace=False))
    spec = {"universe": book.names + [str(e) for e in extra],
            "limits": {"BTC": {"delta": [-5, 5]}, "ETH": {"delta": [-30, 30]}},
            "trade_bounds": {"max_open_interest_fraction": 0.25}}
    assert len(spec["universe"]) == instruments, (len(spec["universe"]), instruments)
    return book, market, mo.load_spec(spec)


def scenario_pnl(market, names: list[str], scenarios: int, seed: int = 1) -> np.ndarray:
    """USD P&L per unit, scenarios x names, from a factor model of spot and vol moves."""
    import marginopt as mo

    insts = [mo.parse_instrument(n) for n in names]
    inp = market.pricing_inputs(insts)
    rng = np.random.default_rng(seed)
    s = scenarios
    # spot: Student-t (4 degrees of freedom) daily-ish moves, BTC and ETH correlated 0.8
    z = rng.standard_t(4, (s, 2)) * 0.035
    spot = {"BTC": z[:, 0], "ETH": 0.8 * z[:, 0] + 0.6 * z[:, 1] * 1.3}
    vol_common = rng.normal(0.0, 3.0, s)
    und = np.array([i.underlying for i in insts])
    r = np.column_stack([spot[u] for u in ("BTC", "ETH")])[:, (und == "ETH").astype(int)]
    # vol points: against the spot move, larger at short expiries
    term = 1.0 / np.sqrt(np.maximum(inp.t, 1.0 / 52.0))
    dvol = (-60.0 * r + vol_common[:, None] * (und == "BTC") + 1.2 * vol_common[:, None] * (und == "ETH")) \
        * (0.4 + 0.15 * term)
    delta_usd = inp.coin_delta() * inp.index
    gamma_usd = inp.gamma_coin() * inp.index  # coin delta per 1% x index
    pnl = (r * delta_usd + 0.5 * (100.0 * r) * r * gamma_usd + dvol * inp.vega_usd()
           + rng.normal(0.0, 1.0, (s, len(names))) * 0.0005 * inp.index)
    return pnl


def matrix_file(folder: Path, market, names: list[str], scenarios: int, npy: bool) -> Path:
    """The matrix as a file (columns in sorted order, not the universe's: a user's file is not
    in the optimizer's order), written in blocks of scenarios and kept in ``folder``. A .npy is
    written column-major (as the CSV reader stores a matrix)."""
    cols = sorted(names)
    path = folder / f"pnl_{scenarios}x{len(names)}.{'npy' if npy else 'csv'}"
    if path.exists():
        return path
    tmp = path.with_suffix(".part" + path.suffix)
    block = 10_000
    if npy:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(scenarios, len(cols)),
                                        fortran_order=True)
        for start in range(0, scenarios, block):
            stop = min(start + block, scenarios)
            out[start:stop] = scenario_pnl(market, cols, stop - start, seed=1 + start)
        out.flush()
        del out
        (folder / f"pnl_{scenarios}x{len(names)}.names.json").write_text(json.dumps(cols))
    else:
        import pyarrow as pa
        from pyarrow import csv as pacsv
        writer = None
        for start in range(0, scenarios, block):
            stop = min(start + block, scenarios)
            pnl = scenario_pnl(market, cols, stop - start, seed=1 + start)
            table = pa.table({"scenario": [f"s{i + 1}" for i in range(start, stop)],
                              **{c: pnl[:, j] for j, c in enumerate(cols)}})
            if writer is None:
                writer = pacsv.CSVWriter(str(tmp), table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
    tmp.rename(path)
    return path


def load_model(kind: str, path: Path):
    import marginopt as mo

    if path.suffix == ".npy":
        names = json.loads((path.parent / path.name.replace(".npy", ".names.json")).read_text())
        data = mo.load_model(f"scenario-{kind}").model_dump(exclude={"path"})
        data["currencies"]["ALL"]["initial"][0] |= {"matrix": str(path), "instruments": names}
        return mo.load_model(data)
    return mo.load_model(f"scenario-{kind}", scenario_matrix=path)


def moved(market, factor: float = 1.003):
    import marginopt as mo

    rows = market.rows.copy()
    rows["underlying_price"] *= factor
    rows["mark_iv"] += 0.1
    return mo.MarketSnapshot(market.valuation_time, {u: p * factor for u, p in market.index_prices.items()}, rows)


def resized(book):
    import marginopt as mo

    pos = dict(book.positions)
    for name in sorted(pos)[:3]:
        pos[name] = round(pos[name] * 1.5, 6)
    return mo.Portfolio(pos)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- one case, one process
def child_generated(kind: str, scenarios: int, instruments: int, path: Path) -> dict:
    import marginopt as mo

    book, market, spec = make_case(instruments)
    base = rss_mb()
    model = load_model(kind, path)
    out: dict = {"base_mb": base}
    t = time.perf_counter()
    reb = mo.Rebalancer(model, spec)
    p = reb.optimize(book, market)
    out["cold_s"] = time.perf_counter() - t
    out["cold_timings"] = {k: round(v, 3) for k, v in p.timings.items()}
    out["rounds"] = [sum(reb.scenarios.rounds)]
    out["active"] = [reb.scenarios.sizes]
    out["margin"] = p.margin_after.initial_margin_usd
    out["objective"] = p.margin_after.initial_margin_usd + p.cost_usd
    out["converged"] = not any(n.startswith("scenario generation stopped") for n in p.notes)
    out["margin_before"] = p.margin_before.initial_margin_usd
    out["solver"] = p.solver
    out["status"] = str(p.status)
    out["trades"] = len(p.trades)
    snap = moved(market)
    t = time.perf_counter()
    q = reb.optimize(book, snap)
    out["warm_snapshot_s"] = time.perf_counter() - t
    out["rounds"].append(sum(reb.scenarios.rounds))
    out["active"].append(reb.scenarios.sizes)
    t = time.perf_counter()
    r = reb.optimize(resized(book), snap)
    out["warm_book_s"] = time.perf_counter() - t
    out["rounds"].append(sum(reb.scenarios.rounds))
    out["active"].append(reb.scenarios.sizes)
    for prop in (p, q, r):
        assert prop.verified_by, "every proposal is verified"
    out["peak_mb"] = rss_mb()
    return out


def child_full(kind: str, scenarios: int, instruments: int, path: Path) -> dict:
    """The raw persistent HiGHS model on the whole LP of the cold case."""
    import marginopt as mo
    from marginopt.rebalance._native import NativeProblem, lp_blocks

    book, market, spec = make_case(instruments)
    base = rss_mb()
    model = load_model(kind, path)
    reb = mo.Rebalancer(model, spec)
    t = time.perf_counter()
    data = reb.problem_data(book, market)
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    blocks = lp_blocks(data, reb.spec)
    assert not isinstance(blocks, str), blocks
    lp = NativeProblem(data, reb.spec, blocks)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    answers = lp.solve()
    t_solve = time.perf_counter() - t
    stage1 = answers.stage1
    assert stage1 is not None
    return {"base_mb": base, "data_s": t_data, "build_s": t_build, "solve_s": t_solve,
            "stage1_margin": stage1.objective_margin_usd,
            "stage1_objective": stage1.objective_margin_usd + stage1.cost_usd,
            "shape": [int(lp.num.row_lower.size), int(lp.num.col_lower.size), int(lp.vals.size)],
            "peak_mb": rss_mb()}


def run_child(mode: str, kind: str, s: int, n: int, path: Path, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE), "--child", mode, kind, str(s), str(n), str(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:160]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the table
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,000 and 5,000 scenarios x 200 instruments")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 100000])
    ap.add_argument("--instruments", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--kinds", nargs="+", default=["max", "es"], choices=["max", "es"])
    ap.add_argument("--full-limit", type=float, default=5e6,
                    help="largest scenarios x instruments solved as the whole LP")
    ap.add_argument("--npy-from", type=float, default=5e7,
                    help="matrices of at least this many numbers are given as .npy, not CSV")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "marginopt-bench-scenarios",
                    help="where the matrices are written (and kept for the next run)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, kind, s, n, path = args.child
        fn = child_generated if mode == "generated" else child_full
        print(json.dumps(fn(kind, int(s), int(n), Path(path))))
        return
    if args.quick:
        args.sizes, args.instruments = [1000, 5000], [200]
    args.data.mkdir(parents=True, exist_ok=True)
    print(f"scenario generation vs the whole LP; one process per case; load (1-minute average) "
          f"{os.getloadavg()[0]:.1f} at the start\n")
    head = (f"{'model':>12} {'S x N':>14} {'cold s':>7} {'warm snap':>9} {'warm book':>9} "
            f"{'peak MB':>8} {'rounds (c/ws/wb)':>16} {'active (c/ws/wb)':>18} "
            f"{'full LP s':>9} {'full MB':>8} {'objective gen / full (rel. diff)':>34}")
    print(head)
    print("-" * len(head))
    for n in args.instruments:
        _, market, spec = make_case(n)
        names = spec.universe
        for s in args.sizes:
            path = matrix_file(args.data, market, list(names), s, npy=s * n >= args.npy_from)
            for kind in args.kinds:
                g = run_child("generated", kind, s, n, path, args.timeout)
                f = (run_child("full", kind, s, n, path, args.timeout) if s * n <= args.full_limit
                     else {"error": "skipped"})
                label = f"scenario-{kind}"
                size = f"{s:,} x {n:,}"
                if "error" in g:
                    print(f"{label:>12} {size:>14}  failed: {g['error']}")
                    continue
                rounds = "/".join(str(x) for x in g["rounds"])
                active = "/".join(str(sum(a.values())) for a in g["active"])
                if "error" in f:
                    full_s, full_mb, cmp = f"{f['error']:>9}", f"{'-':>8}", f"{g['objective']:>34,.4f}"
                else:
                    full_s = f"{f['data_s'] + f['build_s'] + f['solve_s']:9.2f}"
                    full_mb = f"{f['peak_mb']:8.0f}"
                    rel = abs(g["objective"] - f["stage1_objective"]) / max(abs(f["stage1_objective"]), 1.0)
                    cmp = f"{g['objective']:,.4f} / {f['stage1_objective']:,.4f} ({rel:.1e})"
                print(f"{label:>12} {size:>14} {g['cold_s']:7.2f} {g['warm_snapshot_s']:9.2f} "
                      f"{g['warm_book_s']:9.2f} {g['peak_mb']:8.0f} {rounds:>16} {active:>18} "
                      f"{full_s} {full_mb} {cmp:>34}")
                print(f"{'':>12} {'':>14} cold: {g['cold_timings']}; {path.suffix[1:]}; "
                      f"{g['solver']}, {g['trades']} trades, margin {g['margin_before']:,.2f} -> "
                      f"{g['margin']:,.2f}" + ("" if g["converged"] else
                                               "; NOT CONVERGED in the time limit (verified, no claim)"))
    print(f"\nload (1-minute average) {os.getloadavg()[0]:.1f} at the end")
    print("\ncold = read the matrix + bind + generate + verify + the proposal (a new Rebalancer); "
          "warm = the same Rebalancer on a moved snapshot, then on a resized book; peak MB = the "
          "process's maximum resident set (Python, the case and the matrix included); full LP = "
          "raw persistent HiGHS on the whole LP (data + build + both stages); objective = margin + "
          "cost: gen = the proposal's (calculator), full = the whole LP's stage-1 optimum "
          "(margins alone may differ where the least-trading stage trades margin for cost)")


if __name__ == "__main__":
    main()
