"""reconcile: marginopt's margin of a fetched account against the exchange's own figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import marginopt as mo
from marginopt.cli import app
from marginopt.errors import SnapshotError
from marginopt.live import fetch, load_snapshot, reconcile, write_snapshot

from ._fake import FakeDeribit, _sample_book, _sample_market
from .conftest import assert_no_credentials

#: Deribit's API documentation, private/pme/simulate, response example (BTC, 2024-06-17):
#: IM 0.122861343 = risk-matrix margin 0.06284313098 (worst case 0.05968587238095239 + roll
#: shock 0.00315725898) + MMP margin 0.06 + open-orders margin 0.000018212; MM = 0.8 x risk matrix
DOC = {
    "time_ms": 1718619740501,
    "positions": {"BTC-PERPETUAL": 0.314538364, "BTC-28JUN24": -0.001187534},
    "ticker": {"BTC-PERPETUAL": 65910.57, "BTC-28JUN24": 67371.75},
    "index": 65666.19,
    "margins": {"btc": {
        "initial_margin_details": {
            "risk_matrix_margin_details": {
                "delta_shock": 0, "roll_shock": 0.00315725898,
                "worst_case_bucket": {"bucket": 1, "side": "left", "source": "standard", "index": 1},
                "worst_case": 0.05968587238095239, "correlation_contingency": 0},
            "risk_matrix_margin": 0.06284313098, "spot_margin": 0, "mmp_margin": 0.06,
            "open_orders_margin": 0.000018212},
        "initial_margin": 0.122861343, "maintenance_margin": 0.050274504784}},
}


def _doc_snapshot(folder):
    from datetime import datetime, timezone
    when = datetime.fromtimestamp(DOC["time_ms"] / 1000, tz=timezone.utc)
    rows = [{"instrument_name": n, "mark_price": px, "creation_timestamp": DOC["time_ms"],
             **({"underlying_price": px} if n != "BTC-PERPETUAL" else {})}
            for n, px in DOC["ticker"].items()]
    positions = [{"instrument_name": n, "kind": "future", "size_currency": q,
                  "size": round(q * DOC["ticker"][n] / 10) * 10, "direction": "buy" if q > 0 else "sell"}
                 for n, q in DOC["positions"].items()]
    data = {"market": {"valuation_time": when.isoformat().replace("+00:00", "Z"),
                       "index_prices": {"BTC": DOC["index"]}, "instruments": rows},
            "account": True, "positions": {"positions": positions},
            "open_orders": {"orders": [{"order_id": "1", "instrument_name": "BTC-PERPETUAL",
                                        "direction": "buy", "amount": 10.0, "price": 60000.0}]},
            "account_summary": {"summaries": {"BTC": {
                "currency": "BTC", "equity": 1.0, "margin_model": "segregated_pm",
                "initial_margin": 0.122861343, "maintenance_margin": 0.050274504784}}},
            "pme": {"simulations": {"BTC": {"margins": DOC["margins"]}}}}
    return load_snapshot(write_snapshot(data, folder, venue="deribit", currencies=["BTC"], testnet=False))


def test_the_documented_pme_example_reconciles_component_by_component(tmp_path):
    r = reconcile(_doc_snapshot(tmp_path))
    assert r.model == "deribit-pm" and r.margin_model == "segregated_pm" and not r.cross_collateral
    lines = {(l.figure, l.source): l for l in r.lines}
    for fld, ref in (("worst_case", 0.05968587238095239), ("roll_shock", 0.00315725898),
                     ("risk_matrix_margin", 0.06284313098)):
        line = lines[(fld, "pme/simulate")]
        assert line.exchange == ref
        assert line.marginopt == pytest.approx(ref, rel=1e-8, abs=1e-11)
    # open orders and MMP are the exchange's alone, said to be not modelled
    for fld, ref in (("open_orders_margin", 0.000018212), ("mmp_margin", 0.06)):
        line = lines[(fld, "pme/simulate")]
        assert not line.modelled and line.exchange == ref and line.difference is None
    # marginopt's IM misses exactly the open-orders and MMP margin
    im = lines[("initial_margin", "account summary")]
    assert im.exchange == 0.122861343
    assert im.difference == pytest.approx(-(0.06 + 0.000018212), abs=1e-9)
    assert im.difference_usd == pytest.approx(im.difference * 65666.19, rel=1e-12)
    assert im.difference_pct == pytest.approx(100 * im.difference / 0.122861343, rel=1e-12)
    full = lines[("initial_margin + unmodelled (exchange's)", "pme/simulate")]
    assert full.difference == pytest.approx(0.0, abs=1e-9)
    mm = lines[("maintenance_margin", "account summary")]
    assert mm.marginopt == pytest.approx(0.050274504784, rel=1e-8)
    assert r.exchange_initial_margin_usd == pytest.approx(0.122861343 * 65666.19, rel=1e-12)
    assert any("open orders" in n and "1 open orders" in n for n in r.not_modelled)
    assert any("market-maker protection" in n for n in r.not_modelled)
    frame = r.to_frame()
    assert len(frame) == len(r.lines) and set(frame["source"]) == {"account summary", "pme/simulate"}
    json.loads(r.to_json())


def _pm_figures(fake: FakeDeribit, bump: float) -> dict:
    """The fake exchange's figures: marginopt's own worst case scaled by ``bump`` (a modelling
    difference), its roll shock, plus open-orders and MMP margin marginopt does not model."""
    market = mo.load_market(_sample_market())
    result = mo.margin(_sample_book(), market, "deribit-pm")
    out = {}
    for pool in result.by_underlying.values():
        wc = pool.components["worst_case"] * bump
        rs = pool.components["roll_shock"]
        oo, mmp = 0.01 * pool.initial_margin, 0.002 * pool.initial_margin
        out[pool.currency] = {"worst_case": wc, "roll_shock": rs, "open_orders_margin": oo,
                              "mmp_margin": mmp, "initial_margin": wc + rs + oo + mmp,
                              "maintenance_margin": 0.8 * (wc + rs)}
    return out, result


def test_reconcile_end_to_end_against_the_exchange(tmp_path, fake, url, env_creds):
    figures, ours = _pm_figures(fake, 1.004)
    fake.exchange_im.update(figures)
    out = tmp_path / "snaps"
    runner = CliRunner()
    res = runner.invoke(app, ["reconcile", "--live", "--venue", "deribit", "--url", url,
                              "--currency", "BTC,ETH", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["model"] == "deribit-pm"
    lines = {(l["currency"], l["figure"], l["source"]): l for l in doc["lines"]}
    for ccy in ("BTC", "ETH"):
        pool = ours.by_underlying[ccy]
        wc = lines[(ccy, "worst_case", "pme/simulate")]
        assert wc["marginopt"] == pytest.approx(pool.components["worst_case"], rel=1e-8)
        assert wc["difference_pct"] == pytest.approx(100 * (1 / 1.004 - 1), rel=1e-8)
        assert wc["difference_usd"] == pytest.approx(
            (1 - 1.004) * pool.components["worst_case"] * pool.usd_rate, rel=1e-8)
        im = lines[(ccy, "initial_margin", "account summary")]
        assert im["exchange"] == pytest.approx(figures[ccy]["initial_margin"], rel=1e-15)
        assert im["difference"] == pytest.approx(pool.initial_margin - figures[ccy]["initial_margin"],
                                                 rel=1e-8)
    # the snapshot was kept in --out, and the plain report says it all in words
    (snap,) = list(out.iterdir())
    res = runner.invoke(app, ["reconcile", str(snap)])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "Reconciliation of deribit-" in text and "marginopt model deribit-pm" in text
    assert "open_orders_margin" in text and "not modelled" in text
    assert "Not modelled: open orders" in text and "(1 open orders in the snapshot)" in text
    expected = ours.initial_margin_usd - sum(f["initial_margin"] * ours.by_underlying[c].usd_rate
                                             for c, f in figures.items())
    assert doc["difference_usd"] == pytest.approx(expected, rel=1e-8)
    assert f"difference {doc['difference_usd']:+,.2f} USD" in text
    assert_no_credentials(res.output)


def test_a_standard_account_reconciles_position_by_position(tmp_path, url, server, fake, creds):
    fake.margin_model = "segregated_sm"
    snap = fetch(tmp_path, ["BTC", "ETH"], url=url, credentials=creds)
    assert snap.pme == {}  # pme/simulate is for portfolio-margin accounts only
    r = reconcile(snap)
    assert r.model == "deribit-standard"
    per_position = [l for l in r.lines if l.source == "get_positions"]
    held = [n for n, q in _sample_book().items()]
    assert {l.figure.split(" ", 1)[1] for l in per_position} == set(held)
    market = snap.market
    for l in per_position:
        if l.figure.startswith("initial_margin "):
            name = l.figure.split(" ", 1)[1]
            alone = mo.margin({name: _sample_book()[name]}, market, "deribit-standard")
            assert l.marginopt == pytest.approx(alone.by_underlying[name.split("-")[0]].initial_margin,
                                                rel=1e-12)
    assert not any("delta shock" in n for n in r.not_modelled)


def test_reconcile_needs_an_account(tmp_path, url):
    snap = fetch(tmp_path, ["BTC"], url=url, account=False)
    with pytest.raises(SnapshotError, match="market only"):
        reconcile(snap)
    res = CliRunner().invoke(app, ["reconcile", str(snap.path)])
    assert res.exit_code == 2 and "market only" in res.stderr


def test_a_cross_collateral_account_reconciles_in_usd(tmp_path, fake, url, creds):
    figures, ours = _pm_figures(fake, 1.0)
    fake.exchange_im.update(figures)
    fake.margin_model = "cross_pm"
    fake.total_usd = (250_000.0, 180_000.0)
    fake.refuse_pme = (13021, "not_allowed")  # the account does not allow the simulation
    snap = fetch(tmp_path, ["BTC", "ETH"], url=url, credentials=creds)
    assert snap.pme["BTC"] == {"refused": {"code": 13021, "message": "the exchange answered error "
                                           "13021: not_allowed"}}
    r = reconcile(snap)
    assert r.cross_collateral and r.margin_model == "cross_pm"
    usd = {l.figure: l for l in r.lines if l.currency == "USD"}
    assert usd["initial_margin"].exchange == 250_000.0
    assert usd["initial_margin"].marginopt == pytest.approx(ours.initial_margin_usd, rel=1e-8)
    assert usd["maintenance_margin"].exchange == 180_000.0
    assert r.exchange_initial_margin_usd == 250_000.0
    assert r.difference_usd == pytest.approx(ours.initial_margin_usd - 250_000.0, rel=1e-8)
    # per-currency figures of a cross account are the whole account's: not compared per currency
    assert not [l for l in r.lines if l.currency in ("BTC", "ETH")]
    assert any("refused pme/simulate for BTC (error 13021" in n for n in r.notes)
