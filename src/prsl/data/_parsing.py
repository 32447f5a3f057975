"""Shared checks for the file readers: strict about file formats, lenient about single entries.

A file in the wrong format (not JSON, a missing key, wrong columns) is a mistake the user must
fix before any work starts, so it is an ``InvalidInput`` naming the file, the expected format and
the first offending entry. A missing image or an empty caption is a fact of real datasets, so
it is skipped and recorded (path and reason) for the run's log, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prsl.core.errors import InvalidInput, MissingInput
from prsl.data.types import CaptionExample, DatasetSplit, Skipped, VQAExample

_ENTRY_PREVIEW = 200


def check_max_examples(max_examples: int | None) -> None:
    """Reject a limit that would silently give an empty or unlimited dataset."""
    if max_examples is None:
        return
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise InvalidInput(f"max_examples must be a positive int or None, got {max_examples!r}")


def format_error(path: Path, expected: str, problem: str, entry: Any = None) -> InvalidInput:
    """The error for a file in the wrong format, quoting (a prefix of) the offending entry."""
    message = f"{path} is not in the expected format ({expected}): {problem}"
    if entry is not None:
        preview = json.dumps(entry, default=str)
        if len(preview) > _ENTRY_PREVIEW:
            preview = preview[:_ENTRY_PREVIEW] + "..."
        message += f"; first offending entry: {preview}"
    return InvalidInput(message)


def check_image_dir(image_dir: str | Path) -> Path:
    """The folder the images are read from must exist: otherwise every image would be skipped."""
    folder = Path(image_dir)
    if not folder.exists():
        raise MissingInput(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise InvalidInput(f"image folder {folder} is a file, not a folder")
    return folder


def read_json(path: str | Path, expected: str) -> Any:
    """Parse a JSON annotation file; a missing file or invalid JSON names the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"annotation file not found: {path} (expected {expected})")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise format_error(path, expected, f"not valid JSON ({err})") from err


def require(entry: Any, key: str, path: Path, expected: str) -> Any:
    """``entry[key]``, or a format error quoting ``entry`` when it is absent."""
    if not isinstance(entry, dict):
        raise format_error(path, expected, "an entry is not a JSON object", entry)
    if key not in entry:
        raise format_error(path, expected, f"missing key {key!r}", entry)
    return entry[key]


def require_list(container: Any, key: str, path: Path, expected: str) -> list:
    """``container[key]`` checked to be a JSON list."""
    value = require(container, key, path, expected)
    if not isinstance(value, list):
        raise format_error(path, expected, f"{key!r} must be a list, got {type(value).__name__}")
    return value


def clean_text(value: Any, path: Path, expected: str, entry: Any) -> str:
    """Whitespace-normalised text; '' for null or blank, a format error for a non-string."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise format_error(path, expected, f"text must be a string, got {value!r}", entry)
    return " ".join(value.split())


@dataclass
class ImageCaptions:
    """The captions found for one image, each with where it came from (for skip reasons)."""

    image_id: str
    path: Path
    captions: list[tuple[str, str]]  # (cleaned caption, "annotation 17" / "line 4" ...)


def caption_split(images: Iterable[ImageCaptions], max_examples: int | None) -> DatasetSplit:
    """Captioning examples in input order, skipping missing files and captionless images.

    Each image left out is one entry of ``skipped``; an empty caption of an image that is kept
    (it has other captions) is one entry of ``dropped``.
    """
    examples: list[CaptionExample] = []
    skipped: list[Skipped] = []
    dropped: list[Skipped] = []
    for item in images:
        if max_examples is not None and len(examples) >= max_examples:
            break
        path = str(item.path)
        if not item.path.is_file():
            skipped.append(Skipped(path, "image file not found", item.image_id))
            continue
        references = [caption for caption, _ in item.captions if caption]
        empty = [where for caption, where in item.captions if not caption]
        if not references:
            where = "; ".join(empty) or "no caption given"
            skipped.append(Skipped(path, f"no non-empty caption ({where})", item.image_id))
            continue
        dropped += [Skipped(path, f"empty caption ({where})", item.image_id) for where in empty]
        examples.append(CaptionExample(path, tuple(references), item.image_id))
    return DatasetSplit(examples, skipped, task="caption", dropped=dropped)


@dataclass
class Question:
    """One parsed question with its answers, before the image file is checked."""

    question_id: str
    image_id: str
    path: Path | None  # None: no candidate file exists
    question: str
    answers: tuple[str, ...]
    where: str


def vqa_split(questions: Iterable[Question], max_examples: int | None) -> DatasetSplit:
    """VQA examples in input order, skipping missing images, empty questions and no answers."""
    examples: list[VQAExample] = []
    skipped: list[Skipped] = []
    for item in questions:
        if max_examples is not None and len(examples) >= max_examples:
            break
        label = str(item.path) if item.path is not None else f"image {item.image_id}"
        key = item.question_id
        if item.path is None or not item.path.is_file():
            skipped.append(Skipped(label, f"image file not found ({item.where})", key))
        elif not item.question:
            skipped.append(Skipped(label, f"empty question ({item.where})", key))
        elif not item.answers:
            skipped.append(Skipped(label, f"no non-empty answer ({item.where})", key))
        else:
            examples.append(
                VQAExample(
                    str(item.path), item.question, item.answers, item.image_id, item.question_id
                )
            )
    return DatasetSplit(examples, skipped, task="vqa")
