"""Batch jobs: 200 generated accounts in-process and on a real 2-worker Dask cluster, bad accounts
reported, identical results, and resume after an interrupted run.

To keep the wall time down each account is optimised once per mode: the in-process run is
interrupted after 100 accounts (``max_accounts``) and resumed, and its final state is checked
against the clean, uninterrupted Dask run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marginopt.batch import SUMMARY_COLUMNS, run_batch

from .conftest import N_ACCOUNTS, SPECIAL, account_name, write_job

OK_STATUSES = {"optimal", "no_trade", "restores_limits"}


def proposals(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "accounts").glob("*/proposal.json"))}


def assert_same_results(a: pd.DataFrame, b: pd.DataFrame, out_a: Path, out_b: Path) -> None:
    """Same statuses, errors and hashes; margins and every trade equal to 1e-9."""
    a, b = a.set_index("account").sort_index(), b.set_index("account").sort_index()
    assert list(a.index) == list(b.index)
    for col in ("status", "error", "error_class", "input_hash"):
        assert (a[col] == b[col]).all(), col
    for col in ("margin_before_usd", "margin_after_usd", "margin_saved_usd", "n_trades"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), rtol=1e-9, atol=1e-9)
    pa, pb = proposals(out_a), proposals(out_b)
    assert set(pa) == set(pb) == set(a.index[a["status"] != "error"])
    for name in pa:
        x, y = pa[name], pb[name]
        for side in ("margin_before", "margin_after"):
            np.testing.assert_allclose(x[side]["initial_margin_usd"], y[side]["initial_margin_usd"],
                                       rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(x[side]["maintenance_margin_usd"],
                                       y[side]["maintenance_margin_usd"], rtol=1e-9, atol=1e-9)
        assert [t["instrument_name"] for t in x["trades"]] == [t["instrument_name"] for t in y["trades"]]
        np.testing.assert_allclose([t["quantity"] for t in x["trades"]],
                                   [t["quantity"] for t in y["trades"]], rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def interrupted(batch_dir):
    """An in-process run stopped after 100 accounts, then resumed to completion."""
    root, _ = batch_dir
    job = write_job(root, "out_inprocess", manifest="accounts.csv")
    first = run_batch(job, max_accounts=100, progress=False)
    # a run killed mid-write leaves temporary files behind: they are never read as results
    half = root / "out_inprocess" / "accounts" / first.pending[0]
    half.mkdir(parents=True)
    (half / ".proposal.json.x1.tmp").write_text('{"status": "optim')
    second = run_batch(job, progress=False)
    return first, second


@pytest.fixture(scope="module")
def inprocess(interrupted):
    return interrupted[1]


@pytest.fixture(scope="module")
def on_dask(batch_dir):
    root, _ = batch_dir
    return run_batch(write_job(root, "out_dask", manifest="accounts.csv"), workers=2,
                     progress=False)


def test_in_process_runs_every_account_and_reports_the_bad_ones(batch_dir, inprocess):
    root, bad = batch_dir
    s = inprocess.summary
    out = root / "out_inprocess"
    assert list(s.columns) == SUMMARY_COLUMNS
    assert len(s) == N_ACCOUNTS and (s["status"] != "pending").all()
    errors = s[s["status"] == "error"].set_index("account")
    assert dict(errors["error_class"]) == bad
    for name, row in errors.iterrows():
        assert row["error"] and "\n" not in row["error"]
        assert not (out / "accounts" / name / "proposal.json").exists()
        assert json.loads((out / "accounts" / name / "result.json").read_text())["status"] == "error"
    assert "quantity is not a number" in errors.loc["acct_032", "error"]
    assert "acct_032.csv" in errors.loc["acct_032", "error"]
    assert "expired" in errors.loc["acct_057", "error"]
    assert "SOL" in errors.loc["acct_082", "error"]
    good = s[s["status"] != "error"]
    assert set(good["status"]) <= OK_STATUSES and len(good) == N_ACCOUNTS - len(bad)
    assert (good["margin_before_usd"] > 0).all()
    np.testing.assert_allclose(good["margin_saved_usd"], good["margin_before_usd"] - good["margin_after_usd"])
    assert (good["input_hash"].str.len() == 64).all() and good["input_hash"].is_unique
    # files: per account JSON + Markdown (no report by default), summaries, chart, log
    for name in good["account"]:
        folder = out / "accounts" / name
        assert (folder / "proposal.json").exists() and (folder / "proposal.md").exists()
        assert not (folder / "report.html").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), s)
    csv = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(csv["account"]) == list(s["account"])
    assert (out / "margin_saved.png").read_bytes()[:4] == b"\x89PNG"
    log = (out / "run.log").read_text()
    # each account computed exactly once (a spec that cannot be read rejects its account up front)
    assert log.count(" computed acct_") == N_ACCOUNTS - 1
    assert log.count(f" rejected {account_name(167)}: error SpecError") == 2   # once per run
    assert not list(out.rglob("*.tmp"))


def test_a_1e20_book_a_list_shaped_spec_and_a_binary_book_are_reported_in_plain_words(
        batch_dir, inprocess, on_dask):
    """Issue 10: among 200 accounts, a 1e20 book (once a native crash), a spec that is a YAML
    list (once a bare ValueError ending the run) and a binary portfolio: both runs finish, each
    of the three is its own one-line error naming its file, and the other 197 are identical."""
    for result in (inprocess, on_dask):
        s = result.summary.set_index("account")
        assert len(s) == N_ACCOUNTS and (s["status"] != "pending").all()
        for i, (cls, words) in SPECIAL.items():
            row = s.loc[account_name(i)]
            assert row["status"] == "error" and row["error_class"] == cls, row["error"]
            assert words in row["error"] and "\n" not in row["error"]
            assert "Traceback" not in row["error"] and "ValueError" not in row["error"]
    big = inprocess.summary.set_index("account").loc[account_name(142), "error"]
    assert "field 'quantity'" in big and "1e+10 coin" in big
    others = [account_name(i) for i in range(N_ACCOUNTS) if i not in SPECIAL]
    a = inprocess.summary[inprocess.summary["account"].isin(others)].reset_index(drop=True)
    b = on_dask.summary[on_dask.summary["account"].isin(others)].reset_index(drop=True)
    assert len(a) == len(b) == N_ACCOUNTS - 3
    for col in ("account", "status", "error", "error_class", "input_hash"):
        assert list(a[col]) == list(b[col]), col
    np.testing.assert_allclose(a["margin_after_usd"].astype(float), b["margin_after_usd"].astype(float),
                               rtol=1e-9, atol=1e-9)


def test_dask_cluster_gives_the_same_results(batch_dir, inprocess, on_dask):
    root, _ = batch_dir
    assert on_dask.workers.startswith("local Dask cluster of 2")
    assert len(on_dask.computed) == N_ACCOUNTS - 1     # and the list-shaped spec's, rejected
    assert_same_results(inprocess.summary, on_dask.summary, root / "out_inprocess", root / "out_dask")
    log = (root / "out_dask" / "run.log").read_text()
    assert "dask " in log and "2 workers" in log


def test_rerun_skips_everything(batch_dir, inprocess, on_dask):
    root, _ = batch_dir
    again = run_batch(write_job(root, "out_inprocess", manifest="accounts.csv"), progress=False)
    assert again.computed == [] and len(again.skipped) == N_ACCOUNTS - 1  # and 167, rejected again
    # accounts in error with a marginopt error are final too: same inputs, same error
    assert again.summary["status"].eq("error").sum() == 8 + len(SPECIAL)
    pd.testing.assert_frame_equal(again.summary, inprocess.summary)


def test_interrupted_run_resumes_with_only_the_missing_accounts(batch_dir, interrupted, on_dask):
    root, _ = batch_dir
    first, second = interrupted
    # 200 accounts: 100 computed, 99 left for later, 1 rejected up front (its spec is a list)
    assert len(first.computed) == 100 and len(first.pending) == N_ACCOUNTS - 101
    assert (first.summary["status"] == "pending").sum() == N_ACCOUNTS - 101
    assert sorted(second.computed) == sorted(first.pending)
    assert sorted(second.skipped) == sorted(first.computed)
    log = (root / "out_inprocess" / "run.log").read_text().splitlines()
    starts = [i for i, l in enumerate(log) if " run start: " in l]
    last_run = log[starts[1]:]
    assert "100 up to date, 99 to compute" in last_run[0]
    assert sum(" computed acct_" in l for l in last_run) == N_ACCOUNTS - 101
    # the resumed result is the clean run's
    assert_same_results(on_dask.summary, second.summary, root / "out_dask", root / "out_inprocess")


def test_killed_process_leaves_no_half_result(batch_dir, tmp_path):
    """SIGKILL a CLI run mid-way: every account is either done (all its files) or redone."""
    root, _ = batch_dir
    books = tmp_path / "books"
    books.mkdir()
    for i in range(16):
        src = root / "books" / f"acct_{i + 100:03d}.csv"
        (books / src.name).write_bytes(src.read_bytes())
    (tmp_path / "market.json").write_bytes((root / "market.json").read_bytes())
    (tmp_path / "spec.yaml").write_bytes((root / "spec.yaml").read_bytes())
    job = write_job(tmp_path, "out")
    marginopt = Path(sys.executable).with_name("marginopt")
    proc = subprocess.Popen([str(marginopt), "batch", str(job)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = tmp_path / "out" / "accounts"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(results.glob("*/result.json"))) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name for p in results.glob("*/result.json")}
    assert 4 <= len(done) < 16, "the run should have been killed part-way"
    for name in done:  # a result marks an account whose files are all complete
        record = json.loads((results / name / "result.json").read_text())
        if record["status"] != "error":
            json.loads((results / name / "proposal.json").read_text())
            assert (results / name / "proposal.md").read_text().startswith("# Margin proposal")
    resumed = run_batch(job, progress=False)
    assert sorted(resumed.computed) == sorted({p.stem for p in books.glob("*.csv")} - done)
    assert set(resumed.skipped) == done
    assert (resumed.summary["status"] != "pending").all()
