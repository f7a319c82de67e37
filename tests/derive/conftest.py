"""Make ``src/`` importable when marginopt is not installed into the running interpreter."""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
try:
    import marginopt.derive  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was set up
    sys.path.insert(0, str(_SRC))
