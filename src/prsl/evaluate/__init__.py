"""Robustness evaluation: the grid of models x attacks x ε, its ledger, scoring and image export.

``evaluate(cfg)`` runs (or resumes) an evaluation into ``cfg.output_dir``; ``attack_to_files``
is ``prsl attack``.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "config": ["AttackSpec", "EvalConfig"],
        "export": ["attack_to_files"],
        "ledger": ["PREDICTIONS", "read_predictions"],
        "loop": ["evaluate"],
    },
)
