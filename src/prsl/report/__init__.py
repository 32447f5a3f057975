"""The report: ``report.md`` and a self-contained ``report.html`` from ``results.json`` files.

``write_report(files, out)`` writes both. ``verdict`` says whether each model degrades less than
the baseline (from the comparisons' intervals), ``tables`` holds the compact and detailed tables,
``masking`` the gradient-masking checks, ``plots`` the figures.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "masking": ["masking_checks"],
        "render": ["write_report"],
        "tables": ["compact_table", "table_rows"],
        "verdict": ["verdict_lines"],
    },
)
