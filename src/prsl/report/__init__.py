"""The report: ``report.md`` and a self-contained ``report.html`` from ``results.json`` files.

``write_report(files, out)`` writes both. ``verdict`` says whether each model degrades less than
the baseline (from the comparisons' intervals), ``tables`` holds the compact and detailed tables,
``masking`` the gradient-masking checks, ``plots`` the figures.
"""

from prsl.report.masking import masking_checks
from prsl.report.render import write_report
from prsl.report.tables import compact_table, table_rows
from prsl.report.verdict import verdict_lines

__all__ = ["compact_table", "masking_checks", "table_rows", "verdict_lines", "write_report"]
