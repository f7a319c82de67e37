"""fetch against the fake exchange: the snapshot's shape, atomicity, and each failure's typed error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import marginopt as mo
from marginopt.errors import (CredentialsError, ExchangeAuthError, ExchangeNetworkError,
                              ExchangeRateLimited, ExchangeRejected, ExchangeServerError,
                              ExchangeTimeout, MalformedReply, PartialData, SnapshotError)
from marginopt.live import fetch, load_credentials, load_snapshot

from ._fake import CLIENT_ID, CLIENT_SECRET, MARK, _sample_book, _sample_market
from .conftest import assert_no_credentials


def test_fetch_writes_a_complete_snapshot_the_loaders_read(tmp_path, fake, client_for):
    client = client_for()
    snap = fetch(tmp_path, ["BTC", "ETH", "USDC"], client=client)
    assert [p.name for p in tmp_path.iterdir()] == [snap.name]
    assert snap.name.startswith("deribit-") and snap.name.endswith("Z")
    names = sorted(p.name for p in snap.path.iterdir())
    assert names == ["account_summary.json", "manifest.json", "market.json", "open_orders.json",
                     "pme_simulate.json", "positions.json"]
    # the market: every listed row, unchanged, in the shape load_market reads
    market = mo.load_market(snap.path / "market.json")
    sample = _sample_market()
    assert sorted(market.instrument_names) == sorted(r["instrument_name"] for r in sample["instruments"])
    raw = json.loads((snap.path / "market.json").read_text())
    row = next(r for r in raw["instruments"] if r["instrument_name"] == "BTC-27NOV26-84000-C")
    assert row["mark_price"] == 0.13916102 and row["underlying_index"] == "BTC-27NOV26"
    assert dict(market.index_prices) == sample["index_prices"]
    # the exchange's clock (usOut), not the machine's, is the valuation time
    assert raw["valuation_time"] == "2026-11-20T08:00:00.000150Z"
    # the book: load_portfolio reads the positions file as it is
    book = mo.load_portfolio(snap.path / "positions.json")
    expected = _sample_book()
    assert set(book.positions) == set(expected)
    for name, q in expected.items():
        assert book.positions[name] == pytest.approx(q, rel=1e-12)
    assert snap.portfolio().positions == book.positions
    assert len(snap.open_orders) == 1 and snap.open_orders[0]["order_id"] == "11223344"
    assert set(snap.account_summaries) == {"BTC", "ETH", "USDC"}
    assert set(snap.pme) == {"BTC", "ETH", "USDC"}
    m = snap.manifest
    assert m["venue"] == "deribit" and m["currencies"] == ["BTC", "ETH", "USDC"] and m["account"]
    assert m["calls"]["public/auth"] == 1
    assert m["calls"]["public/get_book_summary_by_currency"] == 6  # option + future per currency
    # the exchange saw one login, then bearer tokens only
    assert fake.calls("public/auth") == 1


def test_market_only_needs_no_credentials(tmp_path, url, monkeypatch):
    monkeypatch.delenv("DERIBIT_CLIENT_ID", raising=False)
    monkeypatch.delenv("DERIBIT_CLIENT_SECRET", raising=False)
    snap = fetch(tmp_path, ["BTC"], url=url, account=False)
    assert not snap.has_account and len(snap.market.rows) > 0
    with pytest.raises(SnapshotError, match="market only"):
        snap.portfolio()


def test_retry_after_is_respected_then_the_call_succeeds(tmp_path, fake, client_for):
    fake.script("public/get_index_price", ("status", 429, 0.25), ("status", 500))
    client = client_for()
    fetch(tmp_path, ["BTC"], client=client)
    # waited the exchange's Retry-After, then the back-off after the 500
    assert client.sleeps == [0.25, 0.02]
    assert fake.calls("public/get_index_price") == 3


def test_429_after_every_retry_is_rate_limited(tmp_path, fake, client_for):
    fake.script("public/get_book_summary_by_currency", *[("status", 429, 0.01)] * 3)
    with pytest.raises(ExchangeRateLimited) as err:
        fetch(tmp_path, ["BTC"], client=client_for())
    assert err.value.endpoint == "public/get_book_summary_by_currency"
    assert err.value.attempts == 3 and err.value.retry_after_s == 0.01
    assert "deribit public/get_book_summary_by_currency" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_retry_after_beyond_the_limit_fails_at_once(tmp_path, fake, client_for):
    fake.script("public/get_book_summary_by_currency", ("status", 429, 3600))
    client = client_for(max_retry_after_s=30)
    with pytest.raises(ExchangeRateLimited, match="Retry-After 3600"):
        fetch(tmp_path, ["BTC"], client=client)
    assert client.sleeps == [] and fake.calls("public/get_book_summary_by_currency") == 1


def test_5xx_on_every_attempt_is_a_server_error(tmp_path, fake, client_for):
    fake.script("private/get_positions", ("status", 500), ("status", 502), ("status", 500))
    with pytest.raises(ExchangeServerError) as err:
        fetch(tmp_path, ["BTC"], client=client_for())
    assert err.value.status == 500 and err.value.endpoint == "private/get_positions"
    assert list(tmp_path.iterdir()) == []


def test_slow_replies_time_out(tmp_path, fake, client_for):
    fake.script("private/get_account_summary", *[("slow", 1.0)] * 2)
    with pytest.raises(ExchangeTimeout, match="no reply within 0.2 s") as err:
        fetch(tmp_path, ["BTC"], client=client_for(attempts=2, timeout_s=0.2))
    assert err.value.endpoint == "private/get_account_summary" and err.value.attempts == 2
    assert list(tmp_path.iterdir()) == []


def test_one_slow_reply_is_retried(tmp_path, fake, client_for):
    fake.script("public/get_index_price", ("slow", 1.0))
    snap = fetch(tmp_path, ["BTC"], client=client_for(timeout_s=0.3))
    assert snap.market.index_prices["BTC"] == 97250.0


def test_malformed_json_is_a_malformed_reply(tmp_path, fake, client_for):
    fake.script("public/get_book_summary_by_currency", ("malformed",))
    with pytest.raises(MalformedReply, match="not JSON") as err:
        fetch(tmp_path, ["BTC"], client=client_for())
    assert err.value.endpoint == "public/get_book_summary_by_currency"


def test_a_reply_without_result_is_malformed(tmp_path, fake, client_for):
    fake.script("private/get_open_orders_by_currency", ("no_result",))
    with pytest.raises(MalformedReply, match="no 'result'"):
        fetch(tmp_path, ["BTC"], client=client_for())


def test_an_expired_token_logs_in_again(tmp_path, fake, client_for):
    fake.script("private/get_open_orders_by_currency", ("expired",))
    snap = fetch(tmp_path, ["BTC"], client=client_for())
    assert fake.calls("public/auth") == 2 and snap.open_orders


def test_refused_credentials_are_an_auth_error_without_the_secret(tmp_path, url):
    from marginopt.live import Credentials, DeribitClient, RetryPolicy
    bad = Credentials(CLIENT_ID, f"wrong-{MARK}", source="test")
    client = DeribitClient(bad, url=url, retry=RetryPolicy(attempts=2, timeout_s=2))
    with pytest.raises(ExchangeAuthError, match="refused the credentials: invalid_credentials") as err:
        fetch(tmp_path, ["BTC"], client=client)
    assert err.value.endpoint == "public/auth"
    assert_no_credentials(str(err.value), repr(err.value), repr(bad))


def test_a_token_refused_after_a_fresh_login_is_an_auth_error(tmp_path, fake, client_for):
    fake.script("private/get_positions", ("expired",), ("expired",))
    with pytest.raises(ExchangeAuthError, match="after a fresh login"):
        fetch(tmp_path, ["BTC"], client=client_for())


def test_an_exchange_error_is_rejected_with_its_code(tmp_path, client_for):
    with pytest.raises(ExchangeRejected, match="10020") as err:
        client_for().index_price("nope_usd")
    assert err.value.code == 10020 and err.value.endpoint == "public/get_index_price"


def test_connection_refused_is_a_network_error(tmp_path, creds):
    import socket

    from marginopt.live import DeribitClient, RetryPolicy
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    client = DeribitClient(creds, url=f"http://127.0.0.1:{port}", sleep=sleeps.append,
                           retry=RetryPolicy(attempts=3, timeout_s=1, backoff_s=0.1, max_backoff_s=0.15))
    with pytest.raises(ExchangeNetworkError) as err:
        fetch(tmp_path, ["BTC"], client=client)
    assert err.value.attempts == 3 and sleeps == [0.1, 0.15]
    # the login, whose query carries the secret, fails the same way and says nothing of it
    with pytest.raises(ExchangeNetworkError) as err:
        client.login()
    assert err.value.endpoint == "public/auth"
    assert_no_credentials(str(err.value), repr(err.value.__context__ if not err.value.__suppress_context__ else ""))


def test_a_position_the_market_does_not_list_is_partial_data(tmp_path, fake, client_for, monkeypatch):
    real = fake._positions

    def with_delisted(ccy):
        rows = real(ccy)
        if ccy == "BTC":
            rows.append({**rows[0], "instrument_name": "BTC-27NOV26-99999-C"})
        return rows
    monkeypatch.setattr(fake, "_positions", with_delisted)
    with pytest.raises(PartialData, match="BTC-27NOV26-99999-C") as err:
        fetch(tmp_path, ["BTC"], client=client_for())
    assert err.value.endpoint == "private/get_positions"
    assert list(tmp_path.iterdir()) == []


def test_no_instruments_for_a_currency_is_partial_data(tmp_path, client_for):
    with pytest.raises(PartialData, match="no instruments listed for XRP"):
        fetch(tmp_path, ["XRP"], client=client_for())


def test_credentials_from_a_file_only_its_owner_reads(tmp_path):
    f = tmp_path / "deribit.json"
    f.write_text(json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
    f.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600") as err:
        load_credentials("deribit", f)
    assert_no_credentials(str(err.value))
    f.chmod(0o600)
    c = load_credentials("deribit", f)
    assert c.client_id == CLIENT_ID and MARK not in repr(c) and MARK not in str(c)
    env = tmp_path / "deribit.env"
    env.write_text(f"DERIBIT_CLIENT_ID={CLIENT_ID}\nexport DERIBIT_CLIENT_SECRET='{CLIENT_SECRET}'\n")
    env.chmod(0o600)
    assert load_credentials("deribit", env).client_secret == CLIENT_SECRET
    with pytest.raises(CredentialsError, match="DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET not set"):
        load_credentials("deribit", environ={})
    f.unlink(), env.unlink()  # the leak check reads tmp_path: the test's own secrets go


def test_a_kill_during_fetch_leaves_no_snapshot(tmp_path, fake, url):
    """A fetch killed (SIGKILL) while the exchange is slow leaves --out empty."""
    out = tmp_path / "snaps"
    out.mkdir()
    fake.script("private/get_account_summary", ("hold",))
    env = {**os.environ, "DERIBIT_CLIENT_ID": CLIENT_ID, "DERIBIT_CLIENT_SECRET": CLIENT_SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "marginopt.cli", "fetch", "--url", url,
                             "--currency", "BTC,ETH", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert fake.entered["private/get_account_summary"].wait(60), "the fetch never got there"
        proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        fake.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.iterdir()) == []
    assert_no_credentials(stdout.decode(), stderr.decode())
    # the next fetch works and leaves exactly one complete snapshot
    snap = fetch(out, ["BTC"], url=url, credentials=mo.live.Credentials(CLIENT_ID, CLIENT_SECRET))
    assert [p.name for p in out.iterdir()] == [snap.name]


def test_a_partial_folder_left_by_a_dead_writer_is_ignored_and_removed(tmp_path, client_for):
    dead = tmp_path / ".deribit-20261120T080000.000Z.partial-999999"
    dead.mkdir()
    (dead / "market.json").write_text("{")
    assert mo.live.list_snapshots(tmp_path) == []
    with pytest.raises(SnapshotError, match="not a complete snapshot"):
        load_snapshot(dead)
    snap = fetch(tmp_path, ["BTC"], client=client_for())
    assert [p.name for p in tmp_path.iterdir()] == [snap.name]


def test_fetch_command(tmp_path, fake, url, env_creds):
    from typer.testing import CliRunner

    from marginopt.cli import app
    runner = CliRunner()
    out = tmp_path / "snaps"
    res = runner.invoke(app, ["fetch", "--venue", "deribit", "--url", url, "--currency", "BTC,ETH",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    (snap,) = list(out.iterdir())
    assert res.stdout.startswith(f"Wrote {snap} (") and "44 positions, 1 open orders" in res.stdout
    assert "pme/simulate for BTC, ETH" in res.stdout
    # every failure: exit 2, one line naming the endpoint
    fake.script("public/get_book_summary_by_currency", ("status", 503))
    res = runner.invoke(app, ["fetch", "--url", url, "--out", str(out), "--retries", "0"])
    assert res.exit_code == 2
    assert res.stderr == "error: deribit public/get_book_summary_by_currency: server error HTTP 503\n"
    creds_file = tmp_path / "creds.env"
    creds_file.write_text("client_id=x\nclient_secret=y\n")
    creds_file.chmod(0o640)
    res = runner.invoke(app, ["fetch", "--url", url, "--out", str(out), "--credentials", str(creds_file)])
    assert res.exit_code == 2 and "mode 640" in res.stderr and "chmod 600" in res.stderr
    assert len(list(out.iterdir())) == 1
    assert_no_credentials(res.output)
