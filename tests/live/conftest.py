"""A fake Deribit on 127.0.0.1 per test, clients pointed at it, and a credential leak check run
after every test of this folder (files under tmp_path, captured log records)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from ._fake import CLIENT_ID, CLIENT_SECRET, MARK, FakeDeribit


def assert_no_credentials(*texts: str, paths: tuple[Path, ...] = ()) -> None:
    """No text and no file under ``paths`` contains a credential or a session token."""
    for t in texts:
        assert MARK not in (t or ""), "a credential or token appears in the output"
    for root in paths:
        for p in Path(root).rglob("*"):
            if p.is_file():
                assert MARK.encode() not in p.read_bytes(), f"a credential appears in {p}"


@pytest.fixture
def fake():
    """The fake exchange's state (faults are scripted on it before the client runs)."""
    return FakeDeribit()


@pytest.fixture
def server(fake):
    # the exchange's own request log would hold the login query (the exchange sees credentials)
    logging.getLogger("werkzeug").disabled = True
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.expect_request(re.compile(r"^/api/v2/.*")).respond_with_handler(lambda r: fake.handle(r))
    srv.start()
    try:
        yield srv
    finally:
        fake.release.set()
        srv.clear()
        if srv.is_running():
            srv.stop()


@pytest.fixture
def url(server) -> str:
    return server.url_for("").rstrip("/")


@pytest.fixture
def creds():
    from marginopt.live import Credentials
    return Credentials(CLIENT_ID, CLIENT_SECRET, source="test")


@pytest.fixture
def env_creds(monkeypatch):
    monkeypatch.setenv("DERIBIT_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("DERIBIT_CLIENT_SECRET", CLIENT_SECRET)


@pytest.fixture
def client_for(url, creds):
    """A client of the fake with short time-outs and back-offs; ``sleeps`` records its waits."""
    from marginopt.live import DeribitClient, RetryPolicy

    def make(**retry):
        sleeps: list[float] = []
        policy = RetryPolicy(**{"attempts": 3, "timeout_s": 2.0, "backoff_s": 0.01,
                                "max_backoff_s": 0.05, **retry})
        c = DeribitClient(creds, url=url, retry=policy, sleep=sleeps.append)
        c.sleeps = sleeps
        return c
    return make


@pytest.fixture(autouse=True)
def _no_leaks(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    yield
    texts = [r.getMessage() for r in caplog.records] + [caplog.text]
    assert_no_credentials(*texts, paths=(tmp_path,))
