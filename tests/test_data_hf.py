"""The ``hf`` reader on local ``datasets`` the test writes: parquet, ``save_to_disk``, an image
folder; every preset on a small copy with its hub dataset's schema; image columns of each kind;
streaming; subsetting; broken images and missing columns. Then ``evaluate`` and ``finetune``
on it, and ``prsl attack``'s output read back as a dataset."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prsl.cli import app
from prsl.core.errors import InvalidInput
from prsl.data import read_dataset
from prsl.data.images import ImageLoadError, load_rgb
from prsl.data.types import LazyImage
from prsl.data.vqa import ANSWER_COPIES
from prsl.models import build_tiny_captioner


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (12 + i, 20, 3), dtype=np.uint8)) for i in range(n)
    ]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def flickr30k(n: int = 4) -> datasets.Dataset:
    """nlphuji/flickr30k's schema: image, caption (5 strings), img_id, filename, split."""
    return datasets.Dataset.from_dict(
        {
            "image": pictures(n),
            "caption": [[f"caption {i} a", f"caption {i} b"] for i in range(n)],
            "img_id": [str(100 + i) for i in range(n)],
            "filename": [f"{i}.jpg" for i in range(n)],
            "split": ["test"] * n,
        }
    ).cast_column("image", datasets.Image())


@pytest.mark.parametrize("form", ["parquet", "save_to_disk"])
def test_a_local_copy_reads_as_captions_with_lazy_images(tmp_path, form):
    table = flickr30k()
    if form == "parquet":
        path = tmp_path / "flickr.parquet"
        table.to_parquet(str(path))
    else:
        path = tmp_path / "flickr"
        datasets.DatasetDict({"test": table}).save_to_disk(str(path))
    split = read_dataset("hf", path=str(path), preset="flickr30k", split="test")
    assert split.task == "caption" and split.skipped == []
    assert [e.image_id for e in split.examples] == ["100", "101", "102", "103"]
    assert split.examples[1].references == ("caption 1 a", "caption 1 b")
    image = split.examples[2].image
    assert isinstance(image, LazyImage)  # nothing decoded while reading
    assert load_rgb(image).size == (20, 14)
    assert np.array_equal(np.asarray(load_rgb(image)), np.asarray(pictures(4)[2]))


def test_presets_follow_their_hub_schemas(tmp_path):
    images = pictures(3)
    layouts = {
        # lmms-lab/COCO-Caption2017: image, answer (captions), question_id
        "coco-caption": {
            "image": images,
            "answer": [["a"], ["b", "c"], ["d"]],
            "question_id": [7, 8, 9],
        },
        # HuggingFaceM4/VQAv2: answers as a list of dicts
        "vqav2": {
            "image": images,
            "question": ["what?", "where?", "who?"],
            "answers": [[{"answer": "red", "answer_confidence": "yes", "answer_id": 1}]] * 3,
            "question_id": [1, 2, 3],
            "image_id": [10, 10, 11],
        },
        # lmms-lab/textvqa: answers as a list of strings
        "textvqa": {
            "image": images,
            "question": ["q1", "q2", "q3"],
            "answers": [["x"] * 10, ["y"] * 10, ["z"] * 10],
            "question_id": ["a", "b", "c"],
            "image_id": ["i", "j", "k"],
        },
    }
    for preset, columns in layouts.items():
        path = tmp_path / f"{preset}.parquet"
        datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image()).to_parquet(
            str(path)
        )
        split = read_dataset("hf", path=str(path), preset=preset)
        assert len(split.examples) == 3, preset
        if preset == "coco-caption":
            assert split.examples[1].references == ("b", "c")
        else:
            assert split.task == "vqa" and split.examples[0].question in ("what?", "q1")
            assert len(split.examples[0].answers) == ANSWER_COPIES  # one VQAv2 answer counts 10x


def test_an_image_folder_preset_reads_what_datasets_reads(tmp_path):
    for i, image in enumerate(pictures(2)):
        image.save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.csv").write_text("file_name,text\n0.png,a first\n1.png,a second\n")
    split = read_dataset("hf", path=str(tmp_path), preset="imagefolder", split="train")
    assert [e.references for e in split.examples] == [("a first",), ("a second",)]


def test_image_columns_of_every_kind_and_broken_ones(tmp_path):
    images = pictures(4)
    (tmp_path / "img").mkdir()
    images[2].save(tmp_path / "img" / "2.png")
    table = datasets.Dataset.from_dict(
        {
            "bytes": [png(images[0]), b"not an image", png(images[2]), png(images[3])],
            "path": ["img/2.png", "img/2.png", "img/2.png", "img/missing.png"],
            "text": ["a", "b", "c", "d"],
        }
    )
    path = tmp_path / "mixed.parquet"
    table.to_parquet(str(path))
    as_bytes = read_dataset("hf", path=str(path), columns={"image": "bytes", "caption": "text"})
    assert np.array_equal(np.asarray(load_rgb(as_bytes.examples[0].image)), np.asarray(images[0]))
    with pytest.raises(ImageLoadError):  # skipped (once, with its reason) when a batch loads it
        load_rgb(as_bytes.examples[1].image)
    as_paths = read_dataset("hf", path=str(path), columns={"image": "path", "caption": "text"})
    assert load_rgb(as_paths.examples[0].image).size == (20, 14)  # relative to the data's folder
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb(as_paths.examples[3].image)


def test_streaming_subsetting_and_skips(tmp_path):
    table = flickr30k(6)
    rows = table.to_dict()
    rows["caption"][1] = ["", " "]
    path = tmp_path / "f.parquet"
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(path))
    streamed = read_dataset("hf", path=str(path), preset="flickr30k", streaming=True, n=4)
    assert [e.image_id for e in streamed.examples] == ["100", "102", "103"]
    assert [s.reason for s in streamed.skipped] == ["no non-empty caption (row 1)"]
    originals = pictures(6)  # kept on disk as they streamed past, read back exactly
    for example in streamed.examples:
        original = originals[int(example.image_id) - 100]
        assert np.array_equal(np.asarray(load_rgb(example.image)), np.asarray(original))
    shuffled = read_dataset("hf", path=str(path), preset="flickr30k", n=3, shuffle_seed=1)
    again = read_dataset("hf", path=str(path), preset="flickr30k", n=3, shuffle_seed=1)
    assert [e.image_id for e in shuffled.examples] == [e.image_id for e in again.examples]
    limited = read_dataset("hf", path=str(path), preset="flickr30k", max_examples=2)
    assert len(limited.examples) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"columns": {"image": "img", "caption": "caption"}},
            "has no column image: 'img'; its columns: image, caption",
        ),
        ({"columns": {"image": "image"}}, "a caption column .* or both question and answers"),
        ({"columns": {"picture": "image", "caption": "caption"}}, "unknown role"),
        ({"preset": "laion"}, "unknown preset 'laion'"),
        ({"preset": "flickr30k", "split": "validation"}, "no split 'validation'; its splits: test"),
    ],
)
def test_bad_columns_and_names_are_one_clear_error(tmp_path, options, message):
    path = tmp_path / "flickr"
    datasets.DatasetDict({"test": flickr30k()}).save_to_disk(str(path))
    with pytest.raises(InvalidInput, match=message):
        read_dataset("hf", path=str(path), **{"split": "test", **options})


@pytest.fixture
def local_flickr(tmp_path):
    """A shapes-captioned local Flickr30k-style copy, readable by a tiny shapes captioner."""
    shapes = read_dataset("shapes", n=12, seed=3).examples
    table = datasets.Dataset.from_dict(
        {
            "image": [ex.image for ex in shapes],
            "caption": [list(ex.references) for ex in shapes],
            "img_id": [ex.image_id for ex in shapes],
        }
    ).cast_column("image", datasets.Image())
    path = tmp_path / "flickr.parquet"
    table.to_parquet(str(path))
    texts = [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]
    model = tmp_path / "tiny"
    build_tiny_captioner(texts, hidden=16, layers=1, seed=1).save(model)
    return path, model


def test_evaluate_finetune_and_attack_take_it(tmp_path, local_flickr):
    path, model = local_flickr
    data = ["data.name=hf", f"data.options={{path: '{path}', preset: flickr30k}}"]
    sets = lambda *items: [arg for item in items for arg in ("--set", item)]  # noqa: E731
    runner = CliRunner()
    tuned = runner.invoke(
        app,
        [
            "finetune",
            *sets(*data, "model.tiny={hidden: 16, layers: 1, heads: 2}", "loss={name: ce}"),
            *sets("train.max_steps=2", "train.batch_size=4", f"train.output_dir={tmp_path / 'ft'}"),
        ],
    )
    assert tuned.exit_code == 0, tuned.output
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            *("-m", str(model)),
            *sets(*data, "n_images=6", "max_new_tokens=4", "metrics=[BLEU-1]"),
            *sets("attacks=[{name: fgsm}]", f"output_dir={tmp_path / 'ev'}"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    runs = json.loads((tmp_path / "ev" / "results.json").read_text())["runs"]
    assert {r["n_images"] for r in runs} == {6}

    out = tmp_path / "adv"
    attacked = runner.invoke(
        app,
        [
            "attack",
            "-m",
            str(model),
            "--out",
            str(out),
            *sets(*data, "n_images=5", "max_new_tokens=4"),
        ],
    )
    assert attacked.exit_code == 0, attacked.output
    exported = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert len(exported) == 5 and {"image", "text", "references", "clean", "adversarial"} <= set(
        exported.column_names
    )
    assert json.loads(exported[0]["references"])[0] == exported[0]["text"]
    assert json.loads(exported[0]["attack_params"])["quantize"] == "uint8"
    # ... and prsl reads it back, with every reference, to score another model on it
    back = read_dataset("imagefolder", directory=str(out))
    original = {
        ex.image_id: ex for ex in read_dataset("hf", path=str(path), preset="flickr30k").examples
    }
    for example in back.examples:
        key = example.image_id.removesuffix(".png")
        assert example.references == original[key].references


def test_a_rewritten_table_is_not_reused_and_the_same_one_resumes(tmp_path, local_flickr):
    path, model = local_flickr
    args = [
        "evaluate",
        *("-m", str(model)),
        *("--set", "data.name=hf"),
        *("--set", f"data.options={{path: '{path}', preset: flickr30k}}"),
        *("--set", "n_images=4", "--set", "max_new_tokens=3", "--set", "metrics=[BLEU-1]"),
        *("--set", "attacks=[{name: fgsm}]", "--set", f"output_dir={tmp_path / 'ev'}"),
    ]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)  # same table: nothing to redo, nothing refused
    assert again.exit_code == 0, again.output
    table = datasets.load_dataset("parquet", data_files=str(path), split="train")
    flipped = table.map(lambda row: {"image": row["image"].transpose(Image.Transpose.ROTATE_90)})
    flipped.cast_column("image", datasets.Image()).to_parquet(str(path))  # same ids, new pictures
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "items[" in refused.output, refused.output


@pytest.mark.parametrize("form", ["save_to_disk", "dict", "parquet"])
def test_an_empty_table_is_one_line_naming_it(tmp_path, form):
    empty = flickr30k(0)
    path = tmp_path / ("flickr.parquet" if form == "parquet" else "flickr")
    if form == "parquet":
        empty.to_parquet(str(path))
    elif form == "dict":
        datasets.DatasetDict({"test": empty}).save_to_disk(str(path))
    else:
        empty.save_to_disk(str(path))
    model = tmp_path / "tiny"
    build_tiny_captioner(["a red circle"], hidden=16, layers=1, seed=1).save(model)
    data = f"data.options={{path: '{path}', preset: flickr30k}}"
    result = CliRunner().invoke(
        app, ["evaluate", "-m", str(model), "--set", "data.name=hf", "--set", data]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output  # (datasets' own progress bars aside)
    where = " in split 'test'" if form == "dict" else ""
    assert f"dataset '{path}' has 0 rows{where}" in " ".join(result.output.split())


def test_data_files_reads_only_the_split_it_names(tmp_path):
    """A hub-style folder whose other split cannot be read: without data_files datasets builds
    every split (a hub repository is downloaded whole), with it only the named files."""
    (tmp_path / "data").mkdir()
    flickr30k(3).to_parquet(str(tmp_path / "data" / "val-00000-of-00001.parquet"))
    (tmp_path / "data" / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    split = read_dataset(
        "hf", path=str(tmp_path), split="val", data_files="data/val-*", preset="flickr30k"
    )
    assert [e.image_id for e in split.examples] == ["100", "101", "102"]
    with pytest.raises(Exception):  # noqa: B017 (whatever datasets raises on the broken split)
        read_dataset("hf", path=str(tmp_path), split="val", preset="flickr30k")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": flickr30k(2)}).save_to_disk(str(saved))
    with pytest.raises(InvalidInput, match="save_to_disk folder: leave data_files out"):
        read_dataset("hf", path=str(saved), data_files="data/*", preset="flickr30k")


def test_vizwiz_and_ok_vqa_presets_keep_unanswerable_and_the_question_id(tmp_path):
    """lmms-lab/VizWiz-VQA and lmms-lab/OK-VQA: ten answer strings, a string question_id, no
    image id (the item's id stands for it)."""
    answers = ["unanswerable"] * 6 + ["blue", "blue", "navy", "unanswerable"]
    for preset, extra in (("vizwiz", "category"), ("ok-vqa", "question_type")):
        path = tmp_path / f"{preset}.parquet"
        datasets.Dataset.from_dict(
            {
                "question_id": ["VizWiz_val_00000001.jpg", "q2"],
                "image": pictures(2),
                "question": ["What colour is this?", "Which?"],
                "answers": [answers, ["a"] * 10],
                extra: ["other", "other"],
            }
        ).cast_column("image", datasets.Image()).to_parquet(str(path))
        split = read_dataset("hf", path=str(path), preset=preset)
        first = split.examples[0]
        assert split.task == "vqa" and first.answers == tuple(answers)
        assert first.image_id == first.question_id == "VizWiz_val_00000001.jpg"
