"""watch: one warm Rebalancer over snapshots arriving in a folder or fetched from the exchange."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from marginopt.cli import app, sample_paths
from marginopt.live import Watcher, fetch, folder_source, load_snapshot
from marginopt.live._cli import parse_every
from marginopt.live._watch import Tick

from ._fake import CLIENT_ID, CLIENT_SECRET
from .conftest import assert_no_credentials

SPEC = str(sample_paths()["spec"])


def _env() -> dict[str, str]:
    return {**os.environ, "DERIBIT_CLIENT_ID": CLIENT_ID, "DERIBIT_CLIENT_SECRET": CLIENT_SECRET}


def test_every_parses_durations():
    assert [parse_every(t) for t in ("10s", "500ms", "2m", "1h", "0.25")] == [10, 0.5, 120, 3600, 0.25]
    from marginopt.errors import InputError
    for bad in ("", "ten seconds", "0s", "-1s"):
        with pytest.raises(InputError):
            parse_every(bad)


def test_folder_source_yields_the_newest_then_each_arrival(tmp_path, fake, url, creds):
    folder = tmp_path / "snaps"
    old = fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
    newest = fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
    (folder / ".deribit-20991231T000000.000Z.partial-1").mkdir()  # a write under way: ignored
    stop = threading.Event()
    src = folder_source(folder, every_s=0.01, stop=stop)
    first = next(src)
    assert first.label == newest.name and first.error is None and first.model == "deribit-pm"
    fake.move(1.02)
    arrived = fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
    second = next(src)
    assert second.label == arrived.name and old.name not in (first.label, second.label)
    assert second.market.index_prices["BTC"] == pytest.approx(97250.0 * 1.02, rel=1e-12)
    stop.set()
    assert list(src) == []


def test_a_proposal_is_emitted_only_when_the_trades_change(tmp_path, fake, url, creds):
    folder = tmp_path / "snaps"
    out = tmp_path / "proposals"
    lines: list[str] = []
    w = Watcher("deribit-pm", SPEC, out=out, emit=lines.append)
    s1 = load_snapshot(fetch(folder, ["BTC", "ETH"], url=url, credentials=creds).path)
    tick = Tick(s1.name, s1.market, s1.portfolio(), model="deribit-pm")
    r1 = w.step(tick)
    assert r1.emitted and r1.status == "optimal" and r1.latency_s > 0
    doc = json.loads(lines[0])
    assert doc["snapshot"] == s1.name and doc["saved_usd"] > 0 and doc["trades"]
    assert json.loads((out / f"proposal-{s1.name}.json").read_text())["status"] == "optimal"
    # the same market again: same trades, nothing emitted
    r2 = w.step(Tick("again", s1.market, s1.portfolio(), model="deribit-pm"))
    assert not r2.emitted and "same trades" in r2.why and len(lines) == 1
    # the market moves 3%: the optimum moves by whole lots, a new proposal
    fake.move(1.03)
    s3 = fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
    r3 = w.step(Tick(s3.name, s3.market, s3.portfolio(), model="deribit-pm"))
    assert r3.emitted and len(lines) == 2
    assert json.loads(lines[1])["trades"] != doc["trades"]
    # a saving below min_saving_usd is not proposed
    w_high = Watcher("deribit-pm", SPEC, min_saving_usd=1e12, emit=lines.append)
    r4 = w_high.step(Tick(s3.name, s3.market, s3.portfolio(), model="deribit-pm"))
    assert not r4.emitted and r4.status == "no_trade" and "minimum" in r4.why
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"proposal-{s1.name}.json", f"proposal-{s3.name}.json"])


def test_watch_the_exchange_survives_errors(tmp_path, fake, url, env_creds):
    fake.moving = True
    fake.script("public/get_index_price", ("ok",), ("ok",), ("status", 500))  # cycle 2 fails
    out = tmp_path / "proposals"
    runner = CliRunner()
    res = runner.invoke(app, ["watch", "--venue", "deribit", "--url", url, "--currency", "BTC,ETH",
                              "--every", "10ms", "--cycles", "3", "--retries", "0", "--spec", SPEC,
                              "--out", str(out), "--snapshots", str(tmp_path / "snaps")])
    assert res.exit_code == 0, res.output
    err = res.stderr
    assert "cycle 1 " in err and "cycle 2 " in err and "cycle 3 " in err
    assert "cycle 2" in err and "source failed: deribit public/get_index_price: server error HTTP 500" in err
    assert "latency" in err and "watch: 3 cycles" in err
    emitted = [json.loads(l) for l in res.stdout.splitlines()]
    assert 1 <= len(emitted) <= 2 and all(e["status"] == "optimal" for e in emitted)
    assert [e["cycle"] for e in emitted][0] == 1
    assert len(list(out.iterdir())) == len(emitted)
    assert len(list((tmp_path / "snaps").iterdir())) == 2  # the failed cycle wrote none
    assert_no_credentials(res.output)


def _wait_for(stream, text: str, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never appeared: {''.join(lines)}")


def _finish(proc: subprocess.Popen, err: list[str], timeout: float) -> tuple[str, str]:
    """stdout and all of stderr; a watcher that does not stop in time is killed and the test
    fails with everything it wrote (a bare TimeoutExpired would hide why)."""
    try:
        stdout, rest = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, rest = proc.communicate()
        raise AssertionError(f"watch did not stop within {timeout} s\nstderr:\n{''.join(err) + rest}"
                             f"\nstdout:\n{stdout}") from None
    return stdout, "".join(err) + rest


def test_watch_a_folder_three_cycles_then_sigterm(tmp_path, fake, url, creds):
    folder = tmp_path / "snaps"
    out = tmp_path / "proposals"
    fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
    cmd = [sys.executable, "-m", "marginopt.cli", "watch", "--folder", str(folder), "--every",
           "20ms", "--spec", SPEC, "--out", str(out)]
    # --cycles 3: the snapshot there, then two that arrive while it watches
    proc = subprocess.Popen(cmd + ["--cycles", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    err: list[str] = []
    try:
        _wait_for(proc.stderr, "cycle 1 ", err)
        for factor in (1.03, 1.0 / 1.03):
            fake.move(factor)
            fetch(folder, ["BTC", "ETH"], url=url, credentials=creds)
        stdout, err_text = _finish(proc, err, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err_text
    assert "cycle 3 " in err_text and "watch: 3 cycles" in err_text, err_text
    lines = [json.loads(l) for l in stdout.splitlines()]
    assert [l["cycle"] for l in lines][:1] == [1] and len(lines) >= 2, (err_text, stdout)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # no --cycles: runs until SIGTERM, stops cleanly
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    err = []
    try:
        _wait_for(proc.stderr, "cycle 1 ", err)
        proc.send_signal(signal.SIGTERM)
        stdout, err_text = _finish(proc, err, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err_text
    assert "stopping (signal 15)" in err_text and "watch: 1 cycles" in err_text, err_text
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert_no_credentials(stdout, err_text)


def test_watch_needs_one_source():
    res = CliRunner().invoke(app, ["watch", "--cycles", "1"])
    assert res.exit_code == 2 and "give --folder DIR or --venue deribit" in res.stderr
