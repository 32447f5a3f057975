"""Robustness evaluation: the grid of models x attacks x ε, its ledger and scoring; and
``prsl attack``, adversarial images on disk.

``evaluate(cfg)`` runs (or resumes) an evaluation into ``cfg.output_dir``; ``attack_to_files``
(:mod:`~prsl.evaluate.attack_images`) is ``prsl attack``. Both share their output folder's
handling (:mod:`~prsl.evaluate.folder`) and the split of their items between the processes of a
launch (:mod:`~prsl.evaluate.shards`).
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "config": ["AttackSpec", "EvalConfig", "WorstCaseConfig"],
        "attack_images": ["attack_to_files"],
        "ledger": ["PREDICTIONS"],
        "loop": ["evaluate"],
        "shards": ["read_predictions"],
    },
)
