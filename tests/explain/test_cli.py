"""The explain, whatif and compare commands: output, --json, --out, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import marginopt
from marginopt.cli import app, sample_paths

runner = CliRunner()


@pytest.fixture(scope="module")
def paths():
    p = sample_paths()
    return ["-p", str(p["portfolio"]), "-m", str(p["market"])], p


def test_explain_text_json_and_out(paths, tmp_path):
    args, p = paths
    res = runner.invoke(app, ["explain", *args, "--equity", "400000", "--spec", str(p["spec"]),
                              "--top", "3"])
    assert res.exit_code == 0, res.output
    assert "Largest contributors" in res.output and "Distance to liquidation" in res.output
    assert "Capacity before initial margin reaches 400,000.00 USD" in res.output
    res = runner.invoke(app, ["explain", *args, "--equity", "400000", "-i", "BTC-PERPETUAL",
                              "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    book = marginopt.load_portfolio(p["portfolio"])
    direct = marginopt.margin(book, p["market"], "deribit-pm")
    assert d["attribution"]["initial_margin_usd"] == pytest.approx(direct.initial_margin_usd, rel=1e-12)
    assert {r["instrument"] for r in d["capacity"]["instruments"]} == {*book.names, "BTC-PERPETUAL"}
    assert len(d["liquidation"]["points"]) == 6
    for name in ("explain.json", "explain.html", "contributors.png", "liquidation.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert json.loads((tmp_path / "explain.json").read_text())["model"] == "deribit-pm"


def test_explain_without_equity_gives_attribution_only(paths):
    args, _ = paths
    res = runner.invoke(app, ["explain", *args, "--model", "deribit-standard", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["capacity"] is None and d["liquidation"] is None
    assert any("residual" in n for n in d["notes"])  # the futures size charge is not homogeneous


def test_whatif_text_and_json(paths):
    args, p = paths
    res = runner.invoke(app, ["whatif", *args, "--trade", "BTC-PERPETUAL=+1.5",
                              "--trade", "BTC-27NOV26-104000-C=-2", "--set", "ETH.worst_case.price_range=0.20"])
    assert res.exit_code == 0, res.output
    assert "initial margin" in res.output and "set ETH.worst_case.price_range = 0.20" in res.output
    res = runner.invoke(app, ["whatif", *args, "-t", "BTC-PERPETUAL=+1.5", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    post = marginopt.load_portfolio(p["portfolio"]).apply({"BTC-PERPETUAL": 1.5})
    assert d["after"]["initial_margin_usd"] == pytest.approx(
        marginopt.margin(post, p["market"], "deribit-pm").initial_margin_usd, rel=1e-12)


def test_compare_text_and_json(paths):
    args, _ = paths
    res = runner.invoke(app, ["compare", *args])
    assert res.exit_code == 0, res.output
    assert "savings against deribit-standard" in res.output and "derive-pm2" in res.output
    res = runner.invoke(app, ["compare", *args, "--model", "deribit-pm", "--model", "deribit-standard",
                              "--current", "deribit-pm", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["current"] == "deribit-pm" and [m["model"] for m in d["models"]] == ["deribit-pm", "deribit-standard"]


@pytest.mark.parametrize("argv,words", [
    (["whatif", "--set", "ETH.worst_case.price_rnge=0.2"], "did you mean price_range"),
    (["whatif", "--set", "ETH.worst_case.price_range"], "NAME=VALUE"),
    (["whatif", "--trade", "BTC-PERPETUAL=lots"], "quantity is not a number"),
    (["whatif"], "nothing to compare"),
    (["explain", "--equity", "400000", "-i", "BTC-PERPETUL"], "BTC-PERPETUL"),
    (["explain", "--model", "deribit-pmm"], "no margin model"),
    (["compare", "--current", "derive-pm2"], "derive-pm2"),
])
def test_errors_are_one_line_exit_2(paths, argv, words):
    args, _ = paths
    res = runner.invoke(app, [argv[0], *args, *argv[1:]])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    res = runner.invoke(app, ["--debug", argv[0], *args, *argv[1:]])
    assert res.exit_code == 2 and "Traceback" in res.stderr


def test_help_lists_the_commands_and_options():
    res = runner.invoke(app, ["--help"])
    assert all(c in res.output for c in ("explain", "whatif", "compare"))
    res = runner.invoke(app, ["whatif", "--help"])
    assert "--trade" in res.output and "--set" in res.output
