"""The command line: output, --json, and exit codes with one clear line on stderr."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from marginopt.cli import app, sample_paths

runner = CliRunner()


def test_demo_prints_before_after_saved_and_trades():
    res = runner.invoke(app, ["demo"])
    assert res.exit_code == 0, res.output
    assert "Initial margin before" in res.output and "saved" in res.output
    assert "Trades (" in res.output and "Limits:" in res.output


def test_margin_json_shape():
    p = sample_paths()
    res = runner.invoke(app, ["margin", "-p", str(p["portfolio"]), "-m", str(p["market"]),
                              "--model", "deribit-pm", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert {"initial_margin_usd", "maintenance_margin_usd", "by_underlying"} <= set(d)
    btc = d["by_underlying"]["BTC"]
    assert btc["currency"] == "BTC"
    assert {"worst_case", "roll_shock"} == set(btc["components"])
    assert btc["worst_scenario"] and len(btc["scenario_pnl"]) == 35
    assert btc["initial_margin"] == pytest.approx(sum(btc["components"].values()), rel=1e-12)


def test_optimize_json_and_out(tmp_path):
    p = sample_paths()
    res = runner.invoke(app, ["optimize", "-p", str(p["portfolio"]), "-m", str(p["market"]),
                              "--spec", str(p["spec"]), "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["margin_saved_usd"] == pytest.approx(
        d["margin_before"]["initial_margin_usd"] - d["margin_after"]["initial_margin_usd"], abs=1e-9)
    assert (tmp_path / "proposal.json").exists() and (tmp_path / "proposal.md").exists()


def test_models_lists_sources_and_currencies():
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"deribit-pm", "deribit-standard", "covariance-var", "scenario-max", "scenario-es"} <= set(rows)
    assert rows["deribit-pm"]["currencies"] == ["BTC", "ETH"] and rows["deribit-pm"]["source"]


def test_bad_row_exits_2_with_one_line(tmp_path):
    p = sample_paths()
    book = tmp_path / "book.csv"
    book.write_text("instrument,quantity\nBTC-PERPETUAL,1\nBTC-PERPETUAL,abc\n")
    res = runner.invoke(app, ["margin", "-p", str(book), "-m", str(p["market"])])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.count("\n") == 0 and "row 2" in err and "quantity" in err and str(book) in err
    assert "Traceback" not in res.output


def test_unknown_instrument_exits_2(tmp_path):
    p = sample_paths()
    book = tmp_path / "book.csv"
    book.write_text("instrument,quantity\nBTC-27DEC30-60000-C,1\n")
    res = runner.invoke(app, ["margin", "-p", str(book), "-m", str(p["market"])])
    assert res.exit_code == 2 and "BTC-27DEC30-60000-C" in res.stderr


def test_infeasible_exits_3(tmp_path):
    p = sample_paths()
    spec = tmp_path / "spec.yaml"
    spec.write_text("universe: held\ndo_not_trade: [BTC-PERPETUAL]\nlimits: {BTC: {delta: [50, 60]}}\n"
                    "no_new_instruments: true\nclose_only: []\n")
    book = tmp_path / "book.csv"
    book.write_text("instrument,quantity\nBTC-PERPETUAL,1\n")
    res = runner.invoke(app, ["optimize", "-p", str(book), "-m", str(p["market"]), "--spec", str(spec)])
    assert res.exit_code == 3, res.output
    assert "BTC.delta.lower" in res.stderr


def test_a_misspelt_solver_is_bad_input_naming_the_installed_ones():
    # before: "NOPE: not installed", exit 4 (a solver failure) after loading everything
    p = sample_paths()
    res = runner.invoke(app, ["optimize", "-p", str(p["portfolio"]), "-m", str(p["market"]),
                              "--spec", str(p["spec"]), "--solver", "NOPE"])
    assert res.exit_code == 2, res.output
    assert "unknown solver NOPE (installed: " in res.stderr and "HIGHS" in res.stderr
    res = runner.invoke(app, ["optimize", "-p", str(p["portfolio"]), "-m", str(p["market"]),
                              "--solver", "CLARABLE"])
    assert res.exit_code == 2 and "did you mean CLARABEL?" in res.stderr


def test_debug_shows_traceback(tmp_path):
    res = runner.invoke(app, ["--debug", "margin", "-p", str(tmp_path / "missing.csv"), "-m", "x.json"])
    assert res.exit_code == 2
