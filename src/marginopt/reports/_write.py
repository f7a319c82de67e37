"""Write a proposal's files into a folder: JSON, Markdown, the HTML report and its charts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

#: mkstemp creates files 0600; published files get the usual permissions (0666 less the umask)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so no reader ever sees half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: readers see the old file
    or the whole new one, never a part, even if the process is killed mid-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_proposal(proposal: Any, folder: str | Path, *, name: str = "proposal",
                   market: Any = None, html: bool = True, charts: bool = True) -> dict[str, Path]:
    """Write ``proposal.json``, ``proposal.md`` and, with ``html``, the self-contained
    ``report.html`` plus its charts as PNG files (``scenario_pnl.png``, ``margin_components.png``,
    ``limits.png``; each only when it applies). With a ``name`` other than ``proposal`` the
    report and charts are prefixed with it. Returns the paths written, by kind."""
    folder = Path(folder)
    try:
        return _write_files(proposal, folder, name, market, html, charts)
    except OSError as exc:
        from ..errors import OutputError
        where = exc.filename if isinstance(exc.filename, str) else str(folder)
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            why = "a file is in the way of the folder"
        raise OutputError(f"cannot write the proposal ({why})", source=where, field="out") from None


def _write_files(proposal: Any, folder: Path, name: str, market: Any, html: bool,
                 charts: bool) -> dict[str, Path]:
    paths = {"json": folder / f"{name}.json", "markdown": folder / f"{name}.md"}
    atomic_write_text(paths["json"], proposal.to_json(indent=1))
    atomic_write_text(paths["markdown"], proposal.to_markdown())
    if html:
        from ._charts import proposal_charts
        from ._html import render_html

        pngs = proposal_charts(proposal.to_dict())
        prefix = "" if name == "proposal" else f"{name}_"
        if charts:
            for chart, data in pngs.items():
                paths[chart] = folder / f"{prefix}{chart}.png"
                atomic_write_bytes(paths[chart], data)
        paths["html"] = folder / ("report.html" if name == "proposal" else f"{name}.html")
        atomic_write_text(paths["html"], render_html(proposal, charts=pngs, market=market))
    return paths
