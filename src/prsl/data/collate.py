"""Batching of already-tokenised text: padded inputs, attention masks, and labels.

Labels are padded with ``ignore_index`` (never with a real token id): the authors padded
with the EOS id and so trained the model to emit EOS at every padded position. Prompt tokens
(a VQA question before its answer) can be excluded from the labels the same way. Nothing here
knows a tokenizer; callers pass id lists and the pad id of their model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PADDING_SIDES = ("right", "left")


@dataclass
class TextBatch:
    """Padded (B, T) tensors: ``labels`` holds ``ignore_index`` wherever nothing is learnt."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def _check_ids(sequences: Sequence[Sequence[int]], name: str) -> None:
    if not sequences:
        raise ValueError(f"{name} must hold at least one sequence")
    for index, sequence in enumerate(sequences):
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in sequence):
            raise ValueError(f"{name}[{index}] must hold non-negative int token ids: {sequence!r}")


def _check_ignore_index(ignore_index: int) -> None:
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index must be negative so it can never be a real token id, got {ignore_index}"
        )


def _pad(sequences: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    if side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {side!r}")
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            values = torch.tensor(list(sequence), dtype=torch.long)
            if side == "right":
                out[row, : len(sequence)] = values
            else:
                out[row, width - len(sequence) :] = values
    return out


def pad_labels(
    sequences: Sequence[Sequence[int]], ignore_index: int = -100, padding_side: str = "right"
) -> torch.Tensor:
    """(B, T) LongTensor of label ids, padded with ``ignore_index`` (must be negative)."""
    _check_ignore_index(ignore_index)
    if not sequences:
        raise ValueError("sequences must hold at least one sequence")
    return _pad(sequences, ignore_index, padding_side)


def collate_text(
    input_ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    prompt_lengths: Sequence[int] | None = None,
    ignore_index: int = -100,
    padding_side: str = "right",
) -> TextBatch:
    """Pad token id lists into a ``TextBatch`` whose labels copy the inputs.

    Labels are ``ignore_index`` at padding and at the first ``prompt_lengths[i]`` tokens of
    sequence ``i``, so only the answer / caption is learnt. Use ``padding_side="left"`` for
    decoder-only generation. The caller shifts labels for next-token prediction.
    """
    _check_ids(input_ids, "input_ids")
    _check_ignore_index(ignore_index)
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative int token id, got {pad_id!r}")
    lengths = prompt_lengths if prompt_lengths is not None else [0] * len(input_ids)
    if len(lengths) != len(input_ids):
        raise ValueError(
            f"prompt_lengths has {len(lengths)} entries for {len(input_ids)} sequences"
        )
    labels = []
    for index, (sequence, prompt) in enumerate(zip(input_ids, lengths, strict=True)):
        if not 0 <= prompt <= len(sequence):
            raise ValueError(
                f"prompt_lengths[{index}]={prompt} must be in [0, {len(sequence)}] "
                f"(the length of input_ids[{index}])"
            )
        labels.append([ignore_index] * prompt + list(sequence[prompt:]))
    ids = _pad(input_ids, pad_id, padding_side)
    mask = _pad([[1] * len(s) for s in input_ids], 0, padding_side)
    return TextBatch(ids, mask, _pad(labels, ignore_index, padding_side))
