"""Fine-tuning: the loop, the model it starts from, checkpoints, logs and the run's config.

``finetune(cfg)`` is the entry point; ``FinetuneConfig`` what it is configured with.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "config": [
            "RESUMABLE_CHANGES",
            "TINY",
            "FinetuneConfig",
            "LossConfig",
            "ModelConfig",
            "TinyModelConfig",
            "TrainConfig",
        ],
        "loop": ["TrainResult", "finetune", "finished_run"],
    },
)
