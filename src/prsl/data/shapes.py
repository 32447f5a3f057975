"""The embedded default dataset: synthetic shapes, generated from a seed, no download.

Image ``i`` of seed ``s`` comes from its own generator ``numpy.random.default_rng([s, i])``,
so it is byte-identical across runs and machines, independent of ``n`` (the first 10 images
of ``n=10`` and ``n=1000`` are the same), and the caption and VQA datasets of one seed show the
same images. Questions are drawn from a separate stream ``default_rng([s, i, 1])``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from prsl.core.errors import InvalidInput
from prsl.data._parsing import check_max_examples
from prsl.data.images import load_rgb
from prsl.data.shapes_scene import Scene, check_image_size, generate_scene, render_scene
from prsl.data.shapes_text import QUESTION_TYPES, pick_questions, scene_captions, scene_questions
from prsl.data.types import CaptionExample, DatasetSplit, VQAExample
from prsl.data.vqa import ANSWER_COPIES

_QUESTION_STREAM = 1


def shapes_scenes(n: int, seed: int, image_size: int = 32) -> list[Scene]:
    """The ``n`` scenes behind ``make_shapes_captions(n, seed)`` / ``make_shapes_vqa``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"n (number of images) must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative int, got {seed!r}")
    check_image_size(image_size)
    return [generate_scene(np.random.default_rng([seed, i]), image_size) for i in range(n)]


def make_shapes_captions(
    n: int = 512, seed: int = 0, image_size: int = 32, max_examples: int | None = None
) -> DatasetSplit:
    """``n`` captioned shapes images (in memory), ids ``shapes-{seed}-{i}``; task "caption"."""
    check_max_examples(max_examples)
    count = n if max_examples is None else min(n, max_examples)
    examples = [
        CaptionExample(render_scene(scene), scene_captions(scene), f"shapes-{seed}-{i}")
        for i, scene in enumerate(shapes_scenes(count, seed, image_size))
    ]
    return DatasetSplit(examples, task="caption")


def make_shapes_vqa(
    n: int = 512,
    seed: int = 0,
    image_size: int = 32,
    questions_per_image: int | None = 1,
    max_examples: int | None = None,
) -> DatasetSplit:
    """Questions about ``n`` shapes images; task "vqa".

    Each image gets ``questions_per_image`` distinct questions balanced over count / colour /
    shape / yes-no (None: all of them, 5 to 9 per image). Answers are repeated
    ``ANSWER_COPIES`` times so the VQA soft accuracy of a correct answer is 1. Question ids
    are ``shapes-{seed}-{i}-q{j}`` with ``j`` the question's index among all of its image's.
    """
    check_max_examples(max_examples)
    if questions_per_image is not None and (
        isinstance(questions_per_image, bool)
        or not isinstance(questions_per_image, int)
        or questions_per_image < 1
    ):
        raise InvalidInput(
            f"questions_per_image must be a positive int or None, got {questions_per_image!r}"
        )
    examples: list[VQAExample] = []
    for i, scene in enumerate(shapes_scenes(n, seed, image_size)):
        rng = np.random.default_rng([seed, i, _QUESTION_STREAM])
        groups = scene_questions(scene, rng)
        every = [item for kind in QUESTION_TYPES for item in groups[kind]]
        image, image_id = render_scene(scene), f"shapes-{seed}-{i}"
        for question, answer in pick_questions(groups, questions_per_image, rng):
            question_id = f"{image_id}-q{every.index((question, answer))}"
            examples.append(
                VQAExample(image, question, (answer,) * ANSWER_COPIES, image_id, question_id)
            )
        if max_examples is not None and len(examples) >= max_examples:
            del examples[max_examples:]
            break
    return DatasetSplit(examples, task="vqa")


def save_shapes_imagefolder(split: DatasetSplit, directory: str | Path) -> Path:
    """Write a caption split as ``{image_id}.png`` files plus ``metadata.csv`` (file_name,text).

    This is the image-folder format ``read_imagefolder`` and ``datasets`` read, so users can
    look at the synthetic data and swap in their own. PNG is lossless: reading the folder back
    gives the same pixels. Returns the directory.
    """
    if split.task != "caption":
        raise InvalidInput(
            f"save_shapes_imagefolder writes captioning data; got a split with task {split.task!r}"
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for example in split.examples:
        name = f"{example.image_id}.png"
        if Path(name).name != name or name.startswith("."):
            raise InvalidInput(f"image_id {example.image_id!r} is not usable as a file name")
        load_rgb(example.image).save(folder / name)
        rows.extend((name, reference) for reference in example.references)
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows(rows)
    return folder
