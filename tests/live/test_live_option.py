"""``--live`` on the commands that take a book and a market: ``margin`` and ``optimize`` fetch
the account and the market from the exchange first (here the local fake exchange), and give the
same answer as the same commands on the files ``fetch`` wrote."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from marginopt.cli import app
from marginopt.live import load_snapshot


def test_margin_and_optimize_live_equal_the_same_on_the_fetched_files(tmp_path, fake, url, env_creds):
    runner = CliRunner()
    res = runner.invoke(app, ["fetch", "--venue", "deribit", "--url", url, "--currency", "BTC,ETH",
                              "--out", str(tmp_path / "snaps")])
    assert res.exit_code == 0, res.output
    snap = load_snapshot(next(p for p in (tmp_path / "snaps").iterdir() if p.is_dir()))
    files = ["-p", str(snap.path / "positions.json"), "-m", str(snap.path / "market.json")]
    live = ["--live", "--venue", "deribit", "--url", url, "--currency", "BTC,ETH"]
    for command in (["margin", "--json"], ["optimize", "--json"]):
        a = runner.invoke(app, command + live)
        b = runner.invoke(app, command + files)
        assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
        got, want = json.loads(a.stdout), json.loads(b.stdout)
        if command[0] == "margin":
            assert got["initial_margin_usd"] == want["initial_margin_usd"] > 0
        else:
            assert got["margin_after"]["initial_margin_usd"] == want["margin_after"]["initial_margin_usd"]
            assert got["trades"] == want["trades"]


def test_live_and_files_together_is_an_error(tmp_path, url, env_creds):
    res = CliRunner().invoke(app, ["optimize", "-p", "book.csv", "--live", "--url", url])
    assert res.exit_code == 2 and "not both" in res.output
