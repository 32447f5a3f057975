"""The report: ``report.md`` and a self-contained ``report.html`` from ``results.json`` files.

``write_report(files, out)`` writes both; ``tables`` holds the verdict and the tables, ``plots``
the figures.
"""

from prsl.report.render import write_report
from prsl.report.tables import comparisons, summary_lines, table_rows

__all__ = ["comparisons", "summary_lines", "table_rows", "write_report"]
