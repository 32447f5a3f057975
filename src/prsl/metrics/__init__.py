"""Captioning and VQA metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr, BERTScore and VQA accuracy.

Knows nothing of models, losses, data or attacks: strings in, corpus-level numbers out.

>>> from prsl.metrics import score
>>> score(["a dog runs"], [["a dog is running", "a dog runs on grass"]])  # doctest: +SKIP
{'BLEU-1': ..., ..., 'BERTScore': ...}

BLEU, METEOR, ROUGE-L and CIDEr come from ``pycocoevalcap`` (the COCO caption evaluation; needs
Java), BERTScore from ``bert-score`` with an offline MiniLM model by default, VQA accuracy is the
VQAv2 soft accuracy under the official or the EvalAI answer normalisation.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "bertscore": ["BERTSCORE_DEFAULT", "default_model_dir"],
        "scorer": ["ALL_METRICS", "CAPTION_METRICS", "VQA_METRICS", "Scorer", "score"],
        "vqa": [
            "DEFAULT_VQA_PROTOCOL",
            "VQA_PROTOCOLS",
            "mean_vqa_accuracy",
            "normalize_answer",
            "vqa_accuracy",
        ],
    },
)
