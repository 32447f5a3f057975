"""Losses by name, so every command takes ``--loss ce|prsl|drsl|ls`` with its parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from prsl.losses._common import LossTerms, TermsLoss
from prsl.losses.baselines import ce_terms, drsl_terms, label_smoothing_terms
from prsl.losses.prsl import PRSLoss, prsl_terms

LOSSES: dict[str, Callable[..., LossTerms]] = {
    "ce": ce_terms,
    "prsl": prsl_terms,
    "drsl": drsl_terms,
    "ls": label_smoothing_terms,
}
MEAN_OVER_TOKENS = frozenset({"ce", "ls"})
"""Losses that are a mean over counted tokens as a whole (no summed regulariser)."""


def loss_parameters(name: str) -> dict[str, object]:
    """The keyword parameters a loss accepts, with their defaults."""
    terms_fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(terms_fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def get_loss(name: str, **params) -> TermsLoss:
    """A criterion ``(logits, labels) -> scalar`` for a registered loss.

    Unknown names or parameters fail here, before any training starts.
    """
    accepted = loss_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} does not take parameter(s) {unknown}; it accepts {sorted(accepted)}"
        )
    if name == "prsl":
        return PRSLoss(**params)
    return TermsLoss(_lookup(name), mean_over_tokens=name in MEAN_OVER_TOKENS, **params)


def _lookup(name: str) -> Callable[..., LossTerms]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
