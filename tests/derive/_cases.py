"""The golden-case folder and the exchange's tolerance, shared by the Derive tests.

The cases are the exchange's own (``derivexyz/v2-core``, Business Source License 1.1), so they
are not in this repository. The folder is, in order: ``MARGINOPT_DERIVE_CASES``; ``../shared/
data/derive-pm2`` beside the checkout; ``tests/data/derive-pm2``, where ``python
scripts/fetch_derive_cases.py`` downloads them at a pinned commit. Without any, the tests that
need them skip saying so, unless ``MARGINOPT_REQUIRE_DERIVE_CASES=1`` (CI sets it: there they
must run). The folder is globbed at collection time (new case files are picked up without code
changes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared/data/derive-pm2"
DOWNLOADED = REPO / "tests/data/derive-pm2"


def _cases_dir() -> Path:
    if os.environ.get("MARGINOPT_DERIVE_CASES"):
        return Path(os.environ["MARGINOPT_DERIVE_CASES"])
    return next((d for d in (SHARED, DOWNLOADED) if d.is_dir() and any(d.glob("*.json"))), SHARED)


CASES_DIR = _cases_dir()
CASE_FILES = sorted(CASES_DIR.glob("*.json")) if CASES_DIR.is_dir() else []
IDS = [p.stem for p in CASE_FILES]
REQUIRED = os.environ.get("MARGINOPT_REQUIRE_DERIVE_CASES", "") not in ("", "0")
SKIP_REASON = ("Derive's golden cases are not here: `python scripts/fetch_derive_cases.py` downloads "
               "them (or set MARGINOPT_DERIVE_CASES to their folder)")
#: ``@pytest.mark.parametrize("path", CASE_PARAMS)``: one test per case, or one skip saying why
CASE_PARAMS = [pytest.param(p, id=p.stem) for p in CASE_FILES] or [
    pytest.param(None, id="no-golden-cases", marks=pytest.mark.skip(reason=SKIP_REASON))]
#: the exchange's own tolerance: 1e-8 relative, 1e-8 absolute where the expected value is near 0
REL = ABS = 1e-8


def require_cases() -> None:
    """Skip (or, where the cases are required, fail) when the folder holds no case."""
    if not CASE_FILES:
        if REQUIRED:
            pytest.fail(f"no golden cases under {CASES_DIR} and MARGINOPT_REQUIRE_DERIVE_CASES is set")
        pytest.skip(SKIP_REASON)


def pick(accept, n: int, what: str) -> list[Path]:
    """Up to ``n`` cases of the folder for which ``accept(path)`` holds, largest books first, so
    a test runs on whatever set of case files it is given; skips saying ``what`` it needs when
    none does (no test is tied to one file name)."""
    require_cases()
    chosen = [p for p in sorted(CASE_FILES, key=book_size, reverse=True) if accept(p)][:n]
    if not chosen:
        pytest.skip(f"no golden case in {CASES_DIR} is {what}")
    return chosen


def book_size(path: Path) -> tuple[int, str]:
    """Options and perps in a case's book (ties by name, for a fixed order)."""
    import json
    s = json.loads(path.read_text())["Scenario"]
    return len(s.get("Options") or []) + (1 if s.get("NumPerps") else 0), path.stem


def close(actual, expected) -> bool:
    actual, expected = np.broadcast_arrays(np.asarray(actual, float), np.asarray(expected, float))
    tol = np.where(np.abs(expected) <= ABS, ABS, REL * np.abs(expected))
    return bool(np.all(np.abs(actual - expected) <= tol))
