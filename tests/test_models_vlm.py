"""Image-text-to-text VLMs (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, PaliGemma, Gemma 3, Qwen2-VL,
Qwen2.5-VL, Qwen3-VL and its MoE sibling, Mistral 3, SmolVLM and Idefics3 with image splitting
off and on, InternVL with its dynamic patches) through their differentiable pixel pipelines,
each a tiny random model with a real processor built offline, saved and loaded through
``load_adapter``.

What a user relies on: the pipeline gives what the Hugging Face processor gives, pixel for
pixel; ``adapter.generate`` gives what ``model.generate(**processor(...))`` gives, token for
token, batched or not; the loss's gradient reaches the pixels; fine-tuning lowers the loss with
CE and PRSL, and a save / load round trip keeps the outputs; every family fine-tunes, evaluates
under attack and reports from the command line, keeping its canvas and prompts; a briefly
trained model's captions fall to PGD far more than to noise; bad input is refused before any
work.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from shutil import copytree

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

import vlm_builders
from near_ties import agree_where_decisive, assert_mostly_decisive, decisive
from prsl.attacks import pgd, untargeted_loss
from prsl.cli import app
from prsl.config import load_config
from prsl.core.errors import InvalidInput
from prsl.data import evaluation_samples, load_batch, read_dataset
from prsl.losses import get_loss
from prsl.models import ImageTextAdapter, build_tiny_captioner, load_adapter
from prsl.models.pixels import CanvasPipeline
from prsl.models.processors import load_processor
from prsl.train import FinetuneConfig, finetune

FAMILIES = vlm_builders.FAMILIES
ANYRES = ("llava_next", "llava_onevision")
CANVAS = ("qwen", *ANYRES)
"""Families whose input size prsl fixes (a canvas the processor would take at any size)."""


class Saved(dict):
    """Family -> its tiny saved model, built the first time a test asks for it."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        self[family] = vlm_builders.build(family, self.root / family)
        return self[family]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Saved:
    return Saved(tmp_path_factory.mktemp("vlms"))


def canvas_images(adapter: ImageTextAdapter, images) -> list[Image.Image]:
    """The images prsl prepares, as the 8-bit images they are."""
    pixels = adapter.prepare_images(images).mul(255).round().byte().permute(0, 2, 3, 1)
    return [Image.fromarray(array) for array in pixels.numpy()]


def processor_inputs(adapter: ImageTextAdapter, folder: Path, images, prompts, processor=None):
    """What the Hugging Face processor gives for these images and rendered prompts; where prsl
    fixes a size the processor does not (Qwen's and Mistral 3's, a tiling model's canvas), for
    the images prsl prepares."""
    processor = load_processor(str(folder)) if processor is None else processor
    pipeline = adapter.pipeline  # Idefics3 without splitting: the processor's own resize
    if isinstance(pipeline, CanvasPipeline) and getattr(pipeline, "tiled", True):
        images = canvas_images(adapter, images)
    processor.tokenizer.padding_side = "left"
    texts = [adapter.render(p) for p in prompts]
    options = adapter.pipeline.processor_options
    images = [[image] for image in images]  # one image per text
    return processor(images=images, text=texts, padding=True, return_tensors="pt", **options)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_pixel_pipeline_is_the_processor(saved, family):
    adapter = load_adapter(saved[family])
    assert isinstance(adapter, ImageTextAdapter) and adapter.family == "image-text-to-text"
    photos = [vlm_builders.photo(97, 61, seed=0), vlm_builders.photo(50, 80, seed=1)]
    reference = processor_inputs(adapter, saved[family], photos, [adapter.caption_prompt] * 2)
    pixels = adapter.prepare_images(photos)
    assert pixels.shape == (2, 3, *adapter.pixel_size) and 0 <= pixels.min() <= pixels.max() <= 1
    mine = adapter.pipeline.model_inputs(pixels)
    for name, value in mine.items():
        assert value.shape == reference[name].shape, name
        torch.testing.assert_close(value.float(), reference[name].float(), rtol=0, atol=1e-5)
    for prompt in (adapter.caption_prompt, adapter.vqa_prompt("what colour is the circle?")):
        single = processor_inputs(adapter, saved[family], photos[:1], [prompt])
        assert adapter.prefix_ids(prompt) == single["input_ids"][0].tolist()
        for name, value in adapter.pipeline.generation_inputs(single["input_ids"]).items():
            assert torch.equal(value, single[name]), name  # token types: Gemma 3, Qwen-VL


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_is_model_generate_token_for_token_batched_or_not(saved, family):
    adapter = load_adapter(saved[family])
    photos = [vlm_builders.photo(97, 61, seed=2), vlm_builders.photo(61, 97, seed=3)]
    prompts = [adapter.caption_prompt, adapter.vqa_prompt("how many shapes are there?")]
    pixels = adapter.prepare_images(photos)
    batched = adapter.generate(pixels, prompts, max_new_tokens=6)
    # ours and Hugging Face's, batched and not, are several float computations of the same
    # logits: no greedy choice on the way may be a near tie (the weights are the same on every
    # CPU, so this holds everywhere; it fails loudly if a builder change ever makes one)
    assert_mostly_decisive(decisive(adapter, pixels, batched, prompts))
    for i, prompt in enumerate(prompts):
        inputs = processor_inputs(adapter, saved[family], photos[i : i + 1], [prompt])
        with torch.no_grad():
            out = adapter.model.generate(**inputs, max_new_tokens=6, do_sample=False)
        expected = adapter._decode(out[:, inputs["input_ids"].shape[1] :])
        assert adapter.generate(pixels[i : i + 1], [prompt], max_new_tokens=6) == expected
        assert batched[i] == expected[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_loss_reaches_the_pixels_and_counts_only_the_answer(saved, family):
    adapter = load_adapter(saved[family])
    pixels = adapter.prepare_images([vlm_builders.photo()]).requires_grad_()
    logits, labels = adapter.logits_and_labels(pixels, ["a red circle"], None)
    counted = labels[labels != -100].tolist()
    answer = adapter._answer_ids(["a red circle"], 1)[0]
    assert counted == [*answer, adapter.end_token_id]  # the answer, then the end of the turn
    adapter.loss(pixels, ["a red circle"]).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "paligemma"])
def test_the_trained_tokens_are_what_the_chat_template_writes_for_the_answer(saved, family):
    """What a chat model is trained on (and an attack pushes away from) is the answer as its own
    template writes an assistant turn after the prompt: the leading space or its absence, then
    the end of the turn, so the trained tokens are those ``generate`` writes."""
    adapter = load_adapter(saved[family])
    pixels = adapter.prepare_images([vlm_builders.photo()])
    _, labels = adapter.logits_and_labels(pixels, ["a red circle"], None)
    counted = labels[labels != -100].tolist()
    asked = adapter.render(adapter.caption_prompt)
    answered = adapter._turn(adapter.caption_prompt) + [
        {"role": "assistant", "content": [{"type": "text", "text": "a red circle"}]}
    ]
    written = adapter._chat(answered)
    assert written.startswith(asked.rstrip())
    at = written.rindex("a red circle")
    answer = written[at - 1 if written[at - 1] == " " else at :]
    tokens = adapter.tokenizer(answer, add_special_tokens=False)["input_ids"]
    # the answer's tokens, then the end of the turn (where the template writes one)
    assert counted[:-1] == tokens[: len(counted) - 1], (answer, counted, tokens)
    assert counted[-1] == adapter.end_token_id


def train_config(folder: Path, out: Path, loss: str, mode: str, steps: int = 8) -> FinetuneConfig:
    params = "{k: 4, weight: 0.001}" if loss == "prsl" else "{}"
    return load_config(
        FinetuneConfig,
        None,
        [
            f"model.name_or_path={folder}",
            f"model.vlm_trainable={mode}",
            "model.lora_r=4",
            "data.options={n: 16, seed: 0}",
            f"loss={{name: {loss}, params: {params}}}",
            f"train.max_steps={steps}",
            "train.batch_size=8",
            "train.lr=5e-3",
            "train.log_every=1",
            "train.scheduler=constant",
            f"train.output_dir={out}",
        ],
    )


@pytest.mark.parametrize(
    ("family", "loss"),
    [
        ("llava", "ce"),
        ("qwen2_vl", "prsl"),
        ("qwen2_5_vl", "ce"),
        ("smolvlm", "prsl"),
        ("idefics3-tiled", "prsl"),
        ("gemma3", "ce"),
        ("qwen3_vl", "prsl"),
        ("qwen3_vl_moe", "ce"),
        ("mistral3", "prsl"),
        ("internvl", "ce"),
        ("llava_next", "prsl"),
        ("llava_onevision", "ce"),
    ],
)
def test_lora_steps_lower_the_loss_and_the_saved_model_answers_the_same(
    saved, tmp_path, family, loss
):
    result = finetune(train_config(saved[family], tmp_path, loss, "lora+projector"), progress=False)
    ce = [step["ce"] for step in result.history]
    assert sum(ce[-3:]) < sum(ce[:3]), ce
    reloaded = load_adapter(result.model_dir)  # LoRA merged into plain weights
    assert not any("lora" in name for name, _ in reloaded.model.named_parameters())
    again = load_adapter(result.model_dir)
    pixels = reloaded.prepare_images([vlm_builders.photo(seed=4)])
    assert reloaded.generate(pixels, max_new_tokens=5) == again.generate(pixels, max_new_tokens=5)


def captions_changed(adapter, pixels, changed_pixels) -> float:
    before = adapter.generate(pixels, max_new_tokens=8)
    after = adapter.generate(changed_pixels, max_new_tokens=8)
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def test_pgd_moves_a_trained_vlm_far_more_than_noise(saved, tmp_path):
    cfg = train_config(saved["llava"], tmp_path / "run", "ce", "full", steps=80)
    adapter = load_adapter(finetune(cfg, progress=False).model_dir)
    samples = evaluation_samples(read_dataset("shapes", n=16, seed=9), adapter.vqa_prompt)
    pixels, _, _ = load_batch(samples, adapter.pixel_size, adapter.prepare_images)
    clean = adapter.generate(pixels, max_new_tokens=8)
    assert sum("square" in c or "circle" in c or "triangle" in c for c in clean) >= 8  # it learnt
    eps = 8 / 255
    generator = torch.Generator().manual_seed(0)
    noise = (pixels + eps * (2 * torch.randint(0, 2, pixels.shape, generator=generator) - 1)).clamp(
        0, 1
    )
    adversarial = pgd(
        pixels, untargeted_loss(adapter, clean), eps=eps, steps=10, generator=generator
    )
    assert (adversarial - pixels).abs().max() <= eps + 1e-6
    attacked, noisy = (
        captions_changed(adapter, pixels, adversarial),
        captions_changed(adapter, pixels, noise),
    )
    assert attacked >= 0.75 and attacked >= noisy + 0.4, (attacked, noisy)


# ------------------------------------------------------------------------------- command line

PRSL_WEIGHT = 0.001
PRSL_LOSS = f"{{name: prsl, params: {{k: 4, weight: {PRSL_WEIGHT}}}}}"
LOSSES = {family: "ce" if i % 2 else "prsl" for i, family in enumerate(FAMILIES)}
"""Each family's fine-tuning loss: PRSL and CE in turn, so both run through every kind of
pipeline between them."""
ANYRES_CANVAS = (61, 97)
ANYRES_GRIDS = {"llava_next": (2, 2), "llava_onevision": (2, 4)}  # OneVision's pinpoints go to 6x6
"""The anyres families start from a non-square canvas (``prsl_adapter.json``), whose grid the
fine-tuned model must keep."""


def start_model(saved: Saved, family: str, root: Path) -> Path:
    """The model a user fine-tunes: the family's saved model, an anyres one on its canvas."""
    if family not in ANYRES:
        return saved[family]
    start = copytree(saved[family], root / family)
    info = {"family": "image-text-to-text", "image_size": list(ANYRES_CANVAS)}
    (start / "prsl_adapter.json").write_text(json.dumps(info))
    return start


def cli_finetune(run: CliRunner, start: Path, loss: str, out: Path):
    """``prsl finetune``: LoRA (the default), 2 steps of 2 shapes-vqa questions each."""
    return run.invoke(
        app,
        [
            "finetune",
            *("--set", f"model.name_or_path={start}", "--set", "model.lora_r=4"),
            *("--set", "data.name=shapes-vqa", "--set", "data.options={n: 4, seed: 0}"),
            *("--set", f"loss={PRSL_LOSS if loss == 'prsl' else '{name: ce}'}"),
            *("--set", "train.max_steps=2", "--set", "train.batch_size=2"),
            *("--set", "train.log_every=1", "--set", f"train.output_dir={out}"),
        ],
    )


def cli_evaluate(run: CliRunner, models: list[Path], out: Path):
    """One ``prsl evaluate`` of every model: 2 questions, FGSM at one ε (through the tiles of
    the tiling families), VQA accuracy (no Java)."""
    return run.invoke(
        app,
        [
            "evaluate",
            *(arg for model in models for arg in ("-m", str(model))),
            *("--set", "data.name=shapes-vqa", "--set", "data.options={n: 2, seed: 3}"),
            *("--set", "n_images=2", "--set", "max_new_tokens=3"),
            *("--set", "attacks=[{name: fgsm, eps: [4/255]}]"),
            *("--set", "bootstrap.resamples=100", "--set", f"output_dir={out}"),
        ],
    )


@dataclass
class CommandLineRun:
    """Every family fine-tuned, then evaluated with its start model and reported, all from the
    command line (:func:`every_family_run`)."""

    root: Path
    starts: dict[str, Path]
    finetuned: dict[str, Result]
    evaluation: Result
    report: Result | None = None


@pytest.fixture(scope="module")
def every_family_run(saved, tmp_path_factory) -> CommandLineRun:
    """What a user runs, once for every family: one ``prsl finetune`` per family, then ONE
    ``prsl evaluate`` of every fine-tuned model beside its start model, and ONE ``prsl report``.
    A family whose fine-tune fails is left out of the evaluation (its test shows why); the
    others go on."""
    root, run = tmp_path_factory.mktemp("every-family"), CliRunner()
    starts = {family: start_model(saved, family, root) for family in FAMILIES}
    finetuned = {
        family: cli_finetune(run, starts[family], LOSSES[family], root / f"{family}-ft")
        for family in FAMILIES
    }
    models = [
        model
        for family, tune in finetuned.items()
        if tune.exit_code == 0
        for model in (root / f"{family}-ft" / "final", starts[family])
    ]
    done = CommandLineRun(root, starts, finetuned, cli_evaluate(run, models, root / "eval"))
    if done.evaluation.exit_code == 0:
        done.report = run.invoke(app, ["report", str(root / "eval"), "--out", str(root / "rep")])
    return done


def changed_weights(start: Path, tuned: Path) -> list[str]:
    before, after = load_file(str(start / "model.safetensors")), load_file(str(tuned))
    assert after.keys() == before.keys()  # LoRA merged: the start model's layout
    return [name for name in after if not torch.equal(before[name], after[name])]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_finetunes_evaluates_and_reports_from_the_command_line(
    every_family_run, family
):
    done, name = every_family_run, f"{family}-ft"
    start, out = done.starts[family], done.root / name
    assert done.finetuned[family].exit_code == 0, done.finetuned[family].output
    with (out / "train_log.csv").open() as log:  # the loss it was asked for, at every step
        steps = list(csv.DictReader(log))
    weight = PRSL_WEIGHT if LOSSES[family] == "prsl" else 0.0
    assert [int(step["step"]) for step in steps] == [1, 2]
    for step in steps:
        parts = float(step["ce"]) + weight * float(step["regularizer"])
        assert math.isfinite(parts) and float(step["loss"]) == pytest.approx(parts, rel=1e-5)
    assert changed_weights(start, out / "final" / "model.safetensors")  # it did train
    assert done.evaluation.exit_code == 0, done.evaluation.output
    results = json.loads((done.root / "eval" / "results.json").read_text())
    rows = [r for r in results["runs"] if r["model"] in (name, family)]
    assert {(r["model"], r["loss"], r["attack"], r["n_images"]) for r in rows} == {
        (name, LOSSES[family], "fgsm", 2),
        (family, "pretrained", "fgsm", 2),
    }
    assert {r.get("train_steps") for r in rows} == {2, None}  # the start model: not trained
    scores = [v for r in rows for part in ("clean", "adversarial") for v in r[part].values()]
    assert scores and all(math.isfinite(v) for v in scores)
    located = results["meta"]["models"]
    assert located[name] == str((out / "final").resolve())
    assert located[family] == str(start.resolve())
    tuned, base = load_adapter(out / "final"), load_adapter(start)
    assert tuned.pixel_size == base.pixel_size and tuned.options() == base.options()
    assert getattr(tuned.pipeline, "tiles", None) == getattr(base.pipeline, "tiles", None)
    if family in ANYRES:
        assert tuned.pixel_size == ANYRES_CANVAS
        assert tuned.pipeline.tiles.grid == ANYRES_GRIDS[family]
    asked = {"caption_prompt": tuned.caption_prompt, "vqa_template": tuned.vqa_template}
    prompts = results["meta"]["prompts"]  # as each model was asked: the fine-tuned as its base
    assert prompts[name] == prompts[family] == asked
    if family == "paligemma":
        assert asked == {"caption_prompt": "caption en", "vqa_template": "answer en {question}"}
    assert done.report.exit_code == 0, done.report.output
    assert (done.root / "rep" / "report.html").is_file()
    table = (done.root / "rep" / "report.md").read_text()
    assert f"| {name} ({LOSSES[family]}) |" in table and f"| {family} (pretrained) |" in table


# ------------------------------------------------------------------------------- FARE

SEPARABLE = (
    "llava",
    "paligemma",
    "smolvlm",
    "idefics3",
    "gemma3",
    "mistral3",
    "smolvlm-tiled",
    "internvl",
)


@pytest.mark.parametrize("family", SEPARABLE)
def test_fare_pulls_on_exactly_what_the_projector_reads(saved, family):
    """The features FARE trains are the model's own image features before its projector."""
    adapter = load_adapter(saved[family])
    adapter.model.eval()
    pixels = adapter.prepare_images([vlm_builders.photo(), vlm_builders.photo(seed=2)])
    features = adapter.image_features(pixels)
    assert features.shape[0] == 2  # one row per image: FARE's distance is per image
    projector = adapter.model.get_submodule(f"model.{adapter.pipeline.projector}")
    inputs = adapter._image_inputs(pixels)
    own = adapter.model.get_image_features(**inputs).pooler_output
    own = torch.stack(list(own)) if isinstance(own, list | tuple) else own
    if "image_sizes" in inputs:  # Mistral 3's merger reads the patches of a packed batch
        projected = projector(features.flatten(0, 1), inputs["image_sizes"])
    else:  # a tiling model's features are (B, tiles, T, D): the projector reads them per tile
        projected = projector(features.flatten(0, -3) if features.dim() > 3 else features)
    assert torch.equal(projected.reshape(own.shape), own)


@pytest.mark.parametrize("family", ["llava", "paligemma", "gemma3", "mistral3", "llava_onevision"])
def test_fare_trains_the_vision_tower_alone_and_the_model_evaluates_unchanged(
    saved, tmp_path, family
):
    start = load_file(str(saved[family] / "model.safetensors"))
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"model.name_or_path={saved[family]}",
            "data.options={n: 8, seed: 0}",
            "train.fare={eps: 0.0314, steps: 2}",
            *("train.max_steps=6", "train.batch_size=4", "train.lr=1e-3"),
            f"train.output_dir={tmp_path}",
        ],
    )
    result = finetune(cfg, progress=False)
    after = load_file(str(Path(result.model_dir) / "model.safetensors"))
    assert after.keys() == start.keys()  # no LoRA, no other layout: the model as loaded
    tower = [k for k in after if ".vision_tower." in f".{k}"]
    assert tower and any(not torch.equal(start[k], after[k]) for k in tower)
    assert all(torch.equal(start[k], after[k]) for k in after if k not in tower)
    robust = load_adapter(result.model_dir)
    assert robust.generate(robust.prepare_images([vlm_builders.photo()]), max_new_tokens=3)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"])
def test_fare_on_a_tower_holding_its_projector_is_refused_naming_the_supported(
    saved, tmp_path, family
):
    adapter = load_adapter(saved[family])
    separable = (
        "gemma3, idefics3, internvl, llava, llava_next, llava_onevision, mistral3, paligemma, "
        "smolvlm"
    )
    with pytest.raises(InvalidInput, match=f"inside its vision tower.*{separable}$"):
        adapter.vision_encoder()
    out = tmp_path / "fare"
    cfg = load_config(
        FinetuneConfig,
        None,
        [f"model.name_or_path={saved[family]}", "train.fare={}", f"train.output_dir={out}"],
    )
    with pytest.raises(InvalidInput, match="inside its vision tower"):
        finetune(cfg, progress=False)
    assert not out.exists()  # refused from the config, before loading or writing anything


# ------------------------------------------------------------------------------- anyres tiling

CANVASES = [(61, 97), (97, 61), (40, 100), (64, 64), (128, 128), (30, 200), (200, 30)]
"""Canvas sizes (H, W) of several aspect ratios: between them every family picks several grids,
with and without resizing into them and with padding above / below or left / right."""


@pytest.mark.parametrize("family", ANYRES)
def test_anyres_tiles_are_the_processors_at_every_canvas_size(saved, family):
    grids = set()
    photos = [vlm_builders.photo(97, 61, seed=0), vlm_builders.photo(50, 80, seed=1)]
    for size in CANVASES:
        adapter = ImageTextAdapter.from_pretrained(saved[family], image_size=size)
        prompt = adapter.vqa_prompt("what colour is the circle?")
        reference = processor_inputs(adapter, saved[family], photos, [prompt] * 2)
        mine = adapter.pipeline.model_inputs(adapter.prepare_images(photos))
        assert set(reference) - set(mine) == {"input_ids", "attention_mask"}
        for name, value in mine.items():
            assert value.shape == reference[name].shape, (size, name)
            assert value.dtype == reference[name].dtype, (size, name)
            torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-5)
        assert adapter.prefix_ids(prompt) == reference["input_ids"][0].tolist(), size
        layout = adapter.pipeline.tiles
        assert mine["pixel_values"].shape[1] == len(layout)
        grids.add(layout.grid)
    assert len(grids) >= 3, grids


@pytest.mark.parametrize("family", ANYRES)
def test_generate_on_a_padded_wide_canvas_is_model_generate(saved, family):
    """A grid with padding: the model unpads its features by the canvas size we give."""
    adapter = ImageTextAdapter.from_pretrained(saved[family], image_size=(61, 97))
    assert adapter.pipeline.tiles.views[1].offset != (0, 0)  # black rows above and below
    photos = [vlm_builders.photo(97, 61, seed=6), vlm_builders.photo(40, 90, seed=7)]
    prompts = [adapter.caption_prompt, adapter.vqa_prompt("what shape is red?")]
    inputs = processor_inputs(adapter, saved[family], photos, prompts)
    with torch.no_grad():
        out = adapter.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = adapter._decode(out[:, inputs["input_ids"].shape[1] :])
    pixels = adapter.prepare_images(photos)
    got = adapter.generate(pixels, prompts, max_new_tokens=6)
    agree_where_decisive(got, expected, decisive(adapter, pixels, got, prompts, with_end=False))


@pytest.mark.parametrize("family", ANYRES)
def test_every_anyres_tile_passes_its_gradient_to_the_canvas(saved, family):
    adapter = ImageTextAdapter.from_pretrained(saved[family], image_size=(61, 97))
    pixels = adapter.prepare_images([vlm_builders.photo(seed=5)]).requires_grad_()
    tiles = adapter.pipeline.model_inputs(pixels)["pixel_values"]
    assert tiles.shape[1] > 3  # the global view and a grid of several tiles
    for index in range(tiles.shape[1]):
        (grad,) = torch.autograd.grad(tiles[:, index].sum(), pixels, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, index
    adapter.loss(pixels, ["a red circle"]).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ANYRES)
def test_fare_pulls_on_every_tiles_features_that_the_projector_reads(saved, family):
    """Projected and packed by the model's own code (unpadding, newlines), the features FARE
    trains are the model's image features."""
    adapter = load_adapter(saved[family])
    pixels = adapter.prepare_images([vlm_builders.photo(), vlm_builders.photo(seed=2)])
    inputs = adapter._image_inputs(pixels)
    features = adapter.image_features(pixels)
    model = adapter.model.model
    tiles = len(adapter.pipeline.tiles)
    projected = model.multi_modal_projector(features)
    projected = projected.reshape(2, tiles, -1, projected.shape[-1])  # per image, per tile
    options = (
        {"vision_aspect_ratio": model.config.vision_aspect_ratio}
        if family != "llava_next"
        else {"vision_feature_select_strategy": "default"}
    )
    packed, _ = model.pack_image_features(
        list(projected), inputs["image_sizes"], image_newline=model.image_newline, **options
    )
    own = model.get_image_features(**inputs).pooler_output
    for ours, theirs in zip(packed, own, strict=True):
        assert torch.equal(ours, theirs)


def test_an_anyres_canvas_defaults_to_a_two_by_two_grid_and_is_recorded(saved):
    for family in ANYRES:
        adapter = load_adapter(saved[family])
        assert adapter.pipeline.tiles.grid == (2, 2)
        assert adapter.pixel_size == (64, 64) == tuple(adapter.options()["image_size"])


# ------------------------------------------------------------------------------- bad input


def test_a_dynamically_tiling_model_is_refused_naming_what_is_supported(tmp_path):
    from transformers import MllamaConfig

    MllamaConfig().save_pretrained(tmp_path)
    supported = "llava, llava_next, llava_onevision, mistral3, paligemma"
    with pytest.raises(InvalidInput, match=f"tiles each image into a grid.*{supported}"):
        load_adapter(tmp_path)


@pytest.mark.parametrize("size", [[64], [64, 64, 3], "64x64", [64.5, 64], [True, 64], [0, 64]])
def test_a_malformed_image_size_is_one_line(saved, size):
    with pytest.raises(InvalidInput, match=r"image_size must be \[height, width\], two whole"):
        ImageTextAdapter.from_pretrained(saved["internvl"], image_size=size)


def test_an_unknown_image_text_model_names_the_one_function_to_write(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fuyu"}))
    with pytest.raises(InvalidInput, match="write its model_inputs"):
        load_adapter(tmp_path)


def test_a_prompt_template_without_the_image_is_refused(saved, tmp_path):
    model, processor = vlm_builders.llava()
    processor.chat_template = "{% for m in messages %}{{ m['content'][1]['text'] }}{% endfor %}"
    with pytest.raises(InvalidInput, match="leaves out the image"):
        ImageTextAdapter(model, processor)


@pytest.mark.parametrize(
    ("family", "size", "message"),
    [
        ("qwen2_vl", (50, 84), "multiples of 28"),
        ("qwen2_vl", (280, 280), "height\\*width <="),
        ("llava", (64, 64), "takes 32x32 images"),
        ("llava_next", (0, 64), "two whole numbers >= 1"),
        ("qwen3_vl", (56, 84), "multiples of 32"),
        ("mistral3", (40, 48), "multiples of 16"),
        ("mistral3", (32, 80), "no longer than 64"),
    ],
)
def test_an_image_size_the_processor_cannot_produce_is_refused(saved, family, size, message):
    with pytest.raises(InvalidInput, match=message):
        ImageTextAdapter.from_pretrained(saved[family], image_size=size)


def test_anyres_settings_the_model_would_read_otherwise_are_refused():
    """The processor lays out the tokens, the model the features: they must tile alike."""
    model, processor = vlm_builders.llava_next()
    processor.image_processor.image_grid_pinpoints = [[32, 64], [64, 32]]
    with pytest.raises(InvalidInput, match="image_grid_pinpoints .* differ from the model"):
        ImageTextAdapter(model, processor)
    model, processor = vlm_builders.llava_onevision()
    processor.vision_aspect_ratio = "anyres_max_4"
    with pytest.raises(InvalidInput, match="vision_aspect_ratio 'anyres_max_4' differs"):
        ImageTextAdapter(model, processor)


def test_the_criterion_matches_the_models_own_loss(saved):
    """Labels are aligned with the logits, so prsl's CE is the model's own shifted loss."""
    adapter = load_adapter(saved["llava"])
    pixels = adapter.prepare_images([vlm_builders.photo()])
    logits, labels = adapter.logits_and_labels(pixels, ["a blue square"], None)
    ours = get_loss("ce")(logits, labels)
    prefix = adapter.prefix_ids(adapter.caption_prompt)
    ids = torch.tensor(
        [prefix + adapter._answer_ids(["a blue square"], 1)[0] + [adapter.end_token_id]]
    )
    hf_labels = ids.clone()
    hf_labels[:, : len(prefix)] = -100
    with torch.no_grad():
        theirs = adapter.model(
            input_ids=ids,
            pixel_values=adapter.pipeline.model_inputs(pixels)["pixel_values"],
            labels=hf_labels,
        ).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_smolvlm_processor_loads_without_torchvision(saved, tmp_path):
    """SmolVLMProcessor needs torchvision and num2words; its images are laid out as by
    Idefics3Processor, which prsl builds instead from the same files."""
    folder = copytree(saved["smolvlm"], tmp_path / "smolvlm2")
    settings = json.loads((folder / "processor_config.json").read_text())
    settings["processor_class"] = "SmolVLMProcessor"  # as the hub's SmolVLM2 checkpoints say
    (folder / "processor_config.json").write_text(json.dumps(settings))
    adapter, reference = load_adapter(folder), load_adapter(saved["smolvlm"])
    pixels = reference.prepare_images([vlm_builders.photo()])
    assert adapter.prefix_ids("Describe.") == reference.prefix_ids("Describe.")
    assert adapter.generate(pixels, max_new_tokens=5) == reference.generate(
        pixels, max_new_tokens=5
    )


@pytest.fixture
def torchvision_installed(monkeypatch):
    """transformers' image-processor choice as on a machine with torchvision (>= 0.27, which
    has Lanczos): every torchvision ("fast") class is importable, here a stand-in that is the
    PIL class under the torchvision class's name and backend."""
    from transformers.models.auto import image_processing_auto as auto

    found, made = auto.get_image_processor_class_from_name, {}

    def by_name(name):
        if name.endswith("Pil") or found(name + "Pil") is None:
            return found(name)
        made.setdefault(name, type(name, (found(name + "Pil"),), {"backend": "torchvision"}))
        return made[name]

    monkeypatch.setattr(auto, "is_torchvision_available", lambda: True)
    monkeypatch.setattr(auto, "DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS", [])
    monkeypatch.setattr(auto, "get_image_processor_class_from_name", by_name)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "smolvlm", "mistral3", "internvl"])
def test_the_pil_image_processor_is_loaded_where_transformers_would_pick_torchvisions(
    saved, tmp_path, family, torchvision_installed
):
    """prsl reproduces the PIL-backend processors, so it loads them on every machine; the
    tokenizer is loaded as it always is (``backend`` is not handed to it)."""
    from transformers import AutoImageProcessor

    assert AutoImageProcessor.from_pretrained(saved[family]).backend == "torchvision"
    processor = load_processor(str(saved[family]))
    images = processor.image_processor
    assert type(images).__name__.endswith("Pil") and images.backend == "pil"
    assert processor.tokenizer.backend == "tokenizers"
    processor.save_pretrained(tmp_path)
    assert "pil" not in json.loads((tmp_path / "tokenizer_config.json").read_text()).values()


def test_an_image_processor_with_no_pil_class_is_kept_with_a_warning(
    saved, monkeypatch, caplog, torchvision_installed
):
    """Llama 4's and a few others' only image processor is torchvision's: transformers falls
    back to it, and prsl says what that means."""
    from transformers.models.auto import image_processing_auto as auto

    only_torchvision = {"torchvision": "CLIPImageProcessor"}
    monkeypatch.setattr(auto, "_find_mapping_for_image_processor", lambda name: only_torchvision)
    with caplog.at_level("WARNING", logger="prsl.models.processors"):
        processor = load_processor(str(saved["llava"]))
    assert type(processor.image_processor).__name__ == "CLIPImageProcessor"
    (record,) = [r for r in caplog.records if r.name == "prsl.models.processors"]
    assert "CLIPImageProcessor has no PIL-backend class" in record.getMessage()
    assert "torchvision" in record.getMessage()


def test_a_wrong_pixel_shape_is_the_same_user_error_from_every_adapter():
    """The pixel pipeline of an image-text model and the adapter of a captioner make one check."""
    model, processor = vlm_builders.llava()
    vlm = ImageTextAdapter(model, processor)
    captioner = build_tiny_captioner(["a red circle"], image_size=32, hidden=16, layers=1)
    assert vlm.pixel_size == captioner.pixel_size == (32, 32)
    wrong = torch.rand(2, 3, 16, 16)
    messages = set()
    for call in (
        lambda: vlm.loss(wrong, ["a", "b"]),
        lambda: vlm.pipeline.model_inputs(wrong),
        lambda: captioner.loss(wrong, ["a", "b"]),
        lambda: captioner.normalise(wrong),
    ):
        with pytest.raises(InvalidInput, match=r"\(B, 3, 32, 32\).*got \(2, 3, 16, 16\)") as err:
            call()
        messages.add(str(err.value))
    assert len(messages) == 1


def test_an_image_text_adapter_takes_its_pipelines_geometry_and_its_tokenizers_pad():
    model, processor = vlm_builders.llava()
    vlm = ImageTextAdapter(model, processor, image_size=(32, 32))
    pipeline = vlm.pipeline
    assert vlm.pixel_size == pipeline.size == tuple(pipeline.geometry.size)
    assert vlm.image_mean.tolist() == pipeline.mean.tolist() == pipeline.geometry.mean
    assert vlm.image_std.tolist() == pipeline.std.tolist() == pipeline.geometry.std
    assert vlm.pad_token_id == processor.tokenizer.pad_token_id != vlm.end_token_id


def test_load_adapter_takes_the_options_a_folder_saves(saved):
    """``load_adapter(path, image_size=..., vqa_template=...)`` as the README says: over what the
    folder saved; an option no adapter takes is one line."""
    adapter = load_adapter(saved["llava_next"], image_size=(48, 96), vqa_template="Q: {question}")
    assert adapter.pixel_size == (48, 96) and adapter.vqa_template == "Q: {question}"
    with pytest.raises(InvalidInput, match="takes no option 'image_sise'"):
        load_adapter(saved["llava_next"], image_sise=(48, 96))


def test_a_chat_template_saved_with_the_tokenizer_is_used(saved, tmp_path):
    """A folder whose chat template is in ``tokenizer_config.json`` (as older checkpoints save it)
    renders its prompts as one whose processor carries it."""
    folder = Path(shutil.copytree(saved["internvl"], tmp_path / "internvl"))
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**settings, "chat_template": template})
    )
    moved, kept = load_adapter(folder), load_adapter(saved["internvl"])
    assert moved.render("what is red?") == kept.render("what is red?")
    assert moved.prefix_ids("what is red?") == kept.prefix_ids("what is red?")
