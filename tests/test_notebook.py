"""The walkthrough notebook runs top to bottom on the venv's own kernel, with no cell error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_walkthrough_runs_without_errors(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # last cell: which environment ran it (the kernel must be this venv's python)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    ran_with = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert Path(ran_with) == Path(sys.prefix)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # the export cell wrote the three reports
    text = "".join(o.get("data", {}).get("text/plain", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "execute_result")
    assert "report.html" in text and "proposal.json" in text and "proposal.md" in text
