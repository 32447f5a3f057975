"""Training losses for token-level prediction: PRSL and the baselines it is compared with.

Every loss takes aligned logits (N, V) or (B, T, V) and labels (N,) or (B, T) with
``ignore_index`` for positions that do not count, accumulates in fp32, and returns a scalar.
"""

from prsl.losses._common import LossTerms, TermsLoss
from prsl.losses.baselines import ce_terms, drsl_terms, label_smoothing_terms
from prsl.losses.hf import hf_loss
from prsl.losses.prsl import PRSLoss, prsl_loss, prsl_terms
from prsl.losses.registry import LOSSES, get_loss, loss_parameters

__all__ = [
    "LOSSES",
    "LossTerms",
    "PRSLoss",
    "TermsLoss",
    "ce_terms",
    "drsl_terms",
    "get_loss",
    "hf_loss",
    "label_smoothing_terms",
    "loss_parameters",
    "prsl_loss",
    "prsl_terms",
]
