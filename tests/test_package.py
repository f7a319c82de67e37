"""The package's shape: every module imports first, in any order (no import cycle, no
partially-initialised module), and each subpackage is reachable under its own name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import marginopt

SRC = Path(marginopt.__file__).parent


def modules() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


#: In one interpreter, each module is imported with every ``marginopt`` module forgotten first:
#: for the package that is a fresh interpreter (third-party modules stay loaded, which cannot
#: hide a cycle inside marginopt) at a fraction of the cost of one interpreter per module.
EACH_FIRST = """
import importlib, json, sys
for name in json.loads(input()):
    for key in [k for k in sys.modules if k == "marginopt" or k.startswith("marginopt.")]:
        del sys.modules[key]
    importlib.import_module(name)
print("ok")
"""


def test_every_module_imports_first_in_a_fresh_package():
    names = modules()
    assert "marginopt.margins._base" in names and "marginopt.derive._component" in names
    done = subprocess.run([sys.executable, "-c", EACH_FIRST], input=json.dumps(names),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("seed", [0, 1])
def test_modules_import_in_any_order(seed):
    code = ("import importlib, random\n"
            f"names = {modules()!r}\n"
            f"random.Random({seed}).shuffle(names)\n"
            "for n in names: importlib.import_module(n)\n")
    _run(code)


def test_a_venue_component_imports_alone():
    """A really fresh interpreter for the module an import cycle between the core and a venue
    would go through (it subclasses the core's spec base and registers itself)."""
    assert "derive_pm2" in _run("import marginopt.derive._component\n"
                                "from marginopt.margins._base import registered_components\n"
                                "print(list(registered_components()))")


def test_subpackages_are_not_shadowed_by_the_functions():
    """``marginopt.margin`` and ``marginopt.optimize`` are the functions; the subpackages that hold
    them have names of their own, so both stay reachable as attributes."""
    import marginopt

    assert callable(marginopt.margin) and callable(marginopt.optimize)
    assert marginopt.margins.BoundModel.__module__ == "marginopt.margins._model"
    assert marginopt.rebalance.Rebalancer is marginopt.Rebalancer
