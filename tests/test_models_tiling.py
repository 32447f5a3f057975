"""Tiling models (SmolVLM / Idefics3 with image splitting, InternVL's dynamic patches) attacked
through their real preprocessing: one canvas, tiled in torch exactly as the processor tiles it.

What a user relies on: at any canvas size and aspect ratio, whichever grid the processor picks
for it, the pipeline gives the processor's tensors and prompt tokens; ``generate`` is
Hugging Face's ``generate`` on the canvas image; a loss's gradient reaches every tile and the
canvas; a perturbation of one part of the canvas reaches exactly the tiles cut from it and the
thumbnail; a canvas the processor cannot produce is refused in one line.
"""

from __future__ import annotations

import json

import pytest
import torch

import vlm_builders
from near_ties import assert_mostly_decisive, decisive
from prsl.core.errors import InvalidInput
from prsl.models import ImageTextAdapter
from prsl.models.tiling import Tile, TileLayout, View, tile_pixels
from test_models_vlm import processor_inputs

CANVASES = {
    # (H, W) -> the grid the tiny processor picks for it (rows, columns)
    "smolvlm-tiled": {
        (64, 64): (2, 2),  # the default: both resizes are identities
        (50, 90): (2, 2),  # resized to 36 x 64, then up to 64 x 64
        (30, 64): (1, 2),
        (97, 21): (2, 1),  # resized to 64 x 14 (made even), then 64 x 32
        (24, 24): (2, 2),  # enlarged to 64 x 64 first
    },
    "idefics3-tiled": {(61, 97): (2, 2), (20, 64): (1, 2)},
    "internvl": {
        (64, 64): (2, 2),  # the default: the resize to the grid is the identity
        (32, 32): (1, 1),  # one tile, no thumbnail
        (32, 96): (1, 3),
        (77, 50): (3, 2),  # resized to 96 x 64
        (40, 100): (1, 3),  # resized to 32 x 96
        (64, 30): (2, 1),
        (160, 50): (3, 1),
    },
}


@pytest.fixture(scope="module")
def built():
    """family -> its tiny model and processor, built once (never saved: adapters of any canvas
    are made from them)."""
    made = {}

    def get(family):
        if family not in made:
            torch.manual_seed(0)
            if family == "internvl":
                made[family] = vlm_builders.internvl()
            else:
                made[family] = vlm_builders.idefics3(family.removesuffix("-tiled"), split=True)
        return made[family]

    return get


def adapter_at(built, family, canvas=None) -> ImageTextAdapter:
    model, processor = built(family)
    return ImageTextAdapter(model, processor, image_size=canvas)


@pytest.mark.parametrize("family", list(CANVASES))
def test_every_canvas_is_tiled_as_the_processor_tiles_it(built, family):
    _, processor = built(family)
    photos = [vlm_builders.photo(97, 61, seed=0), vlm_builders.photo(50, 80, seed=1)]
    for canvas, grid in CANVASES[family].items():
        adapter = adapter_at(built, family, canvas)
        assert adapter.pixel_size == canvas and adapter.pipeline.tiles.grid == grid, canvas
        reference = processor_inputs(adapter, None, photos, [adapter.caption_prompt] * 2, processor)
        mine = adapter.pipeline.model_inputs(adapter.prepare_images(photos))
        assert set(mine) == set(reference) - {"input_ids", "attention_mask"}, canvas
        for name, value in mine.items():
            assert value.shape == reference[name].shape, (canvas, name)
            if value.is_floating_point():
                torch.testing.assert_close(value, reference[name].float(), rtol=0, atol=1e-5)
            else:
                assert torch.equal(value, reference[name]), (canvas, name)
        single = processor_inputs(adapter, None, photos[:1], [adapter.caption_prompt], processor)
        assert adapter.prefix_ids(adapter.caption_prompt) == single["input_ids"][0].tolist()


@pytest.mark.parametrize(
    ("family", "canvas"), [("smolvlm-tiled", (50, 90)), ("internvl", (32, 96))]
)
def test_generate_on_a_canvas_is_model_generate_on_the_canvas_image(built, family, canvas):
    adapter = adapter_at(built, family, canvas)
    _, processor = built(family)
    photo = [vlm_builders.photo(61, 97, seed=5)]
    prompt = adapter.vqa_prompt("how many shapes are there?")
    inputs = processor_inputs(adapter, None, photo, [prompt], processor)
    with torch.no_grad():
        out = adapter.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = adapter._decode(out[:, inputs["input_ids"].shape[1] :])
    pixels = adapter.prepare_images(photo)
    ours = adapter.generate(pixels, [prompt], max_new_tokens=6)
    # no greedy choice on the way is a near tie, so this holds on any CPU (tests/near_ties.py)
    assert_mostly_decisive(decisive(adapter, pixels, ours, [prompt], with_end=False))
    assert ours == expected and ours[0]


@pytest.mark.parametrize("family", list(CANVASES))
def test_the_loss_reaches_every_tile_and_the_canvas(built, family):
    canvas = next(c for c, g in CANVASES[family].items() if g[0] * g[1] > 1 and c[0] != c[1])
    adapter = adapter_at(built, family, canvas)
    pipeline = adapter.pipeline
    kept = {}
    pack = pipeline.pack

    def keep(tiles):
        tiles.retain_grad()
        kept["tiles"] = tiles
        return pack(tiles)

    pipeline.pack = keep
    pixels = adapter.prepare_images([vlm_builders.photo()]).requires_grad_()
    adapter.loss(pixels, ["a red circle"]).sum().backward()
    per_tile = kept["tiles"].grad.abs().flatten(2).sum(-1)[0]
    assert len(per_tile) == len(pipeline.tiles) > 2 and bool((per_tile > 0).all()), per_tile
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_a_perturbation_reaches_the_tiles_cut_from_it_and_the_thumbnail():
    """Default canvas of a 2 x 2 grid: the four tiles are the canvas quadrants as they are, and
    the thumbnail is the whole canvas shrunk; a change to one quadrant moves that tile by
    exactly the change, leaves the three others alone and moves the thumbnail."""
    layout = TileLayout(
        canvas=(8, 8),
        resample=3,
        views=(View(), View(((4, 4),))),
        tiles=(*(Tile(0, (r, c, 4, 4)) for r in (0, 4) for c in (0, 4)), Tile(1, (0, 0, 4, 4))),
        grid=(2, 2),
    )
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, 3, 8, 8), generator=generator).float() / 255
    delta = torch.zeros_like(pixels)
    delta[..., 4:, :4] = 8 / 255  # the bottom-left quadrant: tile 2
    before, after = tile_pixels(pixels, layout), tile_pixels(pixels + delta, layout)
    moved = (after - before).abs().flatten(2).amax(-1)[0]
    assert moved[[0, 1, 3]].max() == 0 and moved[4] > 0
    torch.testing.assert_close(after[0, 2] - before[0, 2], delta[0, :, 4:, :4])


def test_a_layout_refuses_tiles_of_different_sizes_or_outside_their_view():
    with pytest.raises(ValueError, match="share one size"):
        TileLayout((8, 8), 3, (View(),), (Tile(0, (0, 0, 4, 4)), Tile(0, (0, 0, 2, 2))), (1, 2))
    with pytest.raises(ValueError, match="outside its view"):
        TileLayout((8, 8), 3, (View(),), (Tile(0, (6, 0, 4, 4)),), (1, 1))


@pytest.mark.parametrize(
    ("family", "size", "message"),
    [
        ("smolvlm", (64, 64), "without image splitting takes 32x32 images"),
        ("internvl", (0, 64), "two whole numbers >= 1"),
    ],
)
def test_a_canvas_the_processor_cannot_produce_is_refused(built, family, size, message):
    if family == "smolvlm":
        model, processor = vlm_builders.idefics3("smolvlm")
    else:
        model, processor = built(family)
    with pytest.raises(InvalidInput, match=message):
        ImageTextAdapter(model, processor, image_size=size)


def test_an_evaluation_recorded_before_splitting_followed_the_processor_is_refused(tmp_path):
    """Image splitting used to be always off; a SmolVLM folder evaluated then is not resumed
    with tiled inputs: its record lacks the pipeline's revision, which the rerun names."""
    from typer.testing import CliRunner

    from prsl.cli import app
    from prsl.provenance.settings import SETTINGS

    folder = vlm_builders.build("smolvlm-tiled", tmp_path / "smolvlm")
    out = tmp_path / "eval"
    args = [
        *("evaluate", "-m", str(folder), "--set", "data.name=shapes-vqa"),
        *("--set", "data.options={n: 2, seed: 3}", "--set", "n_images=2"),
        *("--set", "attacks=[{name: apgd, eps: [2/255], steps: 1}]"),
        *("--set", "max_new_tokens=2", "--set", f"output_dir={out}"),
    ]
    run = CliRunner()
    assert run.invoke(app, args).exit_code == 0
    record = json.loads((out / SETTINGS).read_text())
    (entry,) = record["settings"]["models"].values()
    assert entry.pop("pixels") == "split; PIL processor"
    (out / SETTINGS).write_text(json.dumps(record))  # as an evaluation before tiling wrote it
    again = run.invoke(app, args)
    assert again.exit_code == 2
    assert 'pixels: (not set) -> "split; PIL processor")' in again.output
