"""Issue 10, item 9: the command line. Plain flags, every option documented, --debug anywhere,
--version and -h, --out that says where it wrote or why it cannot, batch job mistakes that are
errors (a pattern matching nothing, an account given twice), timestamped batch log lines, and a
misspelt solver that is bad input."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from marginopt import __version__
from marginopt.cli import app, sample_paths
from marginopt.errors import OutputError, SpecError
from marginopt.rebalance import RebalanceSpec

runner = CliRunner()
P = sample_paths()
COMMANDS = ["margin", "optimize", "demo", "batch", "models"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_option_and_shows_flags_plainly(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "<bool>" not in res.output                      # before: "--json <bool>"
    options = [l for l in res.output.splitlines() if l.lstrip().startswith("-")]
    assert options
    for line in options:                                    # every option has a sentence
        name = line.split()[0].rstrip(",")
        rest = re.sub(r"^\s*(-\w, )?--[\w-]+( <[^>]+>)?", "", line).strip()
        assert rest, f"{command} {name} has no help text"
    assert "--debug" in res.output
    assert runner.invoke(app, [command, "-h"]).output == res.output


def test_json_is_a_flag_and_the_top_level_has_h_and_version():
    assert runner.invoke(app, ["-h"]).exit_code == 0
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"marginopt {__version__}"
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_or_after_the_command(tmp_path, where):
    args = ["margin", "-p", str(tmp_path / "missing.csv"), "-m", str(P["market"])]
    res = runner.invoke(app, ["--debug", *args] if where == "before" else [*args, "--debug"])
    assert res.exit_code == 2
    assert "Traceback" in res.output and "portfolio file not found" in res.output


def test_demo_out_says_where_it_wrote(tmp_path):
    out = tmp_path / "demo-report"
    res = runner.invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"Wrote the proposal and its report to {out}/" in res.stdout
    assert (out / "report.html").exists() and (out / "proposal.json").exists()
    res = runner.invoke(app, ["demo", "--json", "--out", str(tmp_path / "j")])
    assert res.exit_code == 0
    json.loads(res.output)                                  # the output stays pure JSON
    assert (tmp_path / "j" / "report.html").exists()


def _optimize(out: Path):
    return runner.invoke(app, ["optimize", "-p", str(P["portfolio"]), "-m", str(P["market"]),
                               "-s", str(P["spec"]), "--out", str(out)])


def test_an_occupied_out_path_is_a_typed_error_before_any_work(tmp_path):
    # before: exit 1, "FileExistsError: ..."
    occupied = tmp_path / "report"
    occupied.write_text("a file")
    for out in (occupied, occupied / "inside"):
        res = _optimize(out)
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith(f"error: {out}, field 'out': ")
        assert "Status:" not in res.stdout and "Wrote" not in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_path_is_a_typed_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = _optimize(locked / "report")
        assert res.exit_code == 2 and "permission" in res.stderr
    finally:
        locked.chmod(0o700)


def test_a_write_that_fails_midway_shows_the_proposal_but_never_says_written(tmp_path, monkeypatch):
    import marginopt.reports._write as w

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(w, "atomic_write_bytes", full)
    res = _optimize(tmp_path / "report")
    assert res.exit_code == 2
    assert "Status:" in res.stdout and "Wrote" not in res.output    # the work is not lost
    assert "cannot write the proposal (No space left on device)" in res.stderr
    with pytest.raises(OutputError):
        w.write_proposal(type("P", (), {"to_json": lambda self, **k: "{}"})(), tmp_path / "x")


def test_a_misspelt_solver_in_a_spec_is_a_spec_error():
    with pytest.raises(SpecError, match=r"unknown solver HIGSH \(installed: .*HIGHS") as err:
        RebalanceSpec.from_dict({"solver": "HIGSH"})
    assert err.value.field == "solver"
    assert RebalanceSpec.from_dict({"solver": "highs"}).solver == "highs"


# ----------------------------------------------------------------- batch
@pytest.fixture
def job_dir(tmp_path) -> Path:
    from marginopt.synthetic import make_book
    from marginopt import load_market
    (tmp_path / "books").mkdir()
    market = load_market(P["market"])
    for i in range(2):
        book = make_book(market, n_structures=1, seed=7 + i)
        (tmp_path / "books" / f"desk_{i}.csv").write_text(
            "instrument,quantity\n" + "".join(f"{k},{v!r}\n" for k, v in book.positions.items()))
    (tmp_path / "market.json").write_bytes(P["market"].read_bytes())
    return tmp_path


def _job(folder: Path, **keys) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump({"market": "market.json", "output_dir": "out", **keys}))
    return path


def test_a_batch_pattern_matching_nothing_is_an_error(job_dir):
    # before: exit 0 with an empty summary
    res = runner.invoke(app, ["batch", str(_job(job_dir, accounts_dir="books", pattern="desk_9*"))])
    assert res.exit_code == 2, res.output
    assert "matches pattern 'desk_9*'" in res.stderr and "field 'pattern'" in res.stderr


def test_an_account_listed_twice_is_an_error_naming_it(job_dir):
    # before: two summary rows for one account
    (job_dir / "m.csv").write_text("account,portfolio\ndesk,books/desk_0.csv\nother,books/desk_1.csv\n"
                                   "Desk,books/desk_1.csv\n")
    res = runner.invoke(app, ["batch", str(_job(job_dir, manifest="m.csv"))])
    assert res.exit_code == 2, res.output
    assert "account 'Desk' is listed twice (rows 1 and 3)" in res.stderr
    (job_dir / "books" / "desk_0.json").write_text('{"BTC-PERPETUAL": 1}')
    res = runner.invoke(app, ["batch", str(_job(job_dir, accounts_dir="books"))])
    assert res.exit_code == 2 and "account 'desk_0' is given twice" in res.stderr


def test_batch_log_lines_carry_date_and_time(job_dir):
    res = runner.invoke(app, ["batch", str(_job(job_dir, accounts_dir="books"))])
    assert res.exit_code == 0, res.output
    lines = [l for l in res.stderr.splitlines() if "computed desk_" in l]
    assert len(lines) == 2
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ computed desk_", l) for l in lines)


def test_a_misspelt_solver_in_a_batch_job_stops_the_job(job_dir):
    res = runner.invoke(app, ["batch", str(_job(job_dir, accounts_dir="books", solver="CLRABEL"))])
    assert res.exit_code == 2 and "unknown solver CLRABEL" in res.stderr
