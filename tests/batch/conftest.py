"""A batch of generated accounts on the embedded sample market.

Books come from ``marginopt.synthetic.make_book`` (1 to 4 option structures each, plus perpetual and
future hedges, different seeds). Some accounts carry one deliberately bad row each: an instrument
the market does not list, a quantity that is not a number, an option that expired at the
valuation time (the job's market is the sample snapshot plus that expiring option, as Deribit
still lists on expiry morning), and a currency the model has no parameters for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from marginopt import load_market
from marginopt.cli import sample_paths
from marginopt.synthetic import make_book

N_ACCOUNTS = 200
EXPIRED = "BTC-20NOV26-95000-C"
#: account index -> (bad row, expected error class)
BAD_ROWS = {
    "unknown": (("BTC-27NOV26-55555-C", "1.5"), "UnknownInstrument"),
    "not_a_number": (("BTC-PERPETUAL", "12.5x"), "InvalidValue"),
    "expired": ((EXPIRED, "-2"), "ExpiredInstrument"),
    "currency": (("SOL-PERPETUAL", "100"), "UnsupportedCurrency"),
}


#: issue 10: three more accounts that once stopped a run (a 1e20 book crashed the solver, a
#: list-shaped spec ended the run with a bare ValueError) or broke the error promise (a binary
#: portfolio): account index -> (error class, words its error must hold)
SPECIAL = {
    117: ("InputError", "acct_117.json: not a UTF-8 text file"),
    142: ("InvalidValue", "acct_142.csv, row"),
    167: ("SpecError", "list_spec.yaml: a rebalance spec is a mapping of keys"),
}


def bad_kind(i: int) -> str | None:
    """Every 25th account (from the 7th) has a bad row, the four kinds in turn: 8 in all."""
    if i % 25 != 7:
        return None
    return list(BAD_ROWS)[(i // 25) % len(BAD_ROWS)]


def account_name(i: int) -> str:
    return f"acct_{i:03d}"


def write_accounts(folder: Path, n: int = N_ACCOUNTS) -> dict[str, str]:
    """Write n account books into ``folder``; returns {account: expected error class} of the bad."""
    market = load_market(sample_paths()["market"])
    folder.mkdir(parents=True, exist_ok=True)
    bad = {}
    for i in range(n):
        book = make_book(market, n_structures=1 + i % 4, seed=1000 + i)
        lines = ["instrument,quantity"] + [f"{k},{v!r}" for k, v in book.positions.items()]
        kind = bad_kind(i)
        if kind:
            row, cls = BAD_ROWS[kind]
            lines.insert(1 + (i % max(len(lines) - 1, 1)), ",".join(row))
            bad[account_name(i)] = cls
        if i == 117:
            (folder / f"{account_name(i)}.json").write_bytes(bytes(range(256)) * 2)
        else:
            if i == 142:
                lines.append("BTC-PERPETUAL,1e20")
            (folder / f"{account_name(i)}.csv").write_text("\n".join(lines) + "\n")
        if i in SPECIAL:
            bad[account_name(i)] = SPECIAL[i][0]
    return bad


def write_manifest(root: Path, n: int = N_ACCOUNTS) -> Path:
    """A manifest of the books in ``root/books``; account 167 gets a spec that is a YAML list."""
    (root / "list_spec.yaml").write_text("- universe: held\n- limits: {}\n")
    rows = ["account,portfolio,spec"]
    for i in range(n):
        book = f"books/{account_name(i)}.{'json' if i == 117 else 'csv'}"
        rows.append(f"{account_name(i)},{book},{'list_spec.yaml' if i == 167 else ''}")
    path = root / "accounts.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_market(path: Path) -> Path:
    data = json.loads(sample_paths()["market"].read_text())
    data["instruments"].append({
        "instrument_name": EXPIRED, "mark_price": 0.0301, "mark_iv": 48.0,
        "underlying_price": 97250.0, "bid_price": 0.03, "ask_price": 0.0302,
        "open_interest": 12.0, "volume": 1.0})
    path.write_text(json.dumps(data))
    return path


def write_job(folder: Path, output_dir: str, manifest: str | None = None, **extra) -> Path:
    job = {"market": "market.json", "model": "deribit-pm", "spec": "spec.yaml",
           "output_dir": output_dir, **extra}
    job.update({"manifest": manifest} if manifest else {"accounts_dir": "books"})
    path = folder / f"job_{output_dir.replace('/', '_')}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="session")
def batch_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder with books/ (200 accounts), accounts.csv (their manifest), market.json and
    spec.yaml; and the bad accounts."""
    root = tmp_path_factory.mktemp("batch")
    bad = write_accounts(root / "books")
    write_manifest(root)
    write_market(root / "market.json")
    shutil.copy(sample_paths()["spec"], root / "spec.yaml")
    return root, bad
