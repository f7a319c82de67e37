"""Issue 10, item 10: reports say the unit of every price and limit, explain each status in
words, never print numbers like 3.88578e-16 or 1.17e+05, and show the trade bounds that bind."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import marginopt
from marginopt._format import STATUS_WORDS, num
from marginopt.cli import app, sample_paths
from marginopt.rebalance._proposal import LimitCheck
from marginopt.reports import render_html

P = sample_paths()
SCI = re.compile(r"\d[eE][+-]?\d")


@pytest.fixture(scope="module")
def proposal():
    p = marginopt.optimize(P["portfolio"], P["market"], "deribit-pm", P["spec"])
    # a limit whose values are solver dust and a large shadow price, as the issue saw them
    dust = LimitCheck("BTC.delta_usd", -2e7, 2e7, 3.88578e-16, -3.88578e-16, False, True, 1.17e5)
    return replace(p, limits=(*p.limits, dust))


def test_numbers_use_fixed_decimals_and_zero_the_dust():
    assert num(3.88578e-16, 4) == "0.0000" and num(-3.88578e-16) == "0.00"
    assert num(1.17e5) == "117,000.00" and num(0.833754, 6, sign=True) == "+0.833754"


def test_markdown_has_units_status_words_and_no_scientific_numbers(proposal):
    md = proposal.to_markdown()
    body = md.split("Solver:")[0]
    assert not SCI.search(body), SCI.search(body)
    assert f"**Status:** optimal ({STATUS_WORDS['optimal']})" in md
    assert "| BTC-25JUN27-112000-C | sell | -0.833754 | 0.1160 | BTC |" in md     # option: coin
    assert re.search(r"\| BTC-PERPETUAL \| buy \| \+[\d.]+ \| 97,254\.86 \| USD \|", md)  # future: USD
    assert "| BTC.delta_usd | USD | -20,000,000.00 | 20,000,000.00 | 0.00 | 0.00 | yes | 117,000.00 |" in md
    assert "| BTC.vega (relative) | USD per vol point |" in md
    assert "| turnover_usd | USD | 2,999,999.69 | 3,000,000.00 |" in md


def test_html_has_units_status_words_and_the_binding_trade_bounds(proposal):
    page = render_html(proposal, charts={})
    text = re.sub(r'src="data:[^"]+"', "", page)
    assert not SCI.search(re.sub(r"<style>.*?</style>", "", text, flags=re.S))
    assert STATUS_WORDS["optimal"] in page
    assert "<h2>Trade bounds</h2>" in page and "<td>turnover_usd</td><td>USD</td>" in page
    assert "<td>BTC.delta_usd</td><td>USD</td>" in page
    assert "<td>BTC-25JUN27-112000-C</td><td>sell</td>" in page and "<td>BTC</td>" in page


def test_the_cli_prints_units_and_words():
    res = CliRunner().invoke(app, ["demo"])
    assert res.exit_code == 0
    assert not SCI.search(res.stdout), SCI.search(res.stdout)
    assert f"Status: optimal ({STATUS_WORDS['optimal']})" in res.stdout
    assert "BTC-PERPETUAL            at 97,254.86 USD" in res.stdout
    assert "trade bound turnover_usd binds: 2,999,999.69 of 3,000,000.00" in res.stdout


def test_readme_explains_every_status():
    from pathlib import Path
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for status in STATUS_WORDS:
        assert f"status `{status}`" in readme
    for cls in ("VerificationFailed", "SolverFailed", "Infeasible", "SpecError", "OutputError",
                "AccountCrashed", "AccountTimedOut"):
        assert f"`{cls}`" in readme
