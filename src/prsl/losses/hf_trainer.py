"""Adapter from prsl losses to ``transformers.Trainer(compute_loss_func=...)``.

Trainer calls ``compute_loss_func(outputs, labels, num_items_in_batch=...)`` with the model's
raw outputs and the batch's unshifted labels. Decoder-only language models (GPT-2, OPT, and the
OPT inside BLIP-2) predict token t+1 at position t, so their logits and labels must be shifted;
encoder-decoder models (``VisionEncoderDecoderModel``, T5, BART) already align decoder logits
with labels. ``shift=None`` decides from the outputs: encoder-decoder outputs carry
``encoder_last_hidden_state``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prsl.core.labels import IGNORE_INDEX
from prsl.losses.base import Loss, counted_tokens, token_share
from prsl.losses.registry import as_loss


def hf_loss(
    name: str | Loss, *, shift: bool | None = None, **params
) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for ``transformers.Trainer`` computing loss ``name``.

    With gradient accumulation Trainer passes ``num_items_in_batch`` (counted tokens across the
    accumulated micro-batches); the per-token mean part (CE, or the whole label-smoothed CE) is
    then rescaled so accumulated steps average over all of them, exactly like Trainer's own loss.
    Regularisers are sums over positions and are left as they are.
    """
    loss = as_loss(name, **params)

    def compute_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        do_shift = shift if shift is not None else _is_decoder_only(outputs)
        if do_shift:  # shift the labels, not the logits: a sliced (B, T-1, V) view would be
            # copied whole to flatten; the last position, with no next token, is ignored instead
            labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        labels = labels.to(logits.device)
        terms = loss.terms(logits, labels)
        if num_items_in_batch is None:
            return terms.loss
        share = token_share(counted_tokens(labels), num_items_in_batch)
        return loss.rescaled(terms, share).loss

    return compute_loss


def _is_decoder_only(outputs) -> bool:
    keys = outputs.keys() if hasattr(outputs, "keys") else ()
    return "encoder_last_hidden_state" not in keys and not hasattr(
        outputs, "encoder_last_hidden_state"
    )
