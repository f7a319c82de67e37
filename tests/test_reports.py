"""Proposal reports: JSON, Markdown, charts and the self-contained HTML page."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
from typer.testing import CliRunner

import marginopt
from marginopt.cli import app, sample_paths
from marginopt.reports import (components_chart, limits_chart, proposal_charts, render_html,
                               scenario_pnl_chart, write_proposal)
from marginopt.reports._charts import parse_grid

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def proposal():
    p = sample_paths()
    return marginopt.optimize(p["portfolio"], p["market"], "deribit-pm", p["spec"])


def test_write_proposal_writes_json_markdown_html_and_charts(proposal, tmp_path):
    paths = write_proposal(proposal, tmp_path / "out", market=sample_paths()["market"])
    assert set(paths) == {"json", "markdown", "html", "scenario_pnl", "margin_components", "limits"}
    assert json.loads(paths["json"].read_text())["margin_saved_usd"] == pytest.approx(proposal.margin_saved_usd)
    assert paths["markdown"].read_text() == proposal.to_markdown()
    assert paths["html"].name == "report.html"
    for kind in ("scenario_pnl", "margin_components", "limits"):
        assert paths[kind].read_bytes().startswith(PNG)
    page = paths["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert "2026-11-20 08:00 UTC" in page                      # the market's valuation time
    for t in proposal.trades:
        assert t.instrument_name in page
    for l in proposal.binding_limits:
        assert l.name in page
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_named_reports_do_not_collide(proposal, tmp_path):
    a = write_proposal(proposal, tmp_path, name="desk_a", charts=False)
    b = write_proposal(proposal, tmp_path, name="desk_b", html=False)
    assert a["html"].name == "desk_a.html" and "scenario_pnl" not in a
    assert set(b) == {"json", "markdown"}


def test_risk_matrix_labels_are_read_as_a_price_grid():
    grid = parse_grid(["-16.00% vol down", "+0.00% vol flat", "+8.00% vol up", "+50% vol up (extended)"])
    assert grid == [(-16.0, "down", False), (0.0, "flat", False), (8.0, "up", False), (50.0, "up", True)]
    assert parse_grid(["scenario 1", "+8.00% vol up"]) is None


def test_charts_from_the_proposal_dict(proposal):
    d = proposal.to_dict()
    assert set(proposal_charts(d)) == {"scenario_pnl", "margin_components", "limits"}
    # scenarios that are not a price grid (a user matrix): sorted P&L instead
    other = copy.deepcopy(d)
    for side in ("margin_before", "margin_after"):
        for pool in other[side]["by_underlying"].values():
            pool["scenario_labels"] = [f"day {i}" for i in range(len(pool["scenario_labels"]))]
    assert scenario_pnl_chart(other).startswith(PNG)
    # a pool the trades close entirely, and a spec without limits
    gone = copy.deepcopy(d)
    gone["margin_after"]["by_underlying"].pop("ETH")
    gone["limits"] = []
    assert scenario_pnl_chart(gone).startswith(PNG) and components_chart(gone).startswith(PNG)
    assert limits_chart(gone) is None
    assert "The spec sets no limit." in render_html(gone)


def test_model_without_scenarios_says_so(tmp_path):
    p = sample_paths()
    prop = marginopt.optimize(p["portfolio"], p["market"], "deribit-standard", p["spec"])
    paths = write_proposal(prop, tmp_path)
    assert "scenario_pnl" not in paths
    assert "reports no scenario P&amp;L" in paths["html"].read_text()


def test_cli_optimize_out_writes_the_report(tmp_path):
    p = sample_paths()
    res = CliRunner().invoke(app, ["optimize", "-p", str(p["portfolio"]), "-m", str(p["market"]),
                                   "-s", str(p["spec"]), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "limits.png").exists()
