"""The RobustVLM presets (``configs/eval_robustvlm_*.yaml``): each loads as an evaluation config,
and its ``hf`` reader options name a real hub dataset's split, files and columns.

The hub is not reachable here, so each dataset's schema is written down below from its dataset
card (the ``dataset_info`` of its README on huggingface.co, and its file listing), and every
preset is read on a tiny offline copy laid out the same way: the same column names and types,
the same file names under ``data/``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from prsl.config import DataConfig, load_config
from prsl.data import read_dataset
from prsl.data.hf import resolve_columns
from prsl.data.vqa import ANSWER_COPIES
from prsl.evaluate.config import EvalConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(CONFIGS.glob("eval_robustvlm*.yaml"))

# The fields other branches add to the evaluation schema (per-item worst case, references and
# targets per attack, the fp32 refinement started from the worst case).

# From each dataset card: its splits with the files of each (the card's `configs` globs, or its
# file listing), and its columns with a value of each column's type (a list for a sequence).
HUB = {
    "lmms-lab/COCO-Caption2017": {
        "splits": {"val": "data/val-*", "test": "data/test-*"},
        "columns": {
            "question_id": "000000179765.jpg",
            "image": "image",
            "question": "Please carefully observe the image and come up with a caption.",
            "answer": ["A black Honda motorcycle.", "A motorcycle parked."],
            "id": 38,
            "license": 3,
            "file_name": "000000179765.jpg",
            "coco_url": "http://images.cocodataset.org/val2017/000000179765.jpg",
            "height": 480,
            "width": 640,
            "date_captured": "2013-11-15 14:02:51",
        },
    },
    "lmms-lab/flickr30k": {
        "splits": {"test": "data/test-*"},
        "columns": {
            "image": "image",
            "caption": ["Two young guys with shaggy hair.", "Two friends enjoy time outside."],
            "sentids": ["0", "1"],
            "img_id": "0",
            "filename": "1000092795.jpg",
        },
    },
    "lmms-lab/VQAv2": {
        "splits": {"validation": "data/validation-*", "testdev": "data/testdev-*"},
        "columns": {
            "question_type": "what color",
            "multiple_choice_answer": "red",
            "answers": [
                {"answer": "red", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)
            ],
            "image_id": 42,
            "answer_type": "other",
            "question_id": 42000,
            "question": "What color is the bus?",
            "image": "image",
        },
    },
    "lmms-lab/textvqa": {
        "splits": {"validation": "data/validation-*", "train": "data/train-*"},
        "columns": {
            "image_id": "003a8ae2ef43b901",
            "question_id": 34602,
            "question": "what is the brand of this camera?",
            "question_tokens": ["what", "is", "the", "brand"],
            "image": "image",
            "image_width": 1024,
            "image_height": 664,
            "flickr_original_url": "https://farm2.staticflickr.com/x.jpg",
            "flickr_300k_url": "https://c5.staticflickr.com/x.jpg",
            "answers": ["nous les gosses", "dakota"] + ["dakota digital"] * 8,
            "image_classes": ["Cassette deck"],
            "set_name": "val",
            "ocr_tokens": ["MIX", "dakota"],
        },
    },
    "lmms-lab/VizWiz-VQA": {
        "splits": {"val": "data/val-*", "test": "data/test-*"},
        "columns": {
            "question_id": "VizWiz_val_00000000.jpg",
            "image": "image",
            "question": "Ok. There is another picture I hope it is a better one.",
            "answers": ["unanswerable"] * 9 + ["no"],
            "category": "unanswerable",
        },
    },
    "lmms-lab/OK-VQA": {
        "splits": {"val2014": "data/val2014-*"},
        "columns": {
            "question_id": "2971475",
            "image": "image",
            "question": "What sport can you use this for?",
            "answers": ["race"] * 4 + ["motocross"] * 6,
            "question_type": "other",
            "answer_type": "other",
        },
    },
}


def preset_options(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["data"]["options"]


def test_the_presets_are_shipped():
    assert {p.name for p in PRESETS} == {
        f"eval_robustvlm_{name}.yaml"
        for name in ("coco", "flickr30k", "vqav2", "textvqa", "vizwiz", "okvqa", "targeted")
    }


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_as_an_evaluation_config(path):
    """The whole protocol validates: data, worst case and cascade, every attack's parameters,
    its references, targets, start and dtype."""
    cfg = load_config(EvalConfig, path)
    assert cfg.data.name == "hf" and cfg.n_images == cfg.data.options["n"]
    assert all(spec.name == "apgd" and 2 / 255 in spec.eps for spec in cfg.attacks)
    if path.name != "eval_robustvlm_targeted.yaml":
        assert cfg.worst_case is not None and cfg.worst_case.stop_below is not None
        assert cfg.attacks[-1].start == "worst_case" or any(s.targets for s in cfg.attacks)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_the_reader_options_name_a_real_split_files_and_columns(path):
    options = preset_options(path)
    DataConfig(name="hf", options=options)  # the reader takes every option, each of its type
    hub = HUB[options["path"]]
    assert options["split"] in hub["splits"]
    files = hub["splits"][options["split"]]
    assert options["data_files"] == files  # the split's files and no other split's
    others = [glob for split, glob in hub["splits"].items() if split != options["split"]]
    assert not any(fnmatch.fnmatch(glob.replace("*", "-0.parquet"), files) for glob in others)
    mapping = resolve_columns(options.get("columns"), options.get("preset"))
    missing = set(mapping.values()) - set(hub["columns"])
    assert not missing, f"{path.name} names columns {options['path']} does not have: {missing}"


def tiny_copy(folder: Path, dataset: str, split: str, rows: int = 3) -> None:
    """A parquet file with the dataset's columns, under a name its split's files have on the
    hub (``data/val-*``: ``data/val-00000-of-00001.parquet``)."""
    rng = np.random.default_rng(0)
    columns = {
        name: [
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
            if value == "image"
            else value
            for _ in range(rows)
        ]
        for name, value in HUB[dataset]["columns"].items()
    }
    ids = [key for key in ("question_id", "img_id") if key in columns]
    for key in ids:  # distinct ids, of the card's type
        kind = type(columns[key][0])
        columns[key] = [kind(f"{i}{columns[key][0]}") for i in range(rows)]
    table = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    target = folder / HUB[dataset]["splits"][split].replace("*", "00000-of-00001.parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(target))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_each_preset_reads_an_offline_copy_of_its_dataset(tmp_path, path):
    options = preset_options(path)
    tiny_copy(tmp_path, options["path"], options["split"])
    split = read_dataset("hf", **{**options, "path": str(tmp_path)})
    assert len(split.examples) == 3 and split.skipped == []
    columns = HUB[options["path"]]["columns"]
    if split.task == "caption":
        texts = columns.get("answer", columns.get("caption"))
        assert all(example.references == tuple(texts) for example in split.examples)
    else:
        answers = [a["answer"] if isinstance(a, dict) else a for a in columns["answers"]]
        assert len(answers) == ANSWER_COPIES
        assert all(example.answers == tuple(answers) for example in split.examples)
        assert split.examples[0].question == columns["question"]
    keys = {getattr(example, "question_id", example.image_id) for example in split.examples}
    assert len(keys) == 3  # each item keyed by its own row's id
