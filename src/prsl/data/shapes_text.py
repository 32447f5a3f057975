"""Captions and VQA questions for a shapes ``Scene``, true by construction.

Every sentence is built from the scene (never sampled independently of it), from a vocabulary
of a few dozen lowercase words, so that a tiny captioner can learn it in a few hundred CPU steps
and every reference can be checked against the pixels.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from prsl.data.shapes_scene import COLORS, KINDS, Scene, Shape, relation

COUNT_WORDS = ("one", "two", "three")
QUESTION_TYPES = ("count", "color", "shape", "yes/no")


def phrase(shape: Shape) -> str:
    """ "a large red circle" """
    return f"a {shape.size} {shape.color} {shape.kind}"


def scene_captions(scene: Scene) -> tuple[str, ...]:
    """At least three references: pairwise relations, the shapes left to right, the count.

    Relations come first (in the scene's random shape order, so "left of" and "right of",
    "above" and "below" all occur); the listings name shapes left to right.
    """
    shapes = scene.shapes
    relations = [f"{phrase(a)} {relation(a, b)} {phrase(b)}" for a, b in combinations(shapes, 2)]
    left_to_right = sorted(shapes, key=lambda s: (s.x, s.y))
    count = len(shapes)
    count_sentence = (
        "there is one shape" if count == 1 else f"there are {COUNT_WORDS[count - 1]} shapes"
    )
    return (
        *relations,
        " and ".join(phrase(s) for s in left_to_right),
        " and ".join(f"a {s.color} {s.kind}" for s in left_to_right),
        count_sentence,
    )


def scene_questions(scene: Scene, rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    """Every (question, answer) about ``scene``, grouped by type (see ``QUESTION_TYPES``).

    Counts are answered with digits, as in VQAv2. The yes/no type holds one "yes" question
    about a present shape and one "no" question about a colour-kind pair absent from the scene
    (chosen with ``rng``), so "yes" and "no" are equally frequent.
    """
    present = {(s.color, s.kind) for s in scene.shapes}
    absent = [(c, k) for c in COLORS for k in KINDS if (c, k) not in present]
    shown = scene.shapes[int(rng.integers(len(scene.shapes)))]
    missing_color, missing_kind = absent[int(rng.integers(len(absent)))]
    return {
        "count": [("how many shapes are there?", str(len(scene.shapes)))],
        "color": [(f"what color is the {s.kind}?", s.color) for s in scene.shapes],
        "shape": [(f"what shape is the {s.color} one?", s.kind) for s in scene.shapes],
        "yes/no": [
            (f"is there a {shown.color} {shown.kind}?", "yes"),
            (f"is there a {missing_color} {missing_kind}?", "no"),
        ],
    }


def pick_questions(
    groups: dict[str, list[tuple[str, str]]], k: int | None, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """``k`` distinct questions (all when ``k`` is None or larger), balanced over types.

    Types are visited in a random order, one random question from each per round, so with
    ``k = 1`` every type is equally likely whatever the number of shapes.
    """
    remaining = {name: list(items) for name, items in groups.items()}
    picked: list[tuple[str, str]] = []
    while remaining and (k is None or len(picked) < k):
        for name in [str(t) for t in rng.permutation(list(remaining))]:
            if k is not None and len(picked) >= k:
                break
            items = remaining[name]
            picked.append(items.pop(int(rng.integers(len(items)))))
            if not items:
                del remaining[name]
    return picked
