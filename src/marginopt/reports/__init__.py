"""Proposal reports: JSON, Markdown and a self-contained HTML page with charts."""

from ._write import write_proposal

__all__ = ["write_proposal"]
