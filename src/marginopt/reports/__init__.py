"""Proposal reports: JSON, Markdown and a self-contained HTML page with charts."""

from ._charts import components_chart, limits_chart, proposal_charts, scenario_pnl_chart
from ._explain import (contributors_chart, explain_charts, liquidation_chart, render_explain_html,
                       write_explanation)
from ._html import render_html
from ._write import atomic_write_bytes, atomic_write_text, write_proposal

__all__ = ["atomic_write_bytes", "atomic_write_text", "components_chart", "limits_chart",
           "proposal_charts", "render_html", "scenario_pnl_chart", "write_proposal",
           "contributors_chart", "explain_charts", "liquidation_chart", "render_explain_html",
           "write_explanation"]
