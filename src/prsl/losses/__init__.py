"""Training losses for token-level prediction: PRSL and the baselines it is compared with.

Each loss is one typed parameter object (``PRSL``, ``DRSL``, ``CrossEntropy``,
``LabelSmoothing``) that validates its parameters when built and computes the loss when called
on aligned logits (N, V) or (B, T, V) and labels (N,) or (B, T), where ``IGNORE_INDEX`` marks
positions that do not count. Every loss accumulates in fp32 and returns a scalar.
"""

from prsl.core.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "_common": ["LossTerms"],
        "base": ["Loss", "counted_tokens", "token_share"],
        "criterion": ["PRSLoss", "TermsLoss"],
        "baselines": [
            "DRSL",
            "CrossEntropy",
            "LabelSmoothing",
            "ce_terms",
            "drsl_terms",
            "label_smoothing_terms",
        ],
        "prsl": ["PRSL", "prsl_loss", "prsl_terms"],
        "registry": ["LOSSES", "build_loss", "get_loss", "loss_class", "loss_parameters"],
        "hf_trainer": ["hf_loss"],
    },
)
