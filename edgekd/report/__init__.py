"""Report stage: bench rows (and the gate's verdict) -> report.md, a self-contained report.html with
Pareto plots, and the terminal table. Downstream of bench and gate; neither imports it."""

from edgekd.report.stage import write_report
from edgekd.report.text import text_table

__all__ = ["write_report", "text_table"]
