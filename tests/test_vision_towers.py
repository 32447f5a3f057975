"""A separately saved vision tower swapped into a VLM (``vision_tower``): RobustVLM's setting,
LLaVA with a FARE / TeCoA CLIP encoder in place of its own.

What a user relies on: the swapped model's tower computes what the saved tower computes on its
own (a Hugging Face folder, or an open_clip state dict converted on load); a tower of another
resolution gets its position embeddings resized as transformers' ``interpolate_pos_encoding``
resizes them; a tower that cannot fit (another width or patch size, a Qwen-VL model whose tower
holds its projector, a Mistral 3 or InternVL model whose tower is no CLIP / SigLIP) is refused
in one line before the model is loaded; evaluate names the tower in its results and refuses a
rerun with the tower rewritten; a fine-tuned model holds the tower and its record says where it
came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel
from typer.testing import CliRunner

import vlm_builders
from prsl.cli import app
from prsl.config import load_config
from prsl.core.errors import InvalidInput, RunConflict
from prsl.models import check_vision_tower, load_adapter
from prsl.provenance import read_training_record
from prsl.train import FinetuneConfig, finetune

SIGLIP_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
)


def standalone_tower(vlm_dir: Path, seed: int = 7, **changes):
    """A randomly initialised tower of the VLM's own kind (CLIP for LLaVA, SigLIP otherwise),
    built from its vision config with ``changes``: what a robust encoder saved apart looks like."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(vlm_dir).vision_config
    torch.manual_seed(seed)
    if config.model_type == "clip_vision_model":
        return CLIPVisionModel(CLIPVisionConfig(**{**config.to_dict(), **changes})).eval()
    fields = {name: getattr(config, name) for name in SIGLIP_FIELDS}
    return SiglipVisionModel(SiglipVisionConfig(**{**fields, **changes})).eval()


class Saved(dict):
    """Family (or a variant) -> its tiny saved model, built the first time a test asks."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        folder = self.root / name
        if name == "llava48":  # a 6x6 patch grid, where the towers below have 4x4
            torch.manual_seed(0)
            model, processor = vlm_builders.llava(side=48)
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
        elif name == "paligemma48":
            torch.manual_seed(0)
            model, processor = vlm_builders.paligemma(side=48)
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
        else:
            vlm_builders.build(name, folder)
        self[name] = folder
        return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Saved:
    return Saved(tmp_path_factory.mktemp("vlms"))


@pytest.fixture(scope="module")
def clip_tower(saved, tmp_path_factory) -> tuple[CLIPVisionModel, Path]:
    """A CLIP tower of the tiny LLaVA's architecture, saved with ``save_pretrained``."""
    tower = standalone_tower(saved["llava"])
    folder = tmp_path_factory.mktemp("towers") / "clip"
    tower.save_pretrained(folder)
    return tower, folder


def tower_inputs(adapter) -> torch.Tensor:
    """Two photos as the VLM's tower takes them (normalised, at its input size)."""
    pixels = adapter.prepare_images([vlm_builders.photo(), vlm_builders.photo(seed=3)])
    values = adapter._image_inputs(pixels)["pixel_values"]
    return values[:, 0] if values.dim() == 5 else values  # SmolVLM: one image per sample


# ------------------------------------------------------------------------------- the swap


SWAPPABLE = (
    "llava",
    "paligemma",
    "smolvlm",
    "idefics3",
    "gemma3",
    "llava_next",
    "llava_onevision",
    "smolvlm-tiled",
)
"""Every family whose vision tower is a CLIP / SigLIP ViT that ends where its projector starts."""


@pytest.mark.parametrize("family", SWAPPABLE)
def test_the_swapped_tower_computes_what_the_saved_tower_computes(saved, tmp_path, family):
    tower = standalone_tower(saved[family])
    tower.save_pretrained(tmp_path / "tower")  # SigLIP's saved pooling head is left out
    own = load_adapter(saved[family])
    swapped = load_adapter(saved[family], vision_tower=tmp_path / "tower")
    values = tower_inputs(swapped)
    with torch.no_grad():
        got = swapped.vision_encoder()(pixel_values=values).last_hidden_state
        want = tower(pixel_values=values).last_hidden_state
        before = own.vision_encoder()(pixel_values=values).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - before).abs().max() > 0.1  # the tower was replaced, not kept
    name = swapped.pipeline.vision_tower
    rest = {k: v for k, v in swapped.model.state_dict().items() if f".{name}." not in f".{k}"}
    theirs = own.model.state_dict()
    assert rest and all(torch.equal(v, theirs[k]) for k, v in rest.items())


@pytest.mark.parametrize("family", ["llava48", "paligemma48"])
def test_a_lower_resolution_tower_gets_its_positions_resized_as_transformers_does(
    saved, tmp_path, family
):
    """A 4x4-patch tower (32 px) into a 6x6-patch model (48 px), as a 224 tower into a 336
    LLaVA: the same features as transformers' own ``interpolate_pos_encoding`` at 48 px."""
    tower = standalone_tower(saved[family], image_size=32)
    tower.save_pretrained(tmp_path / "tower")
    swapped = load_adapter(saved[family], vision_tower=tmp_path / "tower")
    values = tower_inputs(swapped)
    assert values.shape[-1] == 48
    with torch.no_grad():
        got = swapped.vision_encoder()(pixel_values=values).last_hidden_state
        want = tower(pixel_values=values, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    positions = swapped.vision_encoder().embeddings.position_embedding.weight
    original = tower.embeddings.position_embedding.weight
    assert positions.shape[0] == original.shape[0] + (36 - 16)
    if family == "llava48":  # the class token's position is kept as it was
        assert torch.equal(positions[0], original[0])


def open_clip_state(tower: CLIPVisionModel) -> dict[str, torch.Tensor]:
    """The tower as open_clip's ``model.visual.state_dict()`` holds it, written from
    open_clip's layout (packed attention projection: query, key, value rows)."""
    hf = tower.state_dict()
    state = {
        "conv1.weight": hf["embeddings.patch_embedding.weight"],
        "class_embedding": hf["embeddings.class_embedding"],
        "positional_embedding": hf["embeddings.position_embedding.weight"],
        "ln_pre.weight": hf["pre_layrnorm.weight"],
        "ln_pre.bias": hf["pre_layrnorm.bias"],
        "ln_post.weight": hf["post_layernorm.weight"],
        "ln_post.bias": hf["post_layernorm.bias"],
        "proj": torch.randn(tower.config.hidden_size, 16),  # CLIP's image-text projection
    }
    for i in range(tower.config.num_hidden_layers):
        layer, block = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            packed = [hf[f"{layer}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            state[f"{block}attn.in_proj_{kind}"] = torch.cat(packed)
            state[f"{block}attn.out_proj.{kind}"] = hf[f"{layer}self_attn.out_proj.{kind}"]
            state[f"{block}ln_1.{kind}"] = hf[f"{layer}layer_norm1.{kind}"]
            state[f"{block}ln_2.{kind}"] = hf[f"{layer}layer_norm2.{kind}"]
            state[f"{block}mlp.c_fc.{kind}"] = hf[f"{layer}mlp.fc1.{kind}"]
            state[f"{block}mlp.c_proj.{kind}"] = hf[f"{layer}mlp.fc2.{kind}"]
    return {key: value.clone().contiguous() for key, value in state.items()}


@pytest.mark.parametrize("form", ["visual.safetensors", "visual.pt", "whole_clip.bin"])
def test_an_open_clip_state_dict_converts_to_the_same_tower(saved, clip_tower, tmp_path, form):
    """RobustVLM's checkpoints are open_clip's ``model.visual`` state dict (``.pt``); a whole
    open_clip model keeps it under ``visual.`` beside its text tower."""
    tower, _ = clip_tower
    state = open_clip_state(tower)
    path = tmp_path / form
    if form.startswith("whole"):
        state = {f"visual.{k}": v for k, v in state.items()}
        state |= {"token_embedding.weight": torch.randn(8, 4), "logit_scale": torch.ones(())}
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    swapped = load_adapter(saved["llava"], vision_tower=path)
    values = tower_inputs(swapped)
    converted = swapped.vision_encoder().state_dict()
    assert all(torch.equal(converted[k], v) for k, v in tower.state_dict().items())
    with torch.no_grad():
        got = swapped.vision_encoder()(pixel_values=values).last_hidden_state
        want = tower(pixel_values=values).last_hidden_state
    assert torch.equal(got, want)


def test_an_open_clip_key_clip_has_no_place_for_is_refused_naming_it(saved, clip_tower, tmp_path):
    state = open_clip_state(clip_tower[0]) | {"transformer.resblocks.0.ls_1.gamma": torch.ones(32)}
    save_file(state, tmp_path / "scaled.safetensors")
    with pytest.raises(InvalidInput, match=r"open_clip state dict with keys .*ls_1\.gamma"):
        load_adapter(saved["llava"], vision_tower=tmp_path / "scaled.safetensors")


# ------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_size": 48}, "has width 48 but this llava model's vision tower has width 32"),
        ({"patch_size": 4, "image_size": 16}, "has patch size 4 but .* has 8"),
        ({"num_hidden_layers": 3}, "has 3 layers but .* has 2"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' but .* 'quick_gelu'"),
    ],
)
def test_a_tower_of_another_architecture_is_refused_naming_both(saved, tmp_path, changes, message):
    standalone_tower(saved["llava"], **changes).save_pretrained(tmp_path / "tower")
    with pytest.raises(InvalidInput, match=message):
        load_adapter(saved["llava"], vision_tower=tmp_path / "tower")


def test_a_misfit_is_refused_from_the_configs_before_any_model_is_loaded(saved, tmp_path):
    wide = standalone_tower(saved["llava"], hidden_size=48)
    wide.save_pretrained(tmp_path / "folder")
    save_file(open_clip_state(wide), tmp_path / "wide.safetensors")
    for tower in (tmp_path / "folder", tmp_path / "wide.safetensors"):
        with pytest.raises(InvalidInput, match="has width 48 but .* has width 32"):
            check_vision_tower(saved["llava"], tower)
    with pytest.raises(InvalidInput, match="projector sits inside its tower.*llava"):
        check_vision_tower(saved["qwen2_vl"], tmp_path / "folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_vision_tower(saved["llava"], tmp_path / "nowhere.pt")
    with pytest.raises(InvalidInput, match="holds a 'llava' model, not a vision tower"):
        check_vision_tower(saved["llava"], saved["paligemma"].parent / "llava")
    with pytest.raises(InvalidInput, match="tiny captioner has none"):
        load_config(FinetuneConfig, None, [f"model.vision_tower={tmp_path / 'folder'}"])


@pytest.mark.parametrize(
    ("family", "tower"),
    [("mistral3", "Pixtral's ViT"), ("internvl", "InternViT")],
)
def test_a_tower_that_is_no_clip_or_siglip_is_refused_naming_it_and_the_families_that_take_one(
    saved, clip_tower, family, tower
):
    """From the config, before the model is loaded, and again if the model is loaded anyway."""
    takes = "gemma3, idefics3, llava, llava_next, llava_onevision, paligemma, smolvlm"
    message = f"{family}'s vision tower is {tower} .*; towers swap into: {takes}$"
    with pytest.raises(InvalidInput, match=message) as refused:
        check_vision_tower(saved[family], clip_tower[1])
    assert "\n" not in str(refused.value)
    with pytest.raises(InvalidInput, match=message):
        load_adapter(saved[family], vision_tower=clip_tower[1])


def test_a_qwen_tower_swap_is_refused_from_the_command_line_in_one_line(saved, clip_tower):
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            *("--set", f"model.name_or_path={saved['qwen2_vl']}"),
            *("--set", f"model.vision_tower={clip_tower[1]}"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "projector sits inside its tower" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- evaluate, finetune


def evaluate_args(models: str, out: Path) -> list[str]:
    return [
        "evaluate",
        *("--set", f"models={models}"),
        *("--set", "data.name=shapes-vqa", "--set", "data.options={n: 2, seed: 3}"),
        *("--set", "n_images=2", "--set", "max_new_tokens=3", "--set", "bootstrap.resamples=100"),
        *("--set", "attacks=[{name: pgd, eps: [2/255], steps: 2}]"),
        *("--set", "baseline=llava", "--set", f"output_dir={out}"),
    ]


def test_evaluate_swaps_the_tower_in_names_it_and_refuses_it_rewritten(saved, tmp_path):
    tower = standalone_tower(saved["llava"])
    tower.save_pretrained(tmp_path / "fare")
    llava = saved["llava"]
    models = f"[{llava}, {{path: {llava}, vision_tower: {tmp_path / 'fare'}}}]"
    run = CliRunner()
    first = run.invoke(app, evaluate_args(models, tmp_path / "eval"))
    assert first.exit_code == 0, first.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    by_model = {r["model"]: r for r in results["runs"]}
    assert set(by_model) == {"llava", "llava+fare"}
    assert by_model["llava+fare"]["vision_tower"] == str((tmp_path / "fare").resolve())
    assert by_model["llava+fare"]["vision_tower_fingerprint"]
    assert "vision_tower" not in by_model["llava"]
    compared = {(c["model"], c["baseline"]) for c in results["comparisons"]}
    assert compared == {("llava+fare", "llava")}  # the model with its own tower is the baseline

    tower.save_pretrained(tmp_path / "fare")  # the tower rewritten in place: another model
    again = run.invoke(app, evaluate_args(models, tmp_path / "eval"))
    assert again.exit_code == 2, again.output
    assert "vision_tower_fingerprint" in again.output


def test_a_fine_tuned_model_holds_the_tower_and_says_where_it_came_from(
    saved, clip_tower, tmp_path
):
    tower, folder = clip_tower
    settings = [
        f"model.name_or_path={saved['llava']}",
        f"model.vision_tower={folder}",
        "data.name=shapes-vqa",
        "data.options={n: 4, seed: 0}",
        *("train.max_steps=1", "train.batch_size=2", f"train.output_dir={tmp_path / 'run'}"),
    ]
    result = finetune(load_config(FinetuneConfig, None, settings), progress=False)
    record = read_training_record(result.model_dir)
    assert record.vision_tower == str(folder.resolve()) and record.vision_tower_fingerprint
    tuned = load_adapter(result.model_dir)  # as saved: no tower named any more
    held = tuned.vision_encoder().state_dict()
    assert all(torch.equal(held[k], v) for k, v in tower.state_dict().items())

    other = tmp_path / "other"
    standalone_tower(saved["llava"], seed=9).save_pretrained(other)
    changed = [
        s if not s.startswith("model.vision_tower") else f"model.vision_tower={other}"
        for s in settings
    ]
    with pytest.raises(RunConflict, match="model.vision_tower"):
        finetune(load_config(FinetuneConfig, None, changed), resume=True, progress=False)
