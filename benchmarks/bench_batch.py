"""Batch throughput (a script, not a test): accounts per second in-process and on a local Dask
cluster, measured side by side on the same accounts in one run.

    /work/venv/bin/python benchmarks/bench_batch.py [--accounts 200] [--workers 2] [--structures 28]

Accounts are sample-sized books (``make_book(n_structures=28)``: about 44 positions, as the
embedded sample) with different seeds, on the embedded sample market and spec, under
deribit-pm, reports off (the job default). "wall" counts everything a user waits for (reading
inputs, starting the cluster, writing every file and the summaries); "compute" counts from the
first account started (cluster up) to the last result stored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from marginopt import load_market
from marginopt.batch import run_batch
from marginopt.cli import sample_paths
from marginopt.synthetic import make_book


def make_job(root: Path, n: int, structures: int) -> None:
    paths = sample_paths()
    market = load_market(paths["market"])
    (root / "books").mkdir(parents=True)
    for i in range(n):
        book = make_book(market, n_structures=structures, seed=5000 + i)
        lines = ["instrument,quantity"] + [f"{k},{v!r}" for k, v in book.positions.items()]
        (root / "books" / f"acct_{i:04d}.csv").write_text("\n".join(lines) + "\n")
    shutil.copy(paths["market"], root / "market.json")
    shutil.copy(paths["spec"], root / "spec.yaml")


def job_file(root: Path, out: str) -> Path:
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump({"accounts_dir": "books", "market": "market.json",
                                    "model": "deribit-pm", "spec": "spec.yaml", "output_dir": out}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--structures", type=int, default=28)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_job(root, args.accounts, args.structures)
        sizes = [sum(1 for _ in open(p)) - 1 for p in (root / "books").glob("*.csv")]
        print(f"{args.accounts} accounts of {min(sizes)}-{max(sizes)} positions (mean "
              f"{sum(sizes) / len(sizes):.1f}) generated in {time.perf_counter() - t:.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        runs = [("in-process", dict()), (f"Dask, {args.workers} workers", dict(workers=args.workers))]
        rows = []
        for label, kwargs in runs:
            r = run_batch(job_file(root, label.split(",")[0].lower().replace(" ", "_").replace("-", "_")),
                          progress=False, **kwargs)
            assert len(r.computed) == args.accounts and r.n_errors == 0, r.errors
            rows.append((label, r.seconds, r.compute_seconds))
        print(f"\n{'mode':<18} {'wall s':>8} {'accounts/s':>11} {'compute s':>10} {'accounts/s':>11}")
        for label, wall, comp in rows:
            print(f"{label:<18} {wall:>8.1f} {args.accounts / wall:>11.2f} {comp:>10.1f} "
                  f"{args.accounts / comp:>11.2f}")
        base = rows[0]
        for label, wall, comp in rows[1:]:
            print(f"\nspeed-up of {label} over in-process: {base[1] / wall:.2f}x wall, "
                  f"{base[2] / comp:.2f}x compute")


if __name__ == "__main__":
    main()
