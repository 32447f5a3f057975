"""The BLIP-2 adapter on a tiny random BLIP-2 (OPT) built from configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    BlipImageProcessorPil,
    OPTConfig,
    T5Config,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from near_ties import agree_where_decisive, decisive
from prsl.models import Blip2Adapter, build_word_tokenizer, load_adapter

N_QUERY = 4
WORDS = [
    "question: what colour is the circle? answer: red",
    "question: how many shapes are there? answer: three",
    "a blue square and a green star",
]
QUESTIONS = ["what colour is the circle?", "how many?", "is there a blue square?"]
ANSWERS = ["red", "three", "yes a blue square"]


def tiny_blip2(seed: int = 0, scale: float = 0.3) -> Blip2Adapter:
    """BLIP-2 with a 1-layer ViT, Q-Former and OPT, a word-level vocabulary and CLIP stats."""
    tokenizer = build_word_tokenizer(WORDS, extra_special_tokens=("<image>",))
    ids = tokenizer.get_vocab()
    text = OPTConfig(
        vocab_size=len(ids),
        hidden_size=32,
        num_hidden_layers=1,
        ffn_dim=64,
        num_attention_heads=2,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        bos_token_id=ids["[BOS]"],
        eos_token_id=ids["[EOS]"],
        pad_token_id=ids["[PAD]"],
    )
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "encoder_hidden_size": 32,
        },
        text_config=text.to_dict(),
        num_query_tokens=N_QUERY,
        image_token_index=ids["<image>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config).eval()
        with torch.no_grad():  # large weights: a random tiny LM otherwise stops at once
            for param in model.parameters():
                param.add_(torch.randn_like(param) * scale)
    processor = BlipImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD
    )
    return Blip2Adapter(model, tokenizer, processor)


@pytest.fixture(scope="module")
def adapter() -> Blip2Adapter:
    return tiny_blip2()


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def prompts_for(adapter: Blip2Adapter) -> list[str]:
    return [adapter.vqa_prompt(q) for q in QUESTIONS]


def _capture_inputs(model: nn.Module, call):
    seen = {}

    def record(_module, _args, kwargs):
        seen.update(kwargs)

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return seen


def test_the_pad_id_is_the_language_models_or_else_the_end_token():
    built = tiny_blip2()
    text = built.model.config.text_config
    assert built.pad_token_id == text.pad_token_id == built.tokenizer.pad_token_id
    parts = built.model, built.tokenizer, built.image_processor
    text.pad_token_id = built.tokenizer.unk_token_id  # the language model's, not the tokenizer's
    assert Blip2Adapter(*parts).pad_token_id == built.tokenizer.unk_token_id
    text.pad_token_id = None
    assert Blip2Adapter(*parts).pad_token_id == built.end_token_id


def test_vqa_prompt_is_the_papers_template(adapter):
    assert adapter.vqa_prompt(" how many? ") == "Question: how many? Answer:"


def test_input_ids_start_with_query_many_image_tokens_then_bos(adapter, pixels):
    prompts = prompts_for(adapter)
    seen = _capture_inputs(adapter.model, lambda: adapter.loss(pixels, ANSWERS, prompts))
    ids, mask = seen["input_ids"], seen["attention_mask"]
    image = adapter.model.config.image_token_index
    bos = adapter.model.config.text_config.bos_token_id
    assert (ids[:, :N_QUERY] == image).all()
    assert (ids[:, N_QUERY] == bos).all()
    assert ((ids == image).sum(dim=1) == N_QUERY).all()
    for row, row_mask, prompt, answer in zip(ids, mask, prompts, ANSWERS, strict=True):
        expected = adapter.tokenizer(f"{prompt} {answer}", add_special_tokens=False).input_ids
        real = row[row_mask.bool()].tolist()
        assert real == [image] * N_QUERY + [bos] + expected


def test_normalisation_uses_the_clip_mean_and_std(adapter, pixels):
    assert adapter.image_mean.tolist() == pytest.approx(list(OPENAI_CLIP_MEAN))
    assert adapter.image_std.tolist() == pytest.approx(list(OPENAI_CLIP_STD))
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    seen = _capture_inputs(adapter.model, lambda: adapter.loss(pixels, ANSWERS))
    torch.testing.assert_close(seen["pixel_values"], (pixels - mean) / std)


def test_labels_cover_the_answer_and_the_end_token_only(adapter, pixels):
    prompts = prompts_for(adapter)
    logits, labels = adapter.logits_and_labels(pixels, ANSWERS, prompts)
    assert logits.shape[:2] == labels.shape
    for row, answer in zip(labels, ANSWERS, strict=True):
        answer_ids = adapter.tokenizer(" " + answer, add_special_tokens=False).input_ids
        assert row[row != -100].tolist() == answer_ids + [adapter.end_token_id]


def test_loss_is_per_example_and_equals_the_models_own_loss(adapter, pixels):
    """HF's BLIP-2 loss on one example, with image, BOS and prompt labels masked by hand."""
    prompts = prompts_for(adapter)
    losses = adapter.loss(pixels, ANSWERS, prompts)
    assert losses.shape == (3,)
    values = adapter.normalise(pixels)
    config = adapter.model.config
    for i, (prompt, answer) in enumerate(zip(prompts, ANSWERS, strict=True)):
        prompt_ids = adapter.tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = adapter.tokenizer(" " + answer, add_special_tokens=False).input_ids
        head = [config.image_token_index] * N_QUERY + [config.text_config.bos_token_id]
        sequence = head + prompt_ids + answer_ids + [adapter.end_token_id]
        labels = [-100] * (len(head) + len(prompt_ids)) + answer_ids + [adapter.end_token_id]
        out = adapter.model(
            pixel_values=values[i : i + 1],
            input_ids=torch.tensor([sequence]),
            labels=torch.tensor([labels]),
        )
        torch.testing.assert_close(losses[i], out.loss)


def test_captioning_without_prompt(adapter, pixels):
    losses = adapter.loss(pixels, ANSWERS)
    alone = adapter.loss(pixels[1:2], ANSWERS[1:2])
    torch.testing.assert_close(losses[1], alone[0])
    _, labels = adapter.logits_and_labels(pixels, ANSWERS)
    # without a prompt, the very first text token (predicted from BOS) counts
    first = adapter.tokenizer(ANSWERS[0], add_special_tokens=False).input_ids[0]
    assert labels[0, 0].item() == first


def test_gradients_reach_the_pixels_through_the_frozen_llm(pixels):
    model = tiny_blip2()
    model.freeze_for_finetune("qformer")
    pixels = pixels.clone().requires_grad_()
    model.loss(pixels, ANSWERS, prompts_for(model)).sum().backward()
    assert (pixels.grad.abs().flatten(1).sum(1) > 0).all()
    assert model.model.qformer.layernorm.weight.grad is not None
    assert all(p.grad is None for p in model.model.language_model.parameters())


def test_batched_generation_equals_one_by_one(adapter, pixels):
    for prompts in (prompts_for(adapter), None):
        batched = adapter.generate(pixels, prompts, max_new_tokens=5)
        one_by_one = [None] * 3 if prompts is None else [[p] for p in prompts]
        single = [adapter.generate(pixels[i : i + 1], one_by_one[i], 5)[0] for i in range(3)]
        # a batch and one row are two float computations: compared where no choice is a tie
        agree_where_decisive(batched, single, decisive(adapter, pixels, batched, prompts))
        assert len(set(batched)) > 1 and any(batched)


@torch.no_grad()
def greedy_reference(adapter: Blip2Adapter, pixels, prompt: str | None, steps: int) -> str:
    """Greedy decoding the slow way: one image, full recomputation, no cache, no padding."""
    config = adapter.model.config
    prompt_ids = adapter.tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    sequence = [config.image_token_index] * N_QUERY + [config.text_config.bos_token_id]
    sequence += prompt_ids
    values = adapter.normalise(pixels)
    new: list[int] = []
    for _ in range(steps):
        logits = adapter.model(pixel_values=values, input_ids=torch.tensor([sequence])).logits
        logits[0, -1, config.image_token_index] = -torch.inf  # a placeholder is no word
        token = int(logits[0, -1].argmax())
        if token == adapter.end_token_id:
            break
        new.append(token)
        sequence.append(token)
    return adapter.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_generation_is_greedy_decoding_of_the_continuation_only(adapter, pixels):
    for prompts in (prompts_for(adapter), [None] * 3):
        generated = adapter.generate(pixels, None if prompts[0] is None else prompts, 5)
        expected = [greedy_reference(adapter, pixels[i : i + 1], prompts[i], 5) for i in range(3)]
        given = None if prompts[0] is None else prompts
        agree_where_decisive(generated, expected, decisive(adapter, pixels, generated, given))


def test_end_token_comes_from_the_generation_config():
    """BLIP-2-OPT stops at "\\n", not at the tokenizer's EOS: training must teach that stop."""
    model = tiny_blip2()
    stop = model.tokenizer.convert_tokens_to_ids(".")
    model.model.generation_config.eos_token_id = [stop, model.tokenizer.eos_token_id]
    rebuilt = Blip2Adapter(model.model, model.tokenizer, model.image_processor)
    assert rebuilt.end_token_id == stop
    assert rebuilt.stop_token_ids == {stop, model.tokenizer.eos_token_id}
    _, labels = rebuilt.logits_and_labels(torch.rand(1, 3, 32, 32), ["red"], ["Question: x?"])
    assert labels[0, labels[0] != -100].tolist()[-1] == stop


def test_qformer_mode_trains_qformer_queries_and_projection_only():
    model = tiny_blip2()
    count = model.freeze_for_finetune("qformer")
    trainable = {n for n, p in model.model.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in model.model.named_parameters()
        if n == "query_tokens" or n.startswith(("qformer.", "language_projection."))
    }
    assert trainable == expected
    assert count == sum(p.numel() for n, p in model.model.named_parameters() if n in expected)
    assert not any(n.startswith(("vision_model.", "language_model.")) for n in trainable)


def test_lora_mode_trains_llm_q_v_adapters_only_and_saves_merged(pixels, tmp_path):
    model = tiny_blip2()
    prompts = prompts_for(model)
    with torch.no_grad():
        plain = model.logits_and_labels(pixels, ANSWERS, prompts)[0]
    count = model.freeze_for_finetune("lora", lora_r=2, lora_alpha=4)
    trainable = [n for n, p in model.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("language_model.") for n in trainable)
    assert all(".lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in trainable)
    # one OPT layer, q and v, each A (2 x 32) and B (32 x 2)
    assert count == 2 * (2 * 32 + 32 * 2)
    with torch.no_grad():
        # B starts at zero: injecting LoRA does not change the model
        torch.testing.assert_close(model.logits_and_labels(pixels, ANSWERS, prompts)[0], plain)
        for name, param in model.model.named_parameters():
            if ".lora_B." in name:
                param.normal_(generator=torch.Generator().manual_seed(1))
        tuned = model.logits_and_labels(pixels, ANSWERS, prompts)[0]
    assert (tuned - plain).abs().max() > 1e-3

    model.save(tmp_path)
    loaded = load_adapter(tmp_path)
    assert isinstance(loaded, Blip2Adapter)
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.logits_and_labels(pixels, ANSWERS, prompts)[0], tuned, atol=1e-5, rtol=1e-5
        )
    # saving merged a copy: the live model still trains its adapters
    assert any(".lora_" in n for n, p in model.model.named_parameters() if p.requires_grad)


def test_freeze_errors_are_clear():
    model = tiny_blip2()
    with pytest.raises(ValueError, match=r"mode must be one of \('qformer', 'lora'\)"):
        model.freeze_for_finetune("full")
    with pytest.raises(ValueError, match="lora_r must be >= 1"):
        model.freeze_for_finetune("lora", lora_r=0)
    model.freeze_for_finetune("lora", lora_r=1)
    with pytest.raises(ValueError, match="already carries LoRA"):
        model.freeze_for_finetune("lora")


def test_save_and_load_round_trip(adapter, pixels, tmp_path):
    adapter.save(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_adapter(tmp_path)  # family from config.model_type == "blip-2"
    assert isinstance(loaded, Blip2Adapter)
    assert loaded.pixel_size == (32, 32)
    assert loaded.image_mean.tolist() == adapter.image_mean.tolist()
    assert loaded.image_std.tolist() == adapter.image_std.tolist()
    prompts = prompts_for(adapter)
    with torch.no_grad():
        before = adapter.logits_and_labels(pixels, ANSWERS, prompts)
        after = loaded.logits_and_labels(pixels, ANSWERS, prompts)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert loaded.generate(pixels, prompts, 5) == adapter.generate(pixels, prompts, 5)


def test_encoder_decoder_language_models_are_refused():
    t5 = T5Config(
        vocab_size=32,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
    )
    config = Blip2Config(
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "encoder_hidden_size": 16,
        },
        text_config=t5.to_dict(),
        num_query_tokens=2,
        image_token_index=31,
    )
    model = Blip2ForConditionalGeneration(config)
    processor = BlipImageProcessorPil(size={"height": 16, "width": 16})
    with pytest.raises(ValueError, match="decoder-only language models"):
        Blip2Adapter(model, build_word_tokenizer(WORDS), processor)
