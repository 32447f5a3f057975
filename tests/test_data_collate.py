"""Text batching: labels padded with ignore_index (never a real token), masks, prompt masking."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prsl.data.collate import collate_text, pad_labels


def test_pad_labels_right_pads_with_ignore_index():
    labels = pad_labels([[5, 6, 7], [8], []])
    assert labels.dtype == torch.long
    assert labels.tolist() == [[5, 6, 7], [8, -100, -100], [-100, -100, -100]]


def test_pad_labels_left_and_custom_ignore_index():
    assert pad_labels([[1, 2], [3]], ignore_index=-1, padding_side="left").tolist() == [
        [1, 2],
        [-1, 3],
    ]


def test_ignore_index_that_could_be_a_token_is_rejected():
    with pytest.raises(ValueError, match="ignore_index must be negative"):
        pad_labels([[1]], ignore_index=0)
    with pytest.raises(ValueError, match="ignore_index must be negative"):
        collate_text([[1]], pad_id=0, ignore_index=3)


def test_collate_pads_inputs_with_pad_id_but_labels_with_ignore_index():
    eos = 2  # the authors padded labels with EOS; a real EOS must stay, a padded one must not
    batch = collate_text([[7, 8, eos], [9, eos]], pad_id=eos)
    assert batch.input_ids.tolist() == [[7, 8, eos], [9, eos, eos]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist() == [[7, 8, eos], [9, eos, -100]]


def test_collate_masks_prompt_tokens_and_supports_left_padding():
    batch = collate_text(
        [[1, 2, 3, 4], [5, 6]], pad_id=0, prompt_lengths=[2, 1], padding_side="left"
    )
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [0, 0, 5, 6]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch.labels.tolist() == [[-100, -100, 3, 4], [-100, -100, -100, 6]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_ids": [], "pad_id": 0}, "input_ids must hold at least one sequence"),
        ({"input_ids": [[1, -3]], "pad_id": 0}, r"input_ids\[0\] must hold non-negative int"),
        ({"input_ids": [[1]], "pad_id": -1}, "pad_id must be a non-negative int"),
        ({"input_ids": [[1]], "pad_id": 0, "prompt_lengths": [1, 2]}, "2 entries for 1"),
        ({"input_ids": [[1, 2]], "pad_id": 0, "prompt_lengths": [3]}, r"must be in \[0, 2\]"),
        ({"input_ids": [[1]], "pad_id": 0, "padding_side": "top"}, "padding_side must be one"),
    ],
)
def test_collate_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        collate_text(**kwargs)


sequences = st.lists(st.lists(st.integers(0, 50), max_size=6), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(sequences, st.sampled_from(["right", "left"]), st.data())
def test_collate_round_trips_through_the_mask(ids, side, data):
    prompts = [data.draw(st.integers(0, len(s))) for s in ids]
    batch = collate_text(ids, pad_id=0, prompt_lengths=prompts, padding_side=side)
    width = max(len(s) for s in ids)
    assert batch.input_ids.shape == batch.labels.shape == (len(ids), width)
    for row, (sequence, prompt) in enumerate(zip(ids, prompts, strict=True)):
        mask = batch.attention_mask[row].bool()
        assert int(mask.sum()) == len(sequence)
        assert batch.input_ids[row][mask].tolist() == sequence
        assert batch.labels[row][mask].tolist() == [-100] * prompt + sequence[prompt:]
        assert (batch.labels[row][~mask] == -100).all()
