"""The core asks venues through the registry (``marginopt.venues``) and never imports a venue
module (``marginopt.venues.deribit``, ...): a new venue changes no core file."""

from __future__ import annotations

import ast
from pathlib import Path

import marginopt

SRC = Path(marginopt.__file__).parent
VENUE_MODULES = {p.stem for p in (SRC / "venues").glob("*.py") if not p.stem.startswith("_")}


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, resolved to a dotted name under ``marginopt``."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    package = parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_no_core_module_imports_a_venue_module():
    assert {"deribit", "derive", "user"} <= VENUE_MODULES
    venue_modules = {f"marginopt.venues.{m}" for m in VENUE_MODULES}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent == SRC / "venues":
            continue
        hits = venue_modules & set(_imports(path))
        if hits:
            offenders.append(f"{path.relative_to(SRC)} imports {sorted(hits)}")
    assert not offenders, offenders


def test_the_rebalancer_keeps_no_venue_table():
    """Lot sizes, contract sizes and open-interest units are the venue's, not the optimizer's."""
    text = "\n".join(p.read_text() for p in (SRC / "rebalance").glob("*.py"))
    for word in ("Deribit", "INVERSE_CONTRACT_USD", "DEFAULTS", '"BTC-option"', "10.0 USD"):
        assert word not in text, word
