"""What every package of prsl may import: user errors, the typed-parameter base, and the two
conventions the libraries share (the ignored label, 8-bit pixels), plus output-folder helpers
(checks, and the lock one run holds on its folder).

Nothing here imports another part of prsl.
"""

from prsl.core.errors import (
    Interrupted,
    InvalidInput,
    MissingDependency,
    MissingInput,
    RunConflict,
    UserError,
)
from prsl.core.labels import IGNORE_INDEX
from prsl.core.lock import FolderBusy, hold
from prsl.core.params import Params, parse_number
from prsl.core.paths import check_output_dir, slug
from prsl.core.pixels import LEVELS, to_uint8

__all__ = [
    "FolderBusy",
    "IGNORE_INDEX",
    "Interrupted",
    "LEVELS",
    "InvalidInput",
    "MissingDependency",
    "MissingInput",
    "Params",
    "RunConflict",
    "UserError",
    "parse_number",
    "check_output_dir",
    "hold",
    "slug",
    "to_uint8",
]
