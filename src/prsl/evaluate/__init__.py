"""Robustness evaluation: the grid of models x attacks x ε, its ledger, scoring and image export.

``evaluate(cfg)`` runs (or resumes) an evaluation into ``cfg.output_dir``; ``attack_to_files``
is ``prsl attack``.
"""

from prsl.evaluate.config import AttackSpec, EvalConfig
from prsl.evaluate.export import attack_to_files
from prsl.evaluate.ledger import PREDICTIONS, read_predictions
from prsl.evaluate.loop import evaluate

__all__ = [
    "PREDICTIONS",
    "AttackSpec",
    "EvalConfig",
    "attack_to_files",
    "evaluate",
    "read_predictions",
]
