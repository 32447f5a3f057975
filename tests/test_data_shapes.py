"""The synthetic shapes data: deterministic, and every caption and answer true of the pixels.

Truth is checked against a scene re-derived from the image alone (saturated blobs, their hue,
bounding box and fill ratio), not against the generator's own description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prsl.data import read_dataset
from prsl.data.captions import read_imagefolder
from prsl.data.shapes import (
    make_shapes_captions,
    make_shapes_vqa,
    save_shapes_imagefolder,
    shapes_scenes,
)
from prsl.data.shapes_scene import COLORS, relation, render_scene, shape_mask
from prsl.data.vqa import ANSWER_COPIES

# --- an independent reading of the pixels --------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    color: str
    kind: str
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left + 1


def hue_name(r: int, g: int, b: int) -> str:
    if r > 150 and g > 150 and b < 100:
        return "yellow"
    if r > 150 and g < 100 and b < 100:
        return "red"
    if g > r and g > b:
        return "green"
    if b > r and b > g:
        return "blue"
    raise AssertionError(f"saturated pixel of no known colour: {(r, g, b)}")


def connected(mask: np.ndarray) -> bool:
    start = tuple(np.argwhere(mask)[0])
    seen, todo = {start}, [start]
    while todo:
        y, x = todo.pop()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
            if inside and mask[ny, nx] and (ny, nx) not in seen:
                seen.add((ny, nx))
                todo.append((ny, nx))
    return len(seen) == int(mask.sum())


def read_blobs(image) -> list[Blob]:
    """Shapes as seen in the pixels: one connected saturated blob per colour."""
    pixels = np.asarray(image).astype(int)
    saturated = pixels.max(axis=2) - pixels.min(axis=2) > 80
    names = np.full(saturated.shape, "", dtype=object)
    for y, x in np.argwhere(saturated):
        names[y, x] = hue_name(*pixels[y, x])
    blobs = []
    for color in sorted(set(names[saturated])):
        mask = names == color
        assert connected(mask), f"{color} pixels form more than one blob"
        rows, cols = np.nonzero(mask)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        assert bottom - top == right - left, "every shape has a square bounding box"
        fill = mask.sum() / ((bottom - top + 1) * (right - left + 1))
        kind = "square" if fill > 0.95 else "circle" if 0.7 < fill < 0.9 else "triangle"
        if kind == "triangle":
            assert 0.45 < fill < 0.62, fill
            assert mask[top].sum() == 1, "a triangle has one apex pixel on top"
        blobs.append(Blob(color, kind, int(left), int(top), int(right), int(bottom)))
    return blobs


def seen_relation(a: Blob, b: Blob) -> set[str]:
    """Every relation that holds for all pixels of the two blobs."""
    holds = set()
    if a.right < b.left:
        holds.add("left of")
    if a.left > b.right:
        holds.add("right of")
    if a.bottom < b.top:
        holds.add("above")
    if a.top > b.bottom:
        holds.add("below")
    return holds


PHRASE = r"a (small|large) (red|green|blue|yellow) (circle|square|triangle)"
SHORT = r"a (red|green|blue|yellow) (circle|square|triangle)"
COUNTS = {"there is one shape": 1, "there are two shapes": 2, "there are three shapes": 3}


def check_caption(caption: str, blobs: list[Blob], sizes: dict[str, str]) -> None:
    """Assert ``caption`` is true of ``blobs``; ``sizes`` maps each blob width to a size word."""
    by_shape = {(b.color, b.kind): b for b in blobs}

    def blob_for(size, color, kind) -> Blob:
        blob = by_shape[(color, kind)]
        assert sizes.setdefault(blob.width, size) == size, f"{size} {color} {kind}: width"
        return blob

    if caption in COUNTS:
        assert COUNTS[caption] == len(blobs)
        return
    if match := re.fullmatch(f"{PHRASE} (left of|right of|above|below) {PHRASE}", caption):
        size_a, color_a, kind_a, rel, size_b, color_b, kind_b = match.groups()
        a, b = blob_for(size_a, color_a, kind_a), blob_for(size_b, color_b, kind_b)
        assert rel in seen_relation(a, b), caption
        return
    listed = caption.split(" and ")
    assert len(listed) == len(blobs), caption
    named = []
    for part in listed:
        if match := re.fullmatch(PHRASE, part):
            named.append(blob_for(*match.groups()))
        else:
            match = re.fullmatch(SHORT, part)
            assert match, f"caption outside the templates: {caption!r}"
            named.append(by_shape[match.groups()])
    centres = [b.left + b.right for b in named]  # twice the centre column
    assert centres == sorted(centres), f"not listed left to right: {caption!r}"


def true_answer(question: str, blobs: list[Blob]) -> str:
    if question == "how many shapes are there?":
        return str(len(blobs))
    if match := re.fullmatch(r"what color is the (circle|square|triangle)\?", question):
        return next(b.color for b in blobs if b.kind == match.group(1))
    if match := re.fullmatch(r"what shape is the (red|green|blue|yellow) one\?", question):
        return next(b.kind for b in blobs if b.color == match.group(1))
    match = re.fullmatch(r"is there a (red|green|blue|yellow) (circle|square|triangle)\?", question)
    assert match, f"question outside the templates: {question!r}"
    return "yes" if (match.group(1), match.group(2)) in {(b.color, b.kind) for b in blobs} else "no"


# --- truthfulness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size, n", [(32, 150), (24, 40), (64, 20)])
def test_every_caption_is_true_of_the_pixels(image_size, n):
    split = make_shapes_captions(n, seed=3, image_size=image_size)
    sizes: dict[int, str] = {}  # one width per size word, across the whole dataset
    for example in split.examples:
        assert example.image.size == (image_size, image_size)
        blobs = read_blobs(example.image)
        assert 1 <= len(blobs) <= 3
        assert len(example.references) >= 3
        for caption in example.references:
            check_caption(caption, blobs, sizes)
    assert set(sizes.values()) == {"small", "large"}
    assert min(w for w, s in sizes.items() if s == "large") > max(
        w for w, s in sizes.items() if s == "small"
    )


def test_every_vqa_answer_is_true_of_the_pixels():
    split = make_shapes_vqa(60, seed=4, questions_per_image=None)
    blobs_of = {}
    for example in split.examples:
        if example.image_id not in blobs_of:
            blobs_of[example.image_id] = read_blobs(example.image)
        assert example.answers == (true_answer(example.question, blobs_of[example.image_id]),) * 10
    assert ANSWER_COPIES == 10


def test_drawn_pixels_have_their_shapes_colour_and_nothing_else_does():
    for scene in shapes_scenes(40, seed=5):
        pixels = np.asarray(render_scene(scene))
        for shape in scene.shapes:
            mask = shape_mask(shape, scene.image_size)
            exact = (pixels == COLORS[shape.color]).all(axis=2)
            assert exact[mask].all()
            assert np.array_equal(exact, mask)
            left, top, right, bottom = shape.box
            rows, cols = np.nonzero(mask)
            assert (cols.min(), rows.min(), cols.max(), rows.max()) == (left, top, right, bottom)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(24, 72))
def test_scene_invariants(seed, image_size):
    (scene,) = shapes_scenes(1, seed, image_size)
    shapes = scene.shapes
    assert 1 <= len(shapes) <= 3
    assert len({s.kind for s in shapes}) == len({s.color for s in shapes}) == len(shapes)
    for shape in shapes:
        left, top, right, bottom = shape.box
        assert left >= 0 and top >= 0 and right < image_size and bottom < image_size
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for a, b in combinations(shapes, 2):
        assert relation(b, a) == opposite[relation(a, b)]
        gap_x = max(b.box[0] - a.box[2], a.box[0] - b.box[2]) - 1
        gap_y = max(b.box[1] - a.box[3], a.box[1] - b.box[3]) - 1
        assert max(gap_x, gap_y) >= 2, "boxes keep two empty pixels between them"


# --- determinism ---------------------------------------------------------------------------------


def fingerprint(split):
    return [(e.image.tobytes(), e.references, e.image_id) for e in split.examples]


def test_same_seed_gives_byte_identical_data():
    assert fingerprint(make_shapes_captions(30, seed=7)) == fingerprint(
        make_shapes_captions(30, seed=7)
    )
    first, second = make_shapes_vqa(30, seed=7), make_shapes_vqa(30, seed=7)
    assert [(e.image.tobytes(), e.question, e.answers, e.question_id) for e in first.examples] == [
        (e.image.tobytes(), e.question, e.answers, e.question_id) for e in second.examples
    ]


def test_seeds_differ_and_prefixes_agree():
    assert fingerprint(make_shapes_captions(10, seed=1)) != fingerprint(
        make_shapes_captions(10, seed=2)
    )
    assert fingerprint(make_shapes_captions(25, seed=1))[:10] == fingerprint(
        make_shapes_captions(10, seed=1)
    )


def test_caption_and_vqa_data_show_the_same_images():
    captions = make_shapes_captions(8, seed=9)
    vqa = make_shapes_vqa(8, seed=9)
    assert [e.image.tobytes() for e in captions.examples] == [
        e.image.tobytes() for e in vqa.examples
    ]
    assert [e.image_id for e in vqa.examples] == [f"shapes-9-{i}" for i in range(8)]


def test_images_are_textured_not_flat():
    for example in make_shapes_captions(10, seed=0).examples:
        pixels = np.asarray(example.image).astype(int)
        background = pixels.max(axis=2) - pixels.min(axis=2) <= 80
        assert len(np.unique(pixels[background][:, 0])) > 10


# --- vocabulary and question sampling ------------------------------------------------------------


def test_vocabulary_is_small():
    split = make_shapes_captions(300, seed=0)
    words = {w for e in split.examples for r in e.references for w in r.split()}
    assert len(words) <= 30
    vqa = make_shapes_vqa(300, seed=0, questions_per_image=None)
    words = {w for e in vqa.examples for w in e.question.split() + [e.answers[0]]}
    assert len(words) <= 30


def test_questions_per_image():
    one = make_shapes_vqa(200, seed=2)
    assert len(one.examples) == 200
    first_words = {e.question.split()[0] + " " + e.question.split()[1] for e in one.examples}
    assert first_words == {"how many", "what color", "what shape", "is there"}
    assert {e.answers[0] for e in one.examples if e.question.startswith("is there")} == {
        "yes",
        "no",
    }
    every = make_shapes_vqa(20, seed=2, questions_per_image=None)
    scenes = shapes_scenes(20, seed=2)
    assert len(every.examples) == sum(2 * len(s.shapes) + 3 for s in scenes)
    assert len({e.question_id for e in every.examples}) == len(every.examples)
    two = make_shapes_vqa(20, seed=2, questions_per_image=2)
    assert len(two.examples) == 40
    ids_every = {e.question_id: e.question for e in every.examples}
    assert all(ids_every[e.question_id] == e.question for e in two.examples)


def test_max_examples_caps_both_datasets():
    assert len(make_shapes_captions(10, seed=0, max_examples=4).examples) == 4
    assert len(make_shapes_vqa(10, seed=0, questions_per_image=None, max_examples=7).examples) == 7


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_shapes_captions(0, seed=0), "n \\(number of images\\) must be a positive"),
        (lambda: make_shapes_captions(3, seed=-1), "seed must be a non-negative int"),
        (lambda: make_shapes_captions(3, seed=0, image_size=16), "image_size must be >= 24"),
        (lambda: make_shapes_vqa(3, seed=0, questions_per_image=0), "questions_per_image must"),
    ],
)
def test_bad_arguments_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- image folder export -------------------------------------------------------------------------


def test_imagefolder_round_trip(tmp_path):
    split = make_shapes_captions(6, seed=11)
    folder = save_shapes_imagefolder(split, tmp_path / "shapes")
    assert (folder / "metadata.csv").read_text().splitlines()[0] == "file_name,text"
    for back in (read_imagefolder(folder), read_dataset("imagefolder", directory=folder)):
        assert back.skipped == []
        assert [e.image_id for e in back.examples] == [f"{e.image_id}.png" for e in split.examples]
        for original, loaded in zip(split.examples, back.examples, strict=True):
            assert loaded.references == original.references
            assert np.array_equal(np.asarray(original.image), np.asarray(read_png(loaded.image)))


def read_png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_imagefolder_export_refuses_vqa(tmp_path):
    with pytest.raises(ValueError, match="writes captioning data; got a split with task 'vqa'"):
        save_shapes_imagefolder(make_shapes_vqa(2, seed=0), tmp_path)
