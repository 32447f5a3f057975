"""Readers by name, so configs and the CLI pick a dataset with a string and keyword options."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from prsl.core.errors import InvalidInput
from prsl.data.captions import read_coco, read_flickr, read_imagefolder, read_karpathy
from prsl.data.hf import PRESETS, read_hf
from prsl.data.shapes import make_shapes_captions, make_shapes_vqa
from prsl.data.types import DatasetSplit
from prsl.data.vqa import read_vg, read_vqav2

READERS: dict[str, Callable[..., DatasetSplit]] = {
    "coco": read_coco,
    "karpathy": read_karpathy,
    "flickr": read_flickr,
    "imagefolder": read_imagefolder,
    "vqav2": read_vqav2,
    "vg": read_vg,
    "hf": read_hf,
    "shapes": make_shapes_captions,
    "shapes-vqa": make_shapes_vqa,
}

_MAX_EXAMPLES = "Keep only the first this many items (None: all)."
_IMAGE_DIR = "The folder holding the images."
_SHAPES = {
    "n": "How many images to generate.",
    "seed": "Seed of the scenes (the same seed gives the same images and texts).",
    "image_size": "Image side in pixels.",
}
OPTIONS: Mapping[str, Mapping[str, str]] = {
    "coco": {
        "annotations_file": "The official captions JSON (captions_val2014.json, ...).",
        "image_dir": _IMAGE_DIR,
    },
    "karpathy": {
        "split_file": "Karpathy's dataset_coco.json / dataset_flickr8k.json / "
        "dataset_flickr30k.json.",
        "image_dir": _IMAGE_DIR + " An image is image_dir/filepath/filename (filepath: COCO only).",
        "split": "The split(s) to keep: train, val, test or restval, one name or a list "
        "([train, restval] is the usual training set).",
    },
    "flickr": {
        "captions_file": "Flickr8k's captions.txt (image,caption) or Flickr30k's results.csv "
        "(image_name| comment_number| comment); the header decides which.",
        "image_dir": _IMAGE_DIR,
    },
    "imagefolder": {
        "directory": "A folder of images with a metadata.csv (file_name,text; several rows of "
        "one file, or a references column holding a JSON list, are several references), as "
        "prsl attack writes it.",
    },
    "vqav2": {
        "questions_file": "The questions JSON (v2_OpenEnded_mscoco_val2014_questions.json).",
        "annotations_file": "The annotations JSON with the ten human answers per question.",
        "image_dir": _IMAGE_DIR,
        "image_pattern": "An image's file name, formatted with image_id and subset; COCO 2017 "
        "folders: '{image_id:012d}.jpg'.",
        "subset": "The subset in image_pattern (val2014, ...); None: the questions file's "
        "data_subtype.",
    },
    "vg": {
        "qa_file": "Visual Genome's question_answers.json.",
        "image_dir": "The image folder, or a list of folders (VG_100K and VG_100K_2): the first "
        "holding the file is used.",
        "image_pattern": "An image's file name, formatted with image_id.",
    },
    "hf": {
        "path": "A hub id, a save_to_disk folder, or a local parquet / arrow / json / csv file "
        "or image folder.",
        "name": "The hub config (None: the default one).",
        "split": "The split to read.",
        "columns": "Each role's column: image, caption (captioning) or question and answers "
        "(VQA), optional id and image_id (see the column roles); over the preset's.",
        "preset": f"The columns of a common hub layout: {', '.join(PRESETS)}.",
        "streaming": "Read a hub dataset as it streams instead of downloading it whole.",
        "n": "Keep the first n items (after the shuffle, if any).",
        "shuffle_seed": "Shuffle the rows with this seed before taking n (None: no shuffle).",
        "data_files": "Read only the files of the split matching this glob (data/validation-*), "
        "of a hub repository or a local folder: datasets otherwise downloads every split of a "
        "repository (None: every file of the split).",
    },
    "shapes": {**_SHAPES},
    "shapes-vqa": {
        **_SHAPES,
        "questions_per_image": "Distinct questions per image, balanced over count, colour, "
        "shape and yes/no (None: all, 5 to 9).",
    },
}
"""Every reader's options, described: the one place they are documented (a test checks each
reader's parameters against it). Every reader also takes ``max_examples``."""


def reader_options(name: str) -> list[tuple[str, Any, Any, str]]:
    """``(option, type, default, description)`` for each option of reader ``name``; the default
    is :data:`REQUIRED` for an option without one."""
    if name not in READERS:
        raise InvalidInput(f"unknown dataset {name!r}; valid names: {', '.join(READERS)}")
    hints = typing.get_type_hints(READERS[name])
    described = {**OPTIONS[name], "max_examples": _MAX_EXAMPLES}
    return [
        (
            option,
            hints[option],
            REQUIRED if parameter.default is inspect.Parameter.empty else parameter.default,
            described.get(option, ""),
        )
        for option, parameter in inspect.signature(READERS[name]).parameters.items()
    ]


REQUIRED = inspect.Parameter.empty
"""The default of an option that has none."""


def check_reader_options(name: str, options: dict) -> None:
    """An unknown dataset name or option is an error listing what is accepted (no file opened)."""
    if name not in READERS:
        raise InvalidInput(f"unknown dataset {name!r}; valid names: {', '.join(READERS)}")
    signature = inspect.signature(READERS[name])
    try:
        signature.bind(**options)
    except TypeError as err:
        accepted = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in signature.parameters.values()
        )
        raise InvalidInput(f"dataset {name!r}: {err}; accepted options: {accepted}") from None
    hints = typing.get_type_hints(READERS[name])
    for key, value in options.items():
        try:
            TypeAdapter(hints[key], config=ConfigDict(strict=True)).validate_python(value)
        except ValidationError:
            wanted = getattr(hints[key], "__name__", str(hints[key]))
            wanted = wanted.replace("pathlib.", "").replace("collections.abc.", "")
            raise InvalidInput(
                f"dataset {name!r}: option {key} must be {wanted}; got {value!r}"
            ) from None


def read_dataset(name: str, **options) -> DatasetSplit:
    """Read dataset ``name`` with ``options`` (the reader's keyword arguments).

    Wrong names or options are an ``InvalidInput`` listing what is accepted, raised before any
    file is opened, so a typo in a config fails at once.
    """
    check_reader_options(name, options)
    return READERS[name](**options)
