"""Training losses for token-level prediction: PRSL and the baselines it is compared with.

Each loss is one typed parameter object (``PRSL``, ``DRSL``, ``CrossEntropy``,
``LabelSmoothing``) that validates its parameters when built and computes the loss when called
on aligned logits (N, V) or (B, T, V) and labels (N,) or (B, T), where ``IGNORE_INDEX`` marks
positions that do not count. Every loss accumulates in fp32 and returns a scalar.
"""

from prsl.losses._common import LossTerms
from prsl.losses.base import Loss, TermsLoss, counted_tokens, token_share
from prsl.losses.baselines import (
    DRSL,
    CrossEntropy,
    LabelSmoothing,
    ce_terms,
    drsl_terms,
    label_smoothing_terms,
)
from prsl.losses.prsl import PRSL, PRSLoss, prsl_loss, prsl_terms
from prsl.losses.registry import LOSSES, build_loss, get_loss, loss_class, loss_parameters
from prsl.losses.trainer import hf_loss

__all__ = [
    "DRSL",
    "LOSSES",
    "PRSL",
    "CrossEntropy",
    "LabelSmoothing",
    "Loss",
    "LossTerms",
    "PRSLoss",
    "TermsLoss",
    "build_loss",
    "ce_terms",
    "counted_tokens",
    "drsl_terms",
    "get_loss",
    "hf_loss",
    "label_smoothing_terms",
    "loss_class",
    "loss_parameters",
    "prsl_loss",
    "prsl_terms",
    "token_share",
]
