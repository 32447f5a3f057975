"""What a run records about how its results were made, and the checks a rerun makes against it.

- :mod:`~prsl.provenance.settings`: the settings an output folder's results depend on, written
  beside them and compared on every rerun, so that a rerun with other settings is refused
  (naming the fields) instead of silently reusing what was computed with the old ones.
- :mod:`~prsl.provenance.models`: what identifies a model (its location and a fingerprint of its
  files) and what fine-tuning wrote beside it (the loss it was trained with).
"""

from prsl.provenance.models import (
    TRAIN_INFO,
    Compute,
    ModelRef,
    TrainingRecord,
    model_refs,
    read_training_record,
    write_training_record,
)
from prsl.provenance.settings import (
    SETTINGS,
    Difference,
    check_settings,
    differences,
    read_settings,
    write_settings,
)

__all__ = [
    "SETTINGS",
    "TRAIN_INFO",
    "Difference",
    "ModelRef",
    "Compute",
    "TrainingRecord",
    "check_settings",
    "differences",
    "model_refs",
    "read_settings",
    "read_training_record",
    "write_settings",
    "write_training_record",
]
