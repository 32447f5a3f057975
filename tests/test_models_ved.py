"""The VisionEncoderDecoder adapter on tiny random ViT + GPT-2 models built from configs."""

from __future__ import annotations

import json

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from near_ties import agree_where_decisive, decisive
from prsl.models import (
    ADAPTER_FAMILIES,
    ADAPTER_INFO,
    VisionEncoderDecoderAdapter,
    adapter_class,
    build_tiny_captioner,
    build_word_tokenizer,
    load_adapter,
)
from prsl.train.start_model import build_adapter

TEXTS = [
    "a red circle left of a blue square",
    "two small green triangles on a striped background",
    "question: what colour is the circle? answer: red",
    "question: how many shapes are there? answer: three",
    "a big yellow star above a purple square",
]
CAPTIONS = ["a red circle", "two small green triangles on a striped background", "a star"]
PROMPTS = [
    "question: what colour is the circle? answer:",
    "question: how many? answer:",
    "answer:",
]


def _scramble(model: nn.Module, seed: int, scale: float = 0.5) -> None:
    """Large random weights: untrained tiny models otherwise emit EOS at once."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)


@pytest.fixture(scope="module")
def adapter() -> VisionEncoderDecoderAdapter:
    built = build_tiny_captioner(TEXTS, image_size=32, patch_size=8, hidden=32, layers=1, heads=2)
    _scramble(built.model, seed=1)
    return built


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_tiny_config_ids_lie_in_the_small_vocabulary(adapter):
    vocab = adapter.tokenizer.get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    config = adapter.model.config
    assert config.decoder.vocab_size == len(vocab)
    assert config.decoder_start_token_id == 2
    assert config.pad_token_id == 0
    assert adapter.end_token_id == 3
    assert adapter.model.generation_config.eos_token_id == 3
    assert adapter.pixel_size == (32, 32)


def test_the_pad_id_is_the_configs_or_else_the_end_token():
    built = build_tiny_captioner(TEXTS, image_size=32, patch_size=8, hidden=16, layers=1)
    assert built.pad_token_id == 0 == built.model.config.pad_token_id
    parts = built.model, built.tokenizer, built.image_processor
    built.model.config.pad_token_id = 1
    assert VisionEncoderDecoderAdapter(*parts).pad_token_id == 1
    built.model.config.pad_token_id = None
    assert VisionEncoderDecoderAdapter(*parts).pad_token_id == built.end_token_id == 3


def test_word_tokenizer_is_lowercased_word_level_with_punctuation_split():
    tok = build_word_tokenizer(["A Red circle.", "red square"])
    words = tok.convert_ids_to_tokens(tok("A RED Circle.", add_special_tokens=False).input_ids)
    assert words == ["a", "red", "circle", "."]
    # "red" occurs twice, so it takes the first id after the four special tokens
    assert tok.convert_tokens_to_ids("red") == 4
    assert tok.convert_ids_to_tokens(tok("zebra", add_special_tokens=False).input_ids) == ["[UNK]"]


def test_build_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_captioner(TEXTS, hidden=32, layers=1, seed=7)
    after = torch.rand(1)
    second = build_tiny_captioner(TEXTS, hidden=32, layers=1, seed=7)
    other = build_tiny_captioner(TEXTS, hidden=32, layers=1, seed=8)
    assert torch.equal(before, after)
    a, b, c = (m.model.state_dict() for m in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 30, "patch_size": 8}, "multiple of patch_size"),
        ({"hidden": 30, "heads": 4}, "multiple of heads"),
        ({"layers": 0}, "layers must be >= 1"),
    ],
)
def test_bad_tiny_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_captioner(TEXTS, **kwargs)


def test_empty_training_texts_are_refused():
    with pytest.raises(ValueError, match="at least one string"):
        build_tiny_captioner([])


def test_normalisation_uses_the_processor_mean_and_std(adapter, pixels):
    mean = torch.tensor(adapter.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.image_processor.image_std).view(1, 3, 1, 1)
    assert mean.flatten().tolist() == [0.5] * 3 and std.flatten().tolist() == [0.5] * 3
    torch.testing.assert_close(adapter.normalise(pixels), (pixels - mean) / std)
    # and the model really sees the normalised pixels
    seen = {}

    def record(_module, _args, kwargs):
        seen["x"] = kwargs["pixel_values"]

    handle = adapter.model.encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        adapter.logits_and_labels(pixels, CAPTIONS)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["x"], 2 * pixels - 1)


def test_wrong_pixel_shape_names_the_expected_shape(adapter):
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        adapter.loss(torch.rand(2, 3, 64, 64), ["a", "b"])


def test_text_and_prompt_counts_must_match_the_batch(adapter, pixels):
    with pytest.raises(ValueError, match="3 images"):
        adapter.loss(pixels, ["a red circle"])
    with pytest.raises(ValueError, match="1 prompts for 3 images"):
        adapter.generate(pixels, ["answer:"])


def test_labels_hold_text_and_eos_only(adapter, pixels):
    logits, labels = adapter.logits_and_labels(pixels, ["a red circle", "red", "star"], PROMPTS)
    assert logits.shape[:2] == labels.shape
    assert logits.shape[2] == len(adapter.tokenizer)
    tok = adapter.tokenizer
    for row, prompt, text in zip(labels, PROMPTS, ["a red circle", "red", "star"], strict=True):
        prompt_len = len(tok(prompt, add_special_tokens=False).input_ids)
        text_ids = tok(text, add_special_tokens=False).input_ids
        # positions 0 .. prompt_len - 1 predict prompt tokens: ignored
        assert (row[:prompt_len] == -100).all()
        counted = row[row != -100].tolist()
        assert counted == text_ids + [adapter.end_token_id]
        # never the pad id as a target
        assert adapter.model.config.pad_token_id not in counted


def test_loss_is_per_example_and_equals_the_models_own_loss(adapter, pixels):
    """Without prompts, the adapter's per-example CE equals HF's loss on each example alone."""
    losses = adapter.loss(pixels, CAPTIONS)
    assert losses.shape == (3,)
    values = adapter.normalise(pixels)
    for i, caption in enumerate(CAPTIONS):
        ids = adapter.tokenizer(caption, add_special_tokens=False).input_ids + [3]
        out = adapter.model(pixel_values=values[i : i + 1], labels=torch.tensor([ids]))
        torch.testing.assert_close(losses[i], out.loss)


def test_loss_with_prompt_counts_only_answer_tokens(adapter, pixels):
    """Direct computation: log-softmax of the full sequence, read at the answer positions."""
    losses = adapter.loss(pixels, ["red", "three", "a star"], PROMPTS)
    values = adapter.normalise(pixels)
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ["red", "three", "a star"], strict=True)):
        prompt_ids = adapter.tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = adapter.tokenizer(answer, add_special_tokens=False).input_ids + [3]
        sequence = [2] + prompt_ids + answer_ids
        logits = adapter.model(
            pixel_values=values[i : i + 1], decoder_input_ids=torch.tensor([sequence[:-1]])
        ).logits[0]
        logp = logits.log_softmax(-1)
        start = len(prompt_ids)  # logits[start] predicts the first answer token
        picked = [logp[start + j, t] for j, t in enumerate(answer_ids)]
        torch.testing.assert_close(losses[i], -torch.stack(picked).mean())


def test_padding_does_not_change_an_examples_loss(adapter, pixels):
    alone = adapter.loss(pixels[:1], CAPTIONS[:1], PROMPTS[:1])
    batched = adapter.loss(pixels, CAPTIONS, PROMPTS)
    torch.testing.assert_close(batched[0], alone[0])


def test_gradients_reach_the_pixels(adapter, pixels):
    pixels = pixels.clone().requires_grad_()
    adapter.loss(pixels, CAPTIONS, PROMPTS).sum().backward()
    assert pixels.grad is not None
    assert pixels.grad.abs().sum() > 0
    assert (pixels.grad.abs().flatten(1).sum(1) > 0).all()


def test_batched_generation_equals_one_by_one(adapter, pixels):
    for prompts in (PROMPTS, None):
        batched = adapter.generate(pixels, prompts, max_new_tokens=6)
        single = [
            adapter.generate(pixels[i : i + 1], None if prompts is None else [prompts[i]], 6)[0]
            for i in range(3)
        ]
        # a batch and one row are two float computations: compared where no choice is a tie
        agree_where_decisive(batched, single, decisive(adapter, pixels, batched, prompts))
        # the check only means something if the model says different non-empty things
        assert len(set(batched)) > 1 and any(batched)


@torch.no_grad()
def greedy_reference(adapter, pixels, prompt: str | None, steps: int) -> str:
    """Greedy decoding the slow way: one image, full recomputation, no cache, no padding."""
    tok = adapter.tokenizer
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids if prompt else []
    sequence = [adapter.start_token_id] + prompt_ids
    values = adapter.normalise(pixels)
    new: list[int] = []
    for _ in range(steps):
        logits = adapter.model(pixel_values=values, decoder_input_ids=torch.tensor([sequence]))
        token = int(logits.logits[0, -1].argmax())
        if token == adapter.end_token_id:
            break
        new.append(token)
        sequence.append(token)
    return tok.decode(new, skip_special_tokens=True).strip()


def test_generation_is_greedy_decoding_of_the_continuation_only(adapter, pixels):
    generated = adapter.generate(pixels, PROMPTS, max_new_tokens=6)
    expected = [greedy_reference(adapter, pixels[i : i + 1], PROMPTS[i], 6) for i in range(3)]
    agree_where_decisive(generated, expected, decisive(adapter, pixels, generated, PROMPTS))


def test_generation_checks_the_position_budget(adapter, pixels):
    with pytest.raises(ValueError, match="positions"):
        adapter.generate(pixels, max_new_tokens=500)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        adapter.generate(pixels, max_new_tokens=0)


def test_save_and_load_round_trip(adapter, pixels, tmp_path):
    adapter.vqa_template = "q: {question} a:"
    try:
        adapter.save(tmp_path)
    finally:
        adapter.vqa_template = VisionEncoderDecoderAdapter.default_vqa_template
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", ADAPTER_INFO} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    info = json.loads((tmp_path / ADAPTER_INFO).read_text())
    assert info == {"family": "vision-encoder-decoder", "vqa_template": "q: {question} a:"}

    loaded = load_adapter(tmp_path)
    assert isinstance(loaded, VisionEncoderDecoderAdapter)
    assert loaded.vqa_prompt(" is it red? ") == "q: is it red? a:"
    assert loaded.pixel_size == adapter.pixel_size
    assert loaded.image_mean.tolist() == adapter.image_mean.tolist()
    assert loaded.image_std.tolist() == adapter.image_std.tolist()
    assert loaded.tokenizer.get_vocab() == adapter.tokenizer.get_vocab()
    with torch.no_grad():
        before = adapter.logits_and_labels(pixels, CAPTIONS, PROMPTS)
        after = loaded.logits_and_labels(pixels, CAPTIONS, PROMPTS)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert loaded.generate(pixels, PROMPTS, 6) == adapter.generate(pixels, PROMPTS, 6)


def test_load_with_dtype_and_device(adapter, tmp_path):
    adapter.save(tmp_path)
    loaded = load_adapter(tmp_path, family="vision-encoder-decoder", device="cpu", dtype="float64")
    assert loaded.model.dtype == torch.float64
    assert loaded.normalise(torch.rand(1, 3, 32, 32)).dtype == torch.float64
    with pytest.raises(ValueError, match="floating torch dtype"):
        load_adapter(tmp_path, dtype="int8")


def test_registry_rejects_unknown_families_with_the_valid_names(tmp_path):
    assert set(ADAPTER_FAMILIES) == {"vision-encoder-decoder", "blip2", "image-text-to-text"}
    assert adapter_class("blip2").family == "blip2"
    valid = "valid families: blip2, image-text-to-text, vision-encoder-decoder"
    with pytest.raises(ValueError, match=valid):
        load_adapter(tmp_path, family="llava")


def test_directory_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_adapter(tmp_path)


def test_unknown_model_type_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model; supported model types"):
        load_adapter(tmp_path)


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="not a local directory.*hub id failed"):
        load_adapter("prsl-tests/no-such-model")


def test_build_adapter_builds_the_tiny_model_once_and_reloads_it(tmp_path):
    from prsl.data.types import CaptionExample, DatasetSplit, VQAExample
    from prsl.train import ModelConfig

    split = DatasetSplit(
        [VQAExample("img.png", "What colour is it?", ("red", "red", "blue"), "1", "q1")],
        task="vqa",
    )
    cfg = ModelConfig(tiny={"hidden": 32, "layers": 1})
    built = build_adapter(cfg, split, base_dir=tmp_path / "base")
    words = set(built.tokenizer.get_vocab())
    assert {"question", "what", "colour", "answer", "red", "blue"} <= words
    assert (tmp_path / "base" / ADAPTER_INFO).is_file()
    # a second call (a resumed run, another process) loads what the first one saved
    other = DatasetSplit([CaptionExample("img.png", ("a green star",), "2")])
    again = build_adapter(cfg, other, base_dir=tmp_path / "base")
    assert again.tokenizer.get_vocab() == built.tokenizer.get_vocab()
    first, second = built.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("family", "hub_id"),
    [
        ("vision-encoder-decoder", "nlpconnect/vit-gpt2-image-captioning"),
        ("blip2", "Salesforce/blip2-opt-2.7b"),
    ],
)
def test_from_pretrained_defaults_to_the_papers_checkpoint(monkeypatch, family, hub_id):
    asked = []

    def record(source, **kwargs):
        asked.append((source, kwargs))
        raise OSError("offline")

    cls = adapter_class(family)
    monkeypatch.setattr(cls.model_class, "from_pretrained", record)
    with pytest.raises(OSError, match="offline"):
        cls.from_pretrained()
    assert asked == [(hub_id, {"trust_remote_code": False})]


def test_an_attacked_batch_is_built_and_copied_once_and_stays_right(adapter, pixels, monkeypatch):
    """An attack asks for the same texts at every step: the teacher-forcing batch is built (and
    copied to the device) once, then reused; other texts or another label padding rebuild it."""
    import prsl.models.hf as hf

    built = []
    original = hf.teacher_forcing_batch
    monkeypatch.setattr(hf, "teacher_forcing_batch", lambda *a: built.append(a) or original(*a))
    adapter._batch_cache.clear()
    texts = ["a red circle", "a blue square"]
    first = adapter.loss(pixels[:2], texts)
    for _ in range(4):
        assert torch.equal(adapter.loss(pixels[:2], texts), first)
    assert len(built) == 1
    other = adapter.loss(pixels[:2], ["a blue square", "a red circle"])
    assert len(built) == 2 and not torch.equal(other, first)
    adapter.label_padding = hf.LabelPadding(eos=True, length=12)
    try:
        _, labels = adapter.logits_and_labels(pixels[:2], texts)
        assert len(built) == 3 and labels.shape[1] == 12  # the padding is part of the batch
    finally:
        adapter.label_padding = hf.LabelPadding()
    for size in range(1, hf.TOKEN_CACHE_BATCHES + 3):  # a bounded number of batches is kept
        adapter.loss(pixels[:1].repeat(size, 1, 1, 1), ["a red circle"] * size)
    assert len(adapter._batch_cache) == hf.TOKEN_CACHE_BATCHES
