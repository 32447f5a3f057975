"""What every loss is: a typed parameter object that computes its terms (its ``nn.Module``
criterion is in :mod:`prsl.losses.criterion`).

A loss object (``PRSL(k=10, weight=1e-5)``) is the one declaration of its parameters: defaults,
types and ranges are checked when it is built, and ``recorded()`` is what a run writes down.
Calling it computes the loss; :meth:`Loss.terms` splits it into CE and the regulariser so
training can log them apart.

``mean_over_tokens`` says which part of the loss is a per-token mean: all of it (CE, label
smoothing) or only CE, with a regulariser summed over positions (PRSL, DRSL). Code that splits a
batch over micro-batches or processes scales only the mean part (:meth:`Loss.rescaled`).
"""

from __future__ import annotations

from typing import ClassVar

from prsl.core.labels import IGNORE_INDEX
from prsl.core.lazy import lazy_import
from prsl.core.params import Params
from prsl.losses._common import LossTerms

torch = lazy_import("torch", globals())


class Loss(Params):
    """Base of the registered losses (see the module docstring)."""

    kind: ClassVar[str] = "loss"
    mean_over_tokens: ClassVar[bool] = False

    check_finite: bool = False
    """Raise a clear error on NaN/inf logits (costs a device sync)."""

    def terms(
        self, logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
    ) -> LossTerms:
        """The loss and its parts for aligned ``logits`` (N, V) / (B, T, V) and ``labels``."""
        raise NotImplementedError

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
    ) -> torch.Tensor:
        return self.terms(logits, labels, ignore_index=ignore_index).loss

    def rescaled(self, terms: LossTerms, share: torch.Tensor | float) -> LossTerms:
        """``terms`` with the per-token mean part weighted by ``share``, this batch's fraction of
        all the tokens the mean runs over (gradient accumulation, several processes); summed
        regularisers stay as they are."""
        if self.mean_over_tokens:
            return LossTerms(terms.loss * share, terms.ce * share, terms.regularizer * share)
        ce = terms.ce * share
        return LossTerms(terms.loss - terms.ce + ce, ce, terms.regularizer)


def counted_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """How many positions of ``labels`` a loss counts (0-d long tensor)."""
    return (labels != ignore_index).sum()


def token_share(counted: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """``counted / total`` as a float: a micro-batch's part of the tokens of its optimizer step."""
    total = torch.as_tensor(total, device=counted.device)
    return counted.to(torch.float32) / total.to(torch.float32).clamp(min=1)
