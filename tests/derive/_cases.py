"""The golden-case folder and the exchange's tolerance, shared by the Derive tests.

The folder is globbed at collection time (new case files are picked up without code changes);
``MARGINOPT_DERIVE_CASES`` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CASES_DIR = Path(
    os.environ.get("MARGINOPT_DERIVE_CASES")
    or Path(__file__).resolve().parents[2].parent / "shared/data/derive-pm2"
)
CASE_FILES = sorted(CASES_DIR.glob("*.json")) if CASES_DIR.is_dir() else []
IDS = [p.stem for p in CASE_FILES]
#: the exchange's own tolerance: 1e-8 relative, 1e-8 absolute where the expected value is near 0
REL = ABS = 1e-8


def close(actual, expected) -> bool:
    actual, expected = np.broadcast_arrays(np.asarray(actual, float), np.asarray(expected, float))
    tol = np.where(np.abs(expected) <= ABS, ABS, REL * np.abs(expected))
    return bool(np.all(np.abs(actual - expected) <= tol))
