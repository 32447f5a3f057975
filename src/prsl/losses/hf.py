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

from prsl.losses.registry import get_loss


def hf_loss(name: str, *, shift: bool | None = None, **params) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for ``transformers.Trainer`` computing loss ``name``.

    With gradient accumulation Trainer passes ``num_items_in_batch`` (counted tokens across the
    accumulated micro-batches); the per-token mean part (CE, or the whole label-smoothed CE) is
    then rescaled so accumulated steps average over all of them, exactly like Trainer's own loss.
    Regularisers are sums over positions and are left as they are.
    """
    criterion = get_loss(name, **params)
    ignore_index = criterion.params.get("ignore_index", -100)

    def compute_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        do_shift = shift if shift is not None else _is_decoder_only(outputs)
        if do_shift:  # shift the labels, not the logits: a sliced (B, T-1, V) view would be
            # copied whole to flatten; the last position, with no next token, is ignored instead
            labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=ignore_index)
        labels = labels.to(logits.device)
        terms = criterion.terms(logits, labels)
        if num_items_in_batch is None:
            return terms.loss
        counted = (labels != ignore_index).sum().to(terms.ce.dtype)
        total = torch.as_tensor(num_items_in_batch, dtype=terms.ce.dtype, device=counted.device)
        return criterion.rescaled(terms, counted / total.clamp(min=1))

    return compute_loss


def _is_decoder_only(outputs) -> bool:
    keys = outputs.keys() if hasattr(outputs, "keys") else ()
    return "encoder_last_hidden_state" not in keys and not hasattr(
        outputs, "encoder_last_hidden_state"
    )
