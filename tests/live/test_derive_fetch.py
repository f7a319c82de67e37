"""fetch / reconcile / watch for Derive against a fake Derive on 127.0.0.1 (ccxt's derive class
signs each private call; the fake verifies the signature), each failure's typed error, and no
credential in any output."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from functools import lru_cache

import pytest
from pytest_httpserver import HTTPServer

import marginopt as mo
from marginopt.errors import (CredentialsError, ExchangeAuthError, ExchangeRateLimited,
                              ExchangeServerError, MalformedReply, PartialData)
from marginopt.live import Credentials, RetryPolicy, fetch, load_credentials, load_snapshot, reconcile

from ..derive._cases import CASE_FILES, close, require_cases
from ._fake_derive import SESSION_KEY, SUBACCOUNT, WALLET, WRONG_KEY, FakeDerive, NotExpressible

SECRETS = (SESSION_KEY, SESSION_KEY.removeprefix("0x"), WALLET)


@lru_cache(maxsize=None)
def _candidates() -> tuple[tuple[object, FakeDerive], ...]:
    out = []
    for p in CASE_FILES:
        try:
            out.append((p, FakeDerive(p)))
        except NotExpressible:
            continue
    return tuple(out)


def _same(a: object, b: object) -> bool:
    """Parameter blocks equal up to float noise (the files print 0.02 - 0.015 as 0.005000000000000001)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _pick(*, collaterals: bool) -> FakeDerive:
    """A fresh fake of a case holding options and a perp (and collaterals, or none), with the
    shipped PM2 parameters: chosen by content, not by file name (any subset of cases will do)."""
    require_cases()
    from marginopt.derive import load_params
    from marginopt.derive._params import params_to_block
    default = params_to_block(load_params())
    for path, f in _candidates():
        kinds = {mo.parse_instrument(n).kind.value for n, q in f.book.positions.items() if q}
        if kinds >= {"option", "perpetual"} and bool(len(f.case.collateral_name)) == collaterals \
                and _same(f.parameters(), default):
            return FakeDerive(path)
    pytest.skip("no golden case here holds options and a perp" +
                (" with collaterals" if collaterals else " without collaterals"))


@pytest.fixture(scope="module")
def _server():
    """One server for the module; each test points it at a fresh fake (``_route``)."""
    logging.getLogger("werkzeug").disabled = True
    route: dict[str, FakeDerive] = {}
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.expect_request(re.compile(r"^/(public|private)/.*")).respond_with_handler(
        lambda r: route["fake"].handle(r))
    srv.start()
    try:
        yield srv, route
    finally:
        srv.clear()
        if srv.is_running():
            srv.stop()


def _serve(_server, fake: FakeDerive):
    srv, route = _server
    route["fake"] = fake
    yield fake
    fake.release.set()


@pytest.fixture(params=[False, True], ids=["cash-only", "collaterals"])
def each_fake(request, _server):
    """Both kinds of account: the happy paths run on each."""
    yield from _serve(_server, _pick(collaterals=request.param))


@pytest.fixture
def dfake(_server):
    """One account (with collaterals when a case has them): the failure paths."""
    require_cases()
    try:
        fake = _pick(collaterals=True)
    except pytest.skip.Exception:
        fake = _pick(collaterals=False)
    yield from _serve(_server, fake)


@pytest.fixture
def durl(_server):
    return _server[0].url_for("").rstrip("/")


@pytest.fixture
def dcreds():
    return Credentials(WALLET, SESSION_KEY, source="test", account=str(SUBACCOUNT))


@pytest.fixture
def dclient(durl, dcreds):
    from marginopt.live import DeriveClient

    def make(creds=dcreds, **retry):
        sleeps: list[float] = []
        policy = RetryPolicy(**{"attempts": 3, "timeout_s": 5.0, "backoff_s": 0.01,
                                "max_backoff_s": 0.05, **retry})
        c = DeriveClient(creds, url=durl, retry=policy, sleep=sleeps.append)
        c.sleeps = sleeps
        return c
    return make


@pytest.fixture(autouse=True)
def _no_key_leaks(tmp_path, caplog):
    """The session key and the wallet (which cannot carry the suite's marker) appear nowhere."""
    caplog.set_level(logging.DEBUG)
    yield
    texts = [r.getMessage() for r in caplog.records] + [caplog.text]
    for secret in SECRETS:
        assert not any(secret.lower() in (t or "").lower() for t in texts), "a key in the logs"
        for p in tmp_path.rglob("*"):
            if p.is_file():
                assert secret.lower().encode() not in p.read_bytes().lower(), f"a key in {p}"


# --------------------------------------------------------------------------- the happy path
def test_fetch_and_reconcile_reproduce_the_exchange(tmp_path, each_fake, dclient):
    dfake = each_fake
    client = dclient()
    snap = fetch(tmp_path, [dfake.currency], venue="derive", client=client)
    assert [p.name for p in tmp_path.iterdir()] == [snap.name] and snap.name.startswith("derive-")
    assert sorted(p.name for p in snap.path.iterdir()) == [
        "account_summary.json", "derive.json", "manifest.json", "market.json", "open_orders.json",
        "positions.json"]
    m = snap.manifest
    assert m["venue"] == "derive" and m["currencies"] == [dfake.currency]
    expiries = len({mo.parse_instrument(n).expiry for n in dfake.market.rows.index} - {None})
    assert m["calls"] == {"public/get_instruments": 2, "public/get_tickers": expiries + 1,
                          "public/get_latest_signed_feeds": 1, "private/get_subaccount": 1,
                          "private/get_positions": 1}
    # the exchange's clock is the valuation time; Derive's names are kept beside marginopt's
    assert snap.market.valuation_time.timestamp() == dfake.now
    assert set(snap.market.rows.index) == set(dfake.market.rows.index)
    assert all(mo.derive.marginopt_name(v) == k for k, v in snap.market.rows["native_name"].items())
    assert snap.portfolio().positions == {n: q for n, q in dfake.book.positions.items() if q}
    # PM2 with the account and the oracles: the exchange's figures to the golden tolerance
    r = reconcile(snap, collateral_params=dfake.collateral_params())
    raw = dfake.case.expected.raw
    mtm, im, mm = float(raw["PortfolioMTM"]), float(raw["IM"]), float(raw["MM"])
    assert close(r.initial_margin_usd, mtm - im) and close(r.exchange_initial_margin_usd, mtm - im)
    assert close(r.maintenance_margin_usd, mtm - mm)
    lines = {l.figure: l for l in r.lines}
    assert close(lines["subaccount_value"].marginopt, mtm)
    assert close(lines["initial_margin (surplus)"].marginopt, im)
    assert abs(r.difference_pct) < 1e-6 and not lines["open_orders_margin"].modelled
    assert r.margin_model == "PM2" and len(r.not_modelled) == 3
    # the shipped model margins the fetched book too (on the tickers' vols, rates 0)
    shipped = mo.margin(snap.portfolio(), snap.market, "derive-pm2")
    assert shipped.initial_margin_usd > 0
    assert mo.live.margin_model_of(next(iter(snap.account_summaries.values()))) == "derive-pm2"


def test_a_collateral_needs_its_haircuts_to_reconcile(tmp_path, each_fake, dclient):
    dfake = each_fake
    snap = fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    if not len(dfake.case.collateral_name):
        pytest.skip("a cash-only account needs no collateral parameters")
    with pytest.raises(mo.errors.InputError, match="IMHaircut") as err:
        reconcile(snap)
    assert err.value.row == dfake.case.collateral_name[0]


def test_market_only_needs_no_credentials(tmp_path, dfake, durl):
    snap = fetch(tmp_path, [dfake.currency], venue="derive", url=durl, account=False)
    assert not snap.has_account and len(snap.market.rows) == len(dfake.market.rows)
    assert dfake.calls("private/get_subaccount") == 0


# --------------------------------------------------------------------------- failures
def test_429_is_waited_out_then_the_call_succeeds(tmp_path, dfake, dclient):
    dfake.script("public/get_latest_signed_feeds", ("status", 429, 0.02))
    client = dclient()
    fetch(tmp_path, [dfake.currency], venue="derive", client=client)
    assert client.sleeps == [0.02] and dfake.calls("public/get_latest_signed_feeds") == 2


def test_429_on_every_attempt_is_rate_limited_and_nothing_is_written(tmp_path, dfake, dclient):
    dfake.script("public/get_tickers", *[("status", 429)] * 3)
    with pytest.raises(ExchangeRateLimited) as err:
        fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    assert err.value.endpoint == "public/get_tickers" and err.value.attempts == 3
    assert list(tmp_path.iterdir()) == []


def test_a_retry_after_beyond_the_limit_fails_at_once(tmp_path, dfake, dclient):
    dfake.script("private/get_positions", ("status", 429, 3600))
    with pytest.raises(ExchangeRateLimited, match="Retry-After 3600"):
        fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    assert dfake.calls("private/get_positions") == 1 and list(tmp_path.iterdir()) == []


def test_5xx_on_every_attempt_is_a_server_error(tmp_path, dfake, dclient):
    dfake.script("private/get_subaccount", *[("status", 500)] * 3)
    with pytest.raises(ExchangeServerError) as err:
        fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    assert str(err.value).startswith("derive private/get_subaccount: server error HTTP 500")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", ["malformed", "no_result"])
def test_a_malformed_reply_is_named(tmp_path, dfake, dclient, fault):
    dfake.script("public/get_tickers", (fault,))
    with pytest.raises(MalformedReply) as err:
        fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    assert err.value.endpoint == "public/get_tickers" and list(tmp_path.iterdir()) == []


def test_a_malformed_row_is_a_malformed_reply_naming_the_row(tmp_path, dfake, dclient, monkeypatch):
    good = dfake._tickers

    def bad(ccy, kind, expiry_date):
        rows = good(ccy, kind, expiry_date)
        for t in rows.values():
            t["mark_price"] = "not-a-number"
        return rows
    monkeypatch.setattr(dfake, "_tickers", bad)
    with pytest.raises(MalformedReply, match="mark_price") as err:
        fetch(tmp_path, [dfake.currency], venue="derive", client=dclient())
    assert err.value.endpoint == "public/get_tickers"


@pytest.mark.parametrize("creds", [
    Credentials(WALLET, WRONG_KEY, source="test", account=str(SUBACCOUNT)),
    Credentials("0x" + "1" * 40, SESSION_KEY, source="test", account=str(SUBACCOUNT)),
    Credentials(WALLET, SESSION_KEY, source="test", account="1"),
], ids=["wrong-session-key", "wrong-wallet", "wrong-subaccount"])
def test_a_refused_signature_is_an_auth_error_without_the_key(tmp_path, dfake, dclient, creds):
    client = dclient(creds)
    with pytest.raises(ExchangeAuthError) as err:
        fetch(tmp_path, [dfake.currency], venue="derive", client=client)
    assert err.value.endpoint == "private/get_subaccount"
    assert dfake.calls("private/get_subaccount") == 1  # a refusal is not retried
    assert not any(s.lower() in str(err.value).lower() for s in (*SECRETS, WRONG_KEY[2:]))
    assert list(tmp_path.iterdir()) == []


def test_no_instruments_for_a_currency_is_partial_data(tmp_path, dfake, dclient):
    other = "BTC" if dfake.currency == "ETH" else "ETH"
    with pytest.raises(PartialData, match=f"no instruments listed for {other}"):
        fetch(tmp_path, [other], venue="derive", client=dclient())


def test_credentials_from_the_environment_or_an_owner_only_file(tmp_path, monkeypatch):
    env = {"DERIVE_WALLET": WALLET, "DERIVE_SESSION_KEY": SESSION_KEY}
    with pytest.raises(CredentialsError, match="DERIVE_SUBACCOUNT_ID"):
        load_credentials("derive", environ=env)
    c = load_credentials("derive", environ={**env, "DERIVE_SUBACCOUNT_ID": "42"})
    assert (c.client_id, c.account) == (WALLET, "42") and SESSION_KEY not in repr(c)
    f = tmp_path / "derive.json"
    f.write_text(json.dumps({"wallet": WALLET, "session_key": SESSION_KEY, "subaccount_id": 7}))
    f.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials("derive", f)
    f.chmod(0o600)
    c = load_credentials("derive", f)
    assert (c.client_id, c.client_secret, c.account) == (WALLET, SESSION_KEY, "7")
    f.unlink()  # the leak check reads every file under tmp_path


def test_a_kill_during_fetch_leaves_no_snapshot(tmp_path, dfake, durl):
    out = tmp_path / "snaps"
    out.mkdir()
    dfake.script("private/get_positions", ("hold",))
    env = {**os.environ, "DERIVE_WALLET": WALLET, "DERIVE_SESSION_KEY": SESSION_KEY,
           "DERIVE_SUBACCOUNT_ID": str(SUBACCOUNT)}
    proc = subprocess.Popen([sys.executable, "-m", "marginopt.cli", "fetch", "--venue", "derive",
                             "--url", durl, "--currency", dfake.currency, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert dfake.entered["private/get_positions"].wait(60), "the fetch never got there"
        proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        dfake.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and list(out.iterdir()) == []
    for s in SECRETS:
        assert s.lower() not in (stdout + stderr).decode().lower()


# --------------------------------------------------------------------------- the commands
def test_fetch_and_reconcile_commands(tmp_path, each_fake, durl, monkeypatch):
    dfake = each_fake
    from typer.testing import CliRunner

    from marginopt.cli import app
    monkeypatch.setenv("DERIVE_WALLET", WALLET)
    monkeypatch.setenv("DERIVE_SESSION_KEY", SESSION_KEY)
    monkeypatch.setenv("DERIVE_SUBACCOUNT_ID", str(SUBACCOUNT))
    runner = CliRunner()
    out = tmp_path / "snaps"
    res = runner.invoke(app, ["fetch", "--venue", "derive", "--url", durl, "--currency",
                              dfake.currency, "--out", str(out)])
    assert res.exit_code == 0, res.output
    (snap,) = list(out.iterdir())
    held = sum(1 for q in dfake.book.positions.values() if q)
    assert res.stdout.startswith(f"Wrote {snap} (") and f"{held} positions, 0 open orders" in res.stdout
    params = tmp_path / "collaterals.json"
    params.write_text(json.dumps(dfake.collateral_params()))
    res = runner.invoke(app, ["reconcile", str(snap), "--collateral-params", str(params)])
    assert res.exit_code == 0, res.output
    assert "account margin model PM2" in res.stdout and "Not modelled: open orders" in res.stdout
    im_line = next(l for l in res.stdout.splitlines() if l.startswith("Initial margin:"))
    assert re.search(r"difference [+-]0\.00 USD \([+-]0\.00%\)", im_line), im_line
    if os.environ.get("MARGINOPT_SHOW_RECONCILE"):  # the README's sample: print it on request
        sys.__stdout__.write(res.stdout)
    res = runner.invoke(app, ["reconcile", str(snap), "--json", "--collateral-params", str(params)])
    assert json.loads(res.stdout)["venue"] == "derive"
    # a failure: exit 2, one line naming the endpoint
    dfake.script("public/get_latest_signed_feeds", ("status", 503))
    res = runner.invoke(app, ["fetch", "--venue", "derive", "--url", durl, "--currency",
                              dfake.currency, "--out", str(out), "--retries", "0"])
    assert res.exit_code == 2
    assert res.stderr == "error: derive public/get_latest_signed_feeds: server error HTTP 503\n"
    assert len(list(out.iterdir())) == 1


def test_watch_over_derive(tmp_path, dfake, dclient):
    """Two cycles of watch on the exchange: each fetch margins with derive-pm2 and the account's
    book; nothing half-written."""
    import threading

    from marginopt.live import Watcher, exchange_source
    stop = threading.Event()
    client = dclient()
    source = exchange_source(client, [dfake.currency], every_s=0.01, stop=stop,
                             snapshots=tmp_path / "snaps")
    lines: list[str] = []
    watcher = Watcher("derive-pm2", None, emit=lines.append)
    reports = watcher.run(source, cycles=2, stop=stop)
    assert len(reports) == 2 and all(r.status is not None for r in reports), reports
    assert watcher.rebalancer.model.name == "derive-pm2"
    assert len(load_snapshot(sorted((tmp_path / "snaps").iterdir())[0]).positions) > 0
