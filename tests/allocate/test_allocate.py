"""The hand-computed case, equity and desk limits, typed errors, the job file and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import marginopt as mo
from marginopt.allocate import (Account, Allocation, CrossVenueMove, VenueMismatch, WrongVenueSnapshot,
                                allocate)
from marginopt.allocate._job import load_allocation_job
from marginopt.cli import app, sample_paths
from marginopt.errors import InputError, SpecError, UnsupportedCurrency

from ._desks import Desk, check_allocation

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "allocate" / "job.yaml"


@pytest.fixture(scope="module")
def market():
    return mo.load_market(sample_paths()["market"])


def _pm(name, book, market, **kw):
    return Account.build(name, model="deribit-pm", portfolio=book, market=market, **kw)


# --------------------------------------------------------------------------- the hand case
def test_perpetual_and_dated_future_net_to_their_roll_shock(market):
    """A long 2 BTC-PERPETUAL, B short 2 BTC-25JUN27, both Deribit PM. Together the pair's
    risk-matrix P&L cancels in every scenario (both inverse: a coin-quantity q of either loses
    q (1 - 1/(1+s)) coin in a move s), so its margin is its roll shock alone, per expiry group
    (models/deribit-pm.yaml, BTC): the perpetual max(0.01, e^{0.075 x 0} - 1) = 0.01 of its
    coin delta (1 per coin), the future max(0.01, e^{0.075 T} - 1) with T its year fraction,
    in BTC, times the BTC index 97,250 for USD."""
    a = _pm("A", {"BTC-PERPETUAL": 2.0}, market)
    b = _pm("B", {"BTC-25JUN27": -2.0}, market)
    al = allocate([a, b], {"trades": False})
    t = (mo.parse_instrument("BTC-25JUN27").expiry - market.valuation_time).total_seconds() / (365 * 86400)
    hand = 2.0 * 97250.0 * (0.01 + max(0.01, np.expm1(0.075 * t)))
    assert np.expm1(0.075 * t) > 0.01  # the future's own shock, not the floor
    assert al.status == "optimal"
    assert abs(al.margin_after_usd - hand) <= 1e-9 * hand
    assert len(al.moves) == 1 and abs(abs(al.moves[0].quantity) - 2.0) == 0.0
    held = {r.name: a.portfolio.apply(r.moves) for r, a in zip(al.accounts, (a, b))}
    pair = [p for p in held.values() if p.positions]
    assert len(pair) == 1 and pair[0].positions == {"BTC-PERPETUAL": 2.0, "BTC-25JUN27": -2.0}
    # each account alone: the pair's legs margined apart cost far more
    assert al.margin_before_usd > 5 * hand
    assert al.saving_from_moves_usd == pytest.approx(al.margin_saved_usd, rel=1e-12)


def test_nothing_helps_proposes_nothing(market):
    a = _pm("A", {"BTC-PERPETUAL": 2.0}, market)
    b = _pm("B", {"ETH-PERPETUAL": 30.0}, market)
    al = allocate([a, b], {"trades": False})
    assert al.status == "no_allocation" and not al.moves and "no move" in al.reason
    assert al.margin_after_usd == pytest.approx(al.margin_before_usd, rel=1e-12)


# --------------------------------------------------------------------------- equity, desk limits
PUT = "BTC-26MAR27-88000-P"


def _put_desk(market, a_equity, transfers):
    """B (standard margin) is short 5 puts, charged per unit short; A (portfolio margin) would
    carry them for less, but each put moved in raises A's margin."""
    a = Account.build("A", model="deribit-pm", portfolio={"BTC-PERPETUAL": 0.1}, market=market,
                      equity={"BTC": a_equity}, spec={"universe": "held"})
    b = Account.build("B", model="deribit-standard", portfolio={PUT: -5.0}, market=market,
                      equity={"BTC": 1.0}, spec={"universe": "held"})
    return Desk([a, b], {"trades": False, "moves": {"instruments": [PUT]},
                         "transfers": {"allowed": transfers}})


def test_equity_caps_what_an_account_takes(market):
    desk = _put_desk(market, 0.2, transfers=False)
    al = allocate(desk.accounts, desk.rules)
    check_allocation(al, desk, market)
    ra = al.account("A")
    assert ra.margin_after.initial_margin_usd <= 0.2 * 97250.0 * (1 + 1e-12)
    assert 0 < -al.moves[0].quantity < 5.0   # part of the puts, as many as A's equity carries
    assert al.margin_saved_usd > 0
    eq = [x for x in al.binding if x.kind == "equity"]
    assert len(eq) == 1 and eq[0].account == "A" and eq[0].shadow_price > 0.01


def test_transfers_let_an_account_take_the_hedge(market):
    d0 = _put_desk(market, 0.2, transfers=False)
    capped = allocate(d0.accounts, d0.rules)
    desk = _put_desk(market, 0.2, transfers=True)
    al = allocate(desk.accounts, desk.rules)
    check_allocation(al, desk, market)
    assert al.margin_after_usd < capped.margin_after_usd - 1000.0
    assert abs(al.moves[0].quantity) == pytest.approx(5.0, rel=1e-7)   # every put moves, with collateral
    (t,) = al.transfers
    assert (t.currency, t.from_account, t.to_account) == ("BTC", "B", "A") and 0 < t.amount <= 1.0
    ra = al.account("A")
    assert ra.equity_after_usd == pytest.approx((0.2 + t.amount) * 97250.0, rel=1e-12)


def test_desk_limit_binds_with_a_shadow_price(market):
    a = _pm("A", {"BTC-PERPETUAL": 3.0, "BTC-27NOV26-104000-C": -1.0}, market, spec={"universe": "held+futures"})
    b = _pm("B", {"BTC-25DEC26": 1.0}, market, spec={"universe": "held+futures"})
    desk = Desk([a, b], {"limits": {"BTC": {"delta": [3.0, 3.5]}}})
    al = allocate(desk.accounts, desk.rules)
    check_allocation(al, desk, market)
    lim = al.desk_limits[0]
    assert lim.name == "BTC.delta" and 3.0 - 1e-9 * 3.5 <= lim.after <= 3.5 + 1e-9 * 3.5
    if lim.binding:
        assert any(x.kind == "desk" and x.shadow_price is not None for x in al.binding)


def test_derive_account_joins_by_sequential_convex_programming(market):
    """A Derive subaccount (non-convex PM2, linearised in a trust region) beside two Deribit
    ones under a main account of the same name: nothing moves to or from Derive, the desk limit
    holds across venues, and Derive's margin after is its calculator's."""
    a = _pm("A", {"BTC-PERPETUAL": 2.0}, market, spec={"universe": "held"})
    b = _pm("B", {"BTC-25JUN27": -1.0}, market, spec={"universe": "held"})
    d = Account.build("D", model="derive-pm2", portfolio={"BTC_USDC-PERPETUAL": -0.5}, market=market,
                      spec={"universe": "held", "costs": {"spread": False},
                            "trade_bounds": {"max_quantity": 0.25}})
    desk = Desk([a, b, d], {"limits": {"BTC": {"delta": [0.45, 0.6]}},
                            "moves": {"instruments": ["BTC-PERPETUAL", "BTC-25JUN27"]}})
    al = allocate(desk.accounts, desk.rules)
    check_allocation(al, desk, market)
    assert al.status == "optimal"
    assert not al.account("D").moves
    assert all("D" not in (m.from_account, m.to_account) for m in al.moves)
    assert any("sequential convex programming" in n for n in al.notes)
    assert al.solver_margin_usd is None   # a linearised model's figure is no claim; the calculators' are


# --------------------------------------------------------------------------- result forms
def test_result_forms(market):
    a = _pm("A", {"BTC-PERPETUAL": 2.0}, market)
    b = _pm("B", {"BTC-25JUN27": -2.0}, market)
    al = allocate([a, b])
    assert isinstance(al, Allocation)
    with pytest.raises(Exception):
        al.status = "x"  # frozen
    frame = al.to_frame()
    assert list(frame["account"]) == ["A", "B"]
    assert frame["margin_after_usd"].sum() == pytest.approx(al.margin_after_usd, rel=1e-12)
    data = json.loads(al.to_json())
    assert data["margin_saved_usd"] == pytest.approx(al.margin_saved_usd)
    assert data["saving_from_moves_usd"] is not None
    md = al.to_markdown()
    assert "## Moves" in md and "BTC-25JUN27" in md
    assert len(al.moves_frame()) == len(al.moves)


# --------------------------------------------------------------------------- typed errors
def test_move_between_venues_is_refused(market):
    a = _pm("A", {"BTC-PERPETUAL": 1.0}, market)
    d = Account.build("D", model="derive-pm2", portfolio={"BTC_USDC-PERPETUAL": 1.0}, market=market)
    assert d.venue == "derive"
    with pytest.raises(CrossVenueMove, match="within one venue"):
        allocate([a, d], {"moves": {"groups": [["A", "D"]]}})
    b = _pm("B", {"BTC-PERPETUAL": -1.0}, market, main_account="other")
    with pytest.raises(CrossVenueMove, match="one main account"):
        allocate([a, b], {"moves": {"groups": [["A", "B"]]}})


def test_snapshot_of_the_wrong_venue(market, tmp_path):
    with pytest.raises(WrongVenueSnapshot):
        allocate([_pm("A", {"BTC-PERPETUAL": 1.0}, market, market_venue="derive")])
    later = market.with_valuation_time("2026-11-20T09:00:00Z")
    with pytest.raises(WrongVenueSnapshot, match="different snapshots"):
        allocate([_pm("A", {"BTC-PERPETUAL": 1.0}, market), _pm("B", {"BTC-PERPETUAL": -1.0}, later)])
    snap = json.loads(Path(sample_paths()["market"]).read_text())
    (tmp_path / "derive.json").write_text(json.dumps({**snap, "venue": "derive"}))
    (tmp_path / "a.csv").write_text("instrument,quantity\nBTC-PERPETUAL,1\n")
    job = {"venues": {"deribit": {"market": "derive.json"}},
           "accounts": [{"name": "A", "model": "deribit-pm", "portfolio": "a.csv"}]}
    with pytest.raises(WrongVenueSnapshot, match="derive"):
        load_allocation_job(job, base_dir=tmp_path)


def test_currency_the_model_lacks(market):
    with pytest.raises(UnsupportedCurrency) as err:
        allocate([_pm("A", {"BTC-PERPETUAL": 1.0}, market, equity={"SOL": 10.0})])
    assert err.value.row == "A" and err.value.field == "equity.SOL"
    with pytest.raises(UnsupportedCurrency) as err:
        allocate([Account.build("S", model="deribit-standard", portfolio={"BTC-PERPETUAL": 1.0},
                                market=market, equity={"DOGE": 1.0})])
    assert err.value.field == "equity.DOGE"


def test_model_of_another_venue_and_bad_specs(market):
    with pytest.raises(VenueMismatch, match="deribit"):
        _pm("A", {"BTC-PERPETUAL": 1.0}, market, venue="derive")
    with pytest.raises(SpecError, match="free_margin"):
        _pm("A", {"BTC-PERPETUAL": 1.0}, market, spec={"objective": "free_margin", "free_margin_usd": 5})
    with pytest.raises(InputError, match="twice"):
        allocate([_pm("A", {"BTC-PERPETUAL": 1.0}, market), _pm("A", {"BTC-PERPETUAL": 1.0}, market)])
    with pytest.raises(SpecError):
        allocate([_pm("A", {"BTC-PERPETUAL": 1.0}, market)], {"moves": {"fee_rate": -1}})


def test_job_errors_name_the_field(tmp_path):
    (tmp_path / "job.yaml").write_text("accounts:\n  - {name: A, portfolio: a.csv, colour: red}\n")
    with pytest.raises(InputError) as err:
        load_allocation_job(tmp_path / "job.yaml")
    assert "colour" in str(err.value)
    (tmp_path / "job.yaml").write_text("accounts:\n  - {name: A, portfolio: a.csv}\n")
    (tmp_path / "a.csv").write_text("instrument,quantity\nBTC-PERPETUAL,1\n")
    with pytest.raises(InputError, match="no market"):
        load_allocation_job(tmp_path / "job.yaml")


# --------------------------------------------------------------------------- the example and CLI
def test_example_job_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["allocate", str(EXAMPLE), "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["status"] == "optimal" and data["margin_saved_usd"] > 0
    assert {a["name"] for a in data["accounts"]} == {"pm-sub", "std-sub", "derive-sub"}
    assert data["saving_from_moves_usd"] is not None
    # the Derive account (another venue) joins by SCP: nothing moves to or from it
    assert all("derive-sub" not in (m["from_account"], m["to_account"]) for m in data["moves"])
    assert any("sequential convex programming" in n for n in data["notes"])
    for name in ("allocation.json", "allocation.md", "report.html", "margin_by_account.png", "desk_limits.png"):
        assert (out / name).stat().st_size > 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Moves" in html


def test_command_exit_codes(tmp_path):
    (tmp_path / "job.yaml").write_text("accounts: []\n")
    res = CliRunner().invoke(app, ["allocate", str(tmp_path / "job.yaml")])
    assert res.exit_code == 2 and "accounts" in res.output
