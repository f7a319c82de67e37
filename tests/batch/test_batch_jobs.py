"""Batch job files: manifests with per-account specs, bad rows, reports, the CLI, the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from marginopt.batch import BatchJob, run_batch
from marginopt.cli import app
from marginopt.errors import InputError, MarginoptError

runner = CliRunner()


@pytest.fixture
def small(batch_dir, tmp_path) -> Path:
    """A job folder with four of the generated books, the market and the spec."""
    root, _ = batch_dir
    (tmp_path / "books").mkdir()
    for i in (0, 1, 2, 3):
        name = f"acct_{i:03d}.csv"
        (tmp_path / "books" / name).write_bytes((root / "books" / name).read_bytes())
    (tmp_path / "market.json").write_bytes((root / "market.json").read_bytes())
    (tmp_path / "spec.yaml").write_bytes((root / "spec.yaml").read_bytes())
    return tmp_path


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else data)
    return path


def test_manifest_with_spec_overrides_spec_files_and_bad_rows(small):
    write(small / "tight.yaml", {"universe": "held", "limits": {"BTC": {"delta": 1}, "ETH": {"delta": 5}}})
    manifest = (
        "account,portfolio,spec,spec_overrides\n"
        "alpha,books/acct_000.csv,,\n"
        'beta,books/acct_000.csv,,"{""objective"": ""margin_plus_cost"", ""cost_weight"": 2}"\n'
        "gamma,books/acct_001.csv,tight.yaml,\n"
        'delta,books/acct_002.csv,,"{not json"\n'
        "epsilon,books/missing.csv,,\n"
        "../evil,books/acct_003.csv,,\n"
        'zeta,books/acct_003.csv,,"{""objective"": ""bogus""}"\n'
    )
    write(small / "accounts.csv", manifest)
    job = write(small / "job.yaml", {"manifest": "accounts.csv", "market": "market.json",
                                     "spec": "spec.yaml", "output_dir": "out"})
    result = run_batch(job, progress=False)
    s = result.summary.set_index("account")
    assert list(result.summary["account"]) == ["alpha", "beta", "gamma", "delta", "epsilon",
                                               "../evil", "zeta"]
    ok = s[s["status"] != "error"]
    assert sorted(ok.index) == ["alpha", "beta", "gamma"]
    assert sorted(result.computed) == ["alpha", "beta", "gamma"]
    # the same book under another spec is another result
    assert s.loc["alpha", "input_hash"] != s.loc["beta", "input_hash"]
    errors = result.summary[result.summary["status"] == "error"].set_index("account")
    assert "spec_overrides is not valid JSON" in errors.loc["delta", "error"]
    assert "portfolio file not found" in errors.loc["epsilon", "error"]
    assert "cannot name a folder" in errors.loc["../evil", "error"]
    assert errors.loc["zeta", "error_class"] == "SpecError" and "objective" in errors.loc["zeta", "error"]
    assert not (small / "evil").exists() and not (small / "out" / "evil").exists()
    gamma = json.loads((small / "out" / "accounts" / "gamma" / "proposal.json").read_text())
    assert {l["name"] for l in gamma["limits"]} == {"BTC.delta", "ETH.delta"}

    again = run_batch(job, progress=False)
    assert again.computed == [] and sorted(again.skipped) == ["alpha", "beta", "gamma"]
    # a changed override recomputes that account only
    write(small / "accounts.csv", manifest.replace('""cost_weight"": 2', '""cost_weight"": 3'))
    third = run_batch(job, progress=False)
    assert third.computed == ["beta"]


def test_reports_are_written_when_asked_and_skipped_accounts_keep_them(small):
    job = write(small / "job.yaml", {"accounts_dir": "books", "pattern": "acct_00[01].csv",
                                     "market": "market.json", "spec": "spec.yaml",
                                     "output_dir": "out", "reports": True})
    result = run_batch(job, progress=False)
    assert sorted(result.computed) == ["acct_000", "acct_001"]
    page = (small / "out" / "accounts" / "acct_000" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and 'src="http' not in page and "<link" not in page
    assert "Margin proposal: acct_000" in page
    # asking for reports on a folder run without them recomputes the accounts that lack one
    write(small / "job2.yaml", {**yaml.safe_load(job.read_text()), "reports": False, "output_dir": "out2"})
    run_batch(small / "job2.yaml", progress=False)
    write(small / "job2.yaml", {**yaml.safe_load(job.read_text()), "reports": True, "output_dir": "out2"})
    assert sorted(run_batch(small / "job2.yaml", progress=False).computed) == ["acct_000", "acct_001"]


def test_cli_batch_text_json_and_exit_codes(small):
    job = write(small / "job.yaml", {"accounts_dir": "books", "pattern": "acct_00[23].csv",
                                     "market": "market.json", "spec": "spec.yaml", "output_dir": "out"})
    res = runner.invoke(app, ["batch", str(job)])
    assert res.exit_code == 0, res.output
    assert "Batch of 2 accounts (in-process): 2 computed" in res.stdout
    res = runner.invoke(app, ["batch", str(job), "--json"])
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["skipped"] == 2 and info["computed"] == 0 and info["accounts"] == 2
    assert Path(info["files"]["summary_parquet"]).exists()

    res = runner.invoke(app, ["batch", str(job), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert res.exit_code == 2 and "not both" in res.stderr
    bad = write(small / "bad.yaml", {"accounts_dir": "books", "manifest": "m.csv",
                                     "market": "market.json", "output_dir": "out"})
    res = runner.invoke(app, ["batch", str(bad)])
    assert res.exit_code == 2 and "exactly one of 'accounts_dir' and 'manifest'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    nomarket = write(small / "nomarket.yaml", {"accounts_dir": "books", "market": "nope.json",
                                               "output_dir": "out"})
    res = runner.invoke(app, ["batch", str(nomarket)])
    assert res.exit_code == 2 and "market snapshot file not found" in res.stderr
    res = runner.invoke(app, ["batch", str(small / "absent.yaml")])
    assert res.exit_code == 2 and "batch job file not found" in res.stderr


def test_job_paths_are_relative_to_the_job_file(small, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    job = BatchJob.from_file(write(small / "job.yaml", {"accounts_dir": "books", "market": "market.json",
                                                       "model": "deribit-pm", "output_dir": "out"}))
    assert job.path(job.market) == small / "market.json"
    assert job.path(job.output_dir) == small / "out"
    with pytest.raises(InputError, match="typo.*unknown key .typo."):
        BatchJob.from_dict({"accounts_dir": "b", "market": "m", "output_dir": "o", "typo": 1})


def test_a_second_run_on_the_same_output_stops_at_once(small):
    import fcntl

    job = write(small / "job.yaml", {"accounts_dir": "books", "market": "market.json",
                                     "output_dir": "out"})
    (small / "out").mkdir()
    with open(small / "out" / "run.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(MarginoptError, match="another batch run"):
            run_batch(job, progress=False)


def test_raw_deribit_book_summary_with_time_and_index_in_the_job(small):
    data = json.loads((small / "market.json").read_text())
    write(small / "summary.json", json.dumps({"jsonrpc": "2.0", "result": data["instruments"]}))
    base = {"accounts_dir": "books", "pattern": "acct_000.csv", "spec": "spec.yaml"}
    raw = run_batch(write(small / "raw.yaml", {**base, "market": "summary.json", "output_dir": "raw",
                                               "valuation_time": data["valuation_time"],
                                               "index_prices": data["index_prices"]}), progress=False)
    snap = run_batch(write(small / "snap.yaml", {**base, "market": "market.json", "output_dir": "snap"}),
                     progress=False)
    assert raw.summary.loc[0, "margin_after_usd"] == snap.summary.loc[0, "margin_after_usd"]
    with pytest.raises(InputError, match="needs valuation_time and index_prices"):
        run_batch(write(small / "bad.yaml", {**base, "market": "summary.json", "output_dir": "bad"}),
                  progress=False)


def test_one_bad_spec_or_book_fails_only_its_own_account(small):
    """Issue 10: a list-shaped spec stopped the whole run with a bare ValueError; a 1e20 book
    crashed the process inside the solver. Each is now that account's error, naming the file."""
    (small / "list_spec.yaml").write_text("- universe: held\n- limits: {}\n")
    (small / "scalar_spec.yaml").write_text("42\n")
    (small / "dup_spec.yaml").write_text("universe: held\nuniverse: listed\n")
    (small / "typo_spec.yaml").write_text("do_not_trade: [BTC-PERPETUL]\n")
    (small / "books" / "binary.json").write_bytes(bytes(range(256)))
    big = (small / "books" / "acct_000.csv").read_text() + "BTC-PERPETUAL,1e20\n"
    write(small / "books" / "big.csv", big)
    manifest = ("account,portfolio,spec\n"
                "good,books/acct_000.csv,\n"
                "listspec,books/acct_001.csv,list_spec.yaml\n"
                "scalarspec,books/acct_001.csv,scalar_spec.yaml\n"
                "dupspec,books/acct_001.csv,dup_spec.yaml\n"
                "typospec,books/acct_001.csv,typo_spec.yaml\n"
                "binary,books/binary.json,\n"
                "big,books/big.csv,\n"
                "good2,books/acct_002.csv,\n")
    write(small / "accounts.csv", manifest)
    job = write(small / "job.yaml", {"manifest": "accounts.csv", "market": "market.json",
                                     "spec": "spec.yaml", "output_dir": "out"})
    result = run_batch(job, progress=False)
    s = result.summary.set_index("account")
    assert set(s.index[s["status"] != "error"]) == {"good", "good2"}
    expected = {"listspec": ("SpecError", "list_spec.yaml", "a list"),
                "scalarspec": ("SpecError", "scalar_spec.yaml", "a number"),
                "dupspec": ("SpecError", "dup_spec.yaml", "key 'universe' is given twice"),
                "typospec": ("SpecError", "typo_spec.yaml", "BTC-PERPETUL"),
                "binary": ("InputError", "binary.json", "UTF-8"),
                "big": ("InvalidValue", "big.csv", "field 'quantity'")}
    for account, (cls, file, words) in expected.items():
        assert s.loc[account, "status"] == "error"
        assert s.loc[account, "error_class"] == cls, s.loc[account, "error"]
        assert file in s.loc[account, "error"] and words in s.loc[account, "error"]
