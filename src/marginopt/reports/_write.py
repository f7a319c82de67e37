"""Write a proposal's files into a folder (the charts and HTML report are added by ``_html``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_proposal(proposal: Any, folder: str | Path, *, name: str = "proposal",
                   market: Any = None) -> dict[str, Path]:
    """``proposal.json`` and ``proposal.md`` in ``folder``; returns the paths written."""
    folder = Path(folder)
    paths = {"json": folder / f"{name}.json", "markdown": folder / f"{name}.md"}
    atomic_write_text(paths["json"], proposal.to_json(indent=1))
    atomic_write_text(paths["markdown"], proposal.to_markdown())
    return paths
