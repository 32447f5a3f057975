"""What every package of prsl may import: user errors, the typed-parameter base, and the two
conventions the libraries share (the ignored label, 8-bit pixels), plus output-folder helpers
(checks, and the lock one run holds on its folder).

Nothing here imports another part of prsl.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "errors": [
            "Interrupted",
            "InvalidInput",
            "MissingDependency",
            "MissingInput",
            "RunConflict",
            "UserError",
        ],
        "labels": ["IGNORE_INDEX"],
        "lock": ["FolderBusy", "hold"],
        "params": ["Params", "parse_number"],
        "paths": ["check_output_dir", "slug"],
        "pixels": ["LEVELS", "to_uint8"],
    },
)
