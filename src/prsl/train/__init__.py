"""Fine-tuning: the loop, the model it starts from, checkpoints, logs and the run's config.

``finetune(cfg)`` is the entry point; ``FinetuneConfig`` what it is configured with.
"""

from prsl.train.config import (
    RESUMABLE_CHANGES,
    TINY,
    FinetuneConfig,
    LossConfig,
    ModelConfig,
    TinyModelConfig,
    TrainConfig,
)
from prsl.train.loop import TrainResult, finetune, finished_run

__all__ = [
    "RESUMABLE_CHANGES",
    "TINY",
    "FinetuneConfig",
    "LossConfig",
    "ModelConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TrainResult",
    "finetune",
    "finished_run",
]
