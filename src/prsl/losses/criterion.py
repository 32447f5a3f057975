"""The ``nn.Module`` criteria: a loss object wrapped for training loops that expect a module.

Apart from the loss objects so that they, and a config naming them, need no torch until a loss
is computed (see :func:`prsl.core.lazy.lazy_import`).
"""

from __future__ import annotations

import torch

from prsl.core.labels import IGNORE_INDEX
from prsl.losses._common import LossTerms
from prsl.losses.base import Loss
from prsl.losses.prsl import PRSL


class TermsLoss(torch.nn.Module):
    """The ``nn.Module`` criterion over a :class:`Loss`, for loops that expect one.

    ``criterion(logits, labels)`` is the objective, ``criterion.terms(...)`` its parts and
    ``criterion.params`` the loss object (what ran, for the record).
    """

    def __init__(self, params: Loss) -> None:
        super().__init__()
        self.params = params

    @property
    def mean_over_tokens(self) -> bool:
        return self.params.mean_over_tokens

    def terms(
        self, logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
    ) -> LossTerms:
        return self.params.terms(logits, labels, ignore_index=ignore_index)

    def rescaled(self, terms: LossTerms, share: torch.Tensor | float) -> LossTerms:
        return self.params.rescaled(terms, share)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
    ) -> torch.Tensor:
        return self.terms(logits, labels, ignore_index=ignore_index).loss

    def extra_repr(self) -> str:
        fields = self.params.recorded()
        return f"{self.params.name}: " + ", ".join(f"{k}={v!r}" for k, v in fields.items())


class PRSLoss(TermsLoss):
    """``nn.Module`` form of :func:`prsl_loss` for training loops that expect a criterion."""

    def __init__(self, **params) -> None:
        super().__init__(PRSL(**params))
