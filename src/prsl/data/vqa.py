"""VQA readers: VQAv2 (questions + annotations JSON) and Visual Genome question answers.

Each returns a ``DatasetSplit`` of ``VQAExample`` (one per question, in file order). The VQA
soft accuracy counts how many of the ten human answers match (min(matches / 3, 1)), so a
dataset with a single answer per question (Visual Genome) repeats it ``ANSWER_COPIES`` times:
a correct prediction then scores 1, not 1/3.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from pathlib import Path

from prsl.core.errors import InvalidInput
from prsl.data._parsing import (
    Question,
    check_image_dir,
    check_max_examples,
    clean_text,
    format_error,
    read_json,
    require,
    require_list,
    vqa_split,
)
from prsl.data.types import DatasetSplit

ANSWER_COPIES = 10
VQAV2_QUESTIONS_FORMAT = (
    'VQAv2 questions JSON: {"questions": [{"image_id", "question", "question_id"}], '
    'optional "data_subtype"}'
)
VQAV2_ANNOTATIONS_FORMAT = (
    'VQAv2 annotations JSON: {"annotations": [{"question_id", "answers": [{"answer"}]}]}'
)
VG_FORMAT = (
    'Visual Genome question_answers.json: [{"id" or "image_id", '
    '"qas": [{"qa_id", "question", "answer"}]}]'
)
VQAV2_DEFAULT_PATTERN = "COCO_{subset}_{image_id:012d}.jpg"
"""COCO 2014 naming: ``COCO_val2014_000000000042.jpg`` for image 42 of subset ``val2014``."""
VG_DEFAULT_PATTERN = "{image_id}.jpg"


def read_vqav2(
    questions_file: str | Path,
    annotations_file: str | Path,
    image_dir: str | Path,
    image_pattern: str = VQAV2_DEFAULT_PATTERN,
    subset: str | None = None,
    max_examples: int | None = None,
) -> DatasetSplit:
    """VQAv2 questions with their ten human answers; images found by ``image_pattern``.

    The image file is ``image_dir / image_pattern.format(image_id=..., subset=...)``. The
    default is COCO 2014 naming, with ``subset`` (``"val2014"``) taken from the questions
    file's ``data_subtype`` unless given; COCO 2017 folders use ``"{image_id:012d}.jpg"``.
    """
    check_max_examples(max_examples)
    check_image_dir(image_dir)
    qpath, apath = Path(questions_file), Path(annotations_file)
    qdata = read_json(qpath, VQAV2_QUESTIONS_FORMAT)
    questions = require_list(qdata, "questions", qpath, VQAV2_QUESTIONS_FORMAT)
    if "subset" in _pattern_fields(image_pattern, {"image_id", "subset"}) and subset is None:
        subset = qdata.get("data_subtype")
        if not isinstance(subset, str):
            raise InvalidInput(
                f"image_pattern {image_pattern!r} needs a subset, but {qpath} has no "
                "'data_subtype': pass subset='val2014' (or the like) or another image_pattern"
            )
    annotations = require_list(
        read_json(apath, VQAV2_ANNOTATIONS_FORMAT), "annotations", apath, VQAV2_ANNOTATIONS_FORMAT
    )
    answers_by_question = {}
    for annotation in annotations:
        question_id = require(annotation, "question_id", apath, VQAV2_ANNOTATIONS_FORMAT)
        answers_by_question[question_id] = _vqav2_answers(annotation, apath)
    parsed = _vqav2_questions(
        questions, qpath, answers_by_question, apath, Path(image_dir), image_pattern, subset
    )
    return vqa_split(parsed, max_examples)


def _vqav2_answers(annotation: dict, path: Path) -> tuple[str, ...]:
    answers = []
    for answer in require_list(annotation, "answers", path, VQAV2_ANNOTATIONS_FORMAT):
        text = require(answer, "answer", path, VQAV2_ANNOTATIONS_FORMAT)
        answers.append(clean_text(text, path, VQAV2_ANNOTATIONS_FORMAT, annotation))
    return tuple(a for a in answers if a)


def _vqav2_questions(
    questions: list,
    qpath: Path,
    answers_by_question: dict,
    apath: Path,
    image_dir: Path,
    pattern: str,
    subset: str | None,
) -> Iterator[Question]:
    for entry in questions:
        question_id = require(entry, "question_id", qpath, VQAV2_QUESTIONS_FORMAT)
        image_id = require(entry, "image_id", qpath, VQAV2_QUESTIONS_FORMAT)
        text = require(entry, "question", qpath, VQAV2_QUESTIONS_FORMAT)
        if question_id not in answers_by_question:
            raise format_error(
                apath,
                VQAV2_ANNOTATIONS_FORMAT,
                f"no annotation for question_id {question_id!r} of {qpath.name} "
                "(are both files from the same split?)",
                entry,
            )
        yield Question(
            question_id=str(question_id),
            image_id=str(image_id),
            path=image_dir / _image_name(pattern, image_id, subset, qpath, entry),
            question=clean_text(text, qpath, VQAV2_QUESTIONS_FORMAT, entry),
            answers=answers_by_question[question_id],
            where=f"question {question_id} in {qpath.name}",
        )


def read_vg(
    qa_file: str | Path,
    image_dir: str | Path | Sequence[str | Path],
    image_pattern: str = VG_DEFAULT_PATTERN,
    max_examples: int | None = None,
) -> DatasetSplit:
    """Visual Genome ``question_answers.json``; each single answer repeated ``ANSWER_COPIES``×.

    ``image_dir`` may list several folders (Visual Genome ships ``VG_100K`` and
    ``VG_100K_2``); the first that holds ``image_pattern.format(image_id=...)`` is used.
    """
    check_max_examples(max_examples)
    dirs = [Path(image_dir)] if isinstance(image_dir, str | Path) else [Path(d) for d in image_dir]
    if not dirs:
        raise InvalidInput("image_dir must name at least one folder")
    for folder in dirs:
        check_image_dir(folder)
    _pattern_fields(image_pattern, {"image_id"})
    path = Path(qa_file)
    data = read_json(path, VG_FORMAT)
    if not isinstance(data, list):
        raise format_error(path, VG_FORMAT, f"top level must be a list, got {type(data).__name__}")
    return vqa_split(_vg_questions(data, path, dirs, image_pattern), max_examples)


def _vg_questions(data: list, path: Path, dirs: list[Path], pattern: str) -> Iterator[Question]:
    for image in data:
        if not isinstance(image, dict) or ("id" not in image and "image_id" not in image):
            raise format_error(path, VG_FORMAT, "an image entry has no 'id' or 'image_id'", image)
        parent_id = image.get("id", image.get("image_id"))
        for qa in require_list(image, "qas", path, VG_FORMAT):
            qa_id = require(qa, "qa_id", path, VG_FORMAT)
            image_id = qa.get("image_id", parent_id)
            name = _image_name(pattern, image_id, None, path, qa)
            candidates = [d / name for d in dirs]
            answer = clean_text(require(qa, "answer", path, VG_FORMAT), path, VG_FORMAT, qa)
            yield Question(
                question_id=str(qa_id),
                image_id=str(image_id),
                path=next((c for c in candidates if c.is_file()), candidates[0]),
                question=clean_text(require(qa, "question", path, VG_FORMAT), path, VG_FORMAT, qa),
                answers=(answer,) * ANSWER_COPIES if answer else (),
                where=f"qa {qa_id} in {path.name}",
            )


def _pattern_fields(pattern: str, allowed: set[str]) -> set[str]:
    """The fields ``pattern`` uses; it must use ``image_id`` and nothing outside ``allowed``."""
    fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    if "image_id" not in fields or not fields <= allowed:
        raise InvalidInput(
            f"image_pattern {pattern!r} must contain {{image_id}} and may only use the "
            f"fields {sorted(allowed)}"
        )
    return fields


def _image_name(pattern: str, image_id, subset: str | None, path: Path, entry: dict) -> str:
    try:
        return pattern.format(image_id=image_id, subset=subset)
    except (ValueError, TypeError) as err:  # e.g. {image_id:012d} with a non-integer id
        raise format_error(
            path, f"image ids usable in image_pattern {pattern!r}", str(err), entry
        ) from err
