"""Captioning readers: COCO (official and Karpathy JSON), Flickr CSV, and an image folder.

Each returns a ``DatasetSplit`` of ``CaptionExample`` (one per image, all its references, in
file order) plus what it skipped. Readers only check that image files exist; decoding happens
later in ``prsl.data.images`` so a broken file costs one skipped example, not a crash.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from prsl.core.errors import InvalidInput, MissingInput
from prsl.data._parsing import (
    ImageCaptions,
    caption_split,
    check_image_dir,
    check_max_examples,
    clean_text,
    format_error,
    read_json,
    require,
    require_list,
)
from prsl.data.types import DatasetSplit, Skipped

COCO_FORMAT = (
    'COCO captions JSON: {"images": [{"id", "file_name"}], '
    '"annotations": [{"image_id", "caption"}]}'
)
KARPATHY_FORMAT = (
    'Karpathy split JSON: {"images": [{"filename", "split", "sentences": [{"raw"}], '
    'optional "filepath", "cocoid"/"imgid"}]}'
)
FLICKR_FORMATS = (
    "Flickr captions CSV with header 'image,caption' (Flickr8k captions.txt) or "
    "'image_name| comment_number| comment' (Flickr30k results.csv)"
)
IMAGEFOLDER_FORMAT = "image folder with metadata.csv having columns 'file_name,text'"
KARPATHY_SPLITS = ("train", "val", "test", "restval")


def read_coco(
    annotations_file: str | Path, image_dir: str | Path, max_examples: int | None = None
) -> DatasetSplit:
    """Official COCO captions (``captions_val2014.json``), images in ``image_dir``."""
    check_max_examples(max_examples)
    check_image_dir(image_dir)
    path = Path(annotations_file)
    data = read_json(path, COCO_FORMAT)
    images = require_list(data, "images", path, COCO_FORMAT)
    annotations = require_list(data, "annotations", path, COCO_FORMAT)
    by_id: dict[object, ImageCaptions] = {}
    for image in images:
        image_id = require(image, "id", path, COCO_FORMAT)
        file_name = require(image, "file_name", path, COCO_FORMAT)
        by_id[image_id] = ImageCaptions(str(image_id), Path(image_dir) / file_name, [])
    for annotation in annotations:
        image_id = require(annotation, "image_id", path, COCO_FORMAT)
        caption = clean_text(
            require(annotation, "caption", path, COCO_FORMAT), path, COCO_FORMAT, annotation
        )
        if image_id not in by_id:
            problem = f"annotation for image_id {image_id!r} not in 'images'"
            raise format_error(path, COCO_FORMAT, problem, annotation)
        where = f"annotation {annotation.get('id', '?')} in {path.name}"
        by_id[image_id].captions.append((caption, where))
    return caption_split(by_id.values(), max_examples)


def read_karpathy(
    split_file: str | Path,
    image_dir: str | Path,
    split: str | Sequence[str] = "test",
    max_examples: int | None = None,
) -> DatasetSplit:
    """Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json``, keeping the images of ``split``.

    ``split`` is one name or several (``["train", "restval"]`` is the usual training set).
    An image's file is ``image_dir / filepath / filename`` (``filepath`` only exists for COCO).
    """
    check_max_examples(max_examples)
    wanted = (split,) if isinstance(split, str) else tuple(split)
    if not wanted or any(name not in KARPATHY_SPLITS for name in wanted):
        raise InvalidInput(f"split must be one or more of {list(KARPATHY_SPLITS)}, got {split!r}")
    check_image_dir(image_dir)
    path = Path(split_file)
    images = require_list(read_json(path, KARPATHY_FORMAT), "images", path, KARPATHY_FORMAT)
    return caption_split(_karpathy_images(images, path, Path(image_dir), wanted), max_examples)


def _karpathy_images(
    images: list, path: Path, image_dir: Path, wanted: tuple[str, ...]
) -> Iterator[ImageCaptions]:
    for image in images:
        if require(image, "split", path, KARPATHY_FORMAT) not in wanted:
            continue
        filename = require(image, "filename", path, KARPATHY_FORMAT)
        sentences = require_list(image, "sentences", path, KARPATHY_FORMAT)
        image_id = image.get("cocoid", image.get("imgid", filename))
        captions = []
        for number, sentence in enumerate(sentences):
            raw = require(sentence, "raw", path, KARPATHY_FORMAT)
            where = f"sentence {number} of {filename} in {path.name}"
            captions.append((clean_text(raw, path, KARPATHY_FORMAT, image), where))
        file = image_dir / image.get("filepath", "") / filename
        yield ImageCaptions(str(image_id), file, captions)


def read_flickr(
    captions_file: str | Path, image_dir: str | Path, max_examples: int | None = None
) -> DatasetSplit:
    """Flickr8k ``captions.txt`` (``image,caption``) or Flickr30k ``results.csv`` (pipes).

    The header decides the form. A row with too few fields (Flickr30k's ``results.csv`` ships
    one) is skipped and recorded with its line number rather than rejecting the whole file.
    """
    check_max_examples(max_examples)
    check_image_dir(image_dir)
    path = Path(captions_file)
    if not path.is_file():
        raise MissingInput(f"captions file not found: {path} (expected {FLICKR_FORMATS})")
    rows, malformed = _flickr_rows(path)
    split = caption_split(_group_rows(rows, Path(image_dir)), max_examples)
    split.skipped[:0] = malformed
    return split


def _flickr_rows(path: Path) -> tuple[list[tuple[int, str, str]], list[Skipped]]:
    """(line, file name, caption) for every row, and a Skipped for each malformed row."""
    text = _read_text(path, FLICKR_FORMATS)
    header = text.split("\n", 1)[0].strip()
    numbered: list[tuple[int, list[str]]]
    if "|" in header:
        if [c.strip() for c in header.split("|")] != ["image_name", "comment_number", "comment"]:
            raise format_error(path, FLICKR_FORMATS, "wrong column names", header)
        lines = text.splitlines()[1:]
        numbered = [(n, line.split("|", 2)) for n, line in enumerate(lines, start=2)]
        expected_fields = 3
    else:
        reader = csv.reader(io.StringIO(text))
        if [c.strip() for c in next(reader, [])] != ["image", "caption"]:
            raise format_error(path, FLICKR_FORMATS, "wrong column names", header)
        # Flickr8k captions may hold unquoted commas: everything after the first is the caption;
        # a row with no caption field becomes an empty caption (skipped, like a blank one).
        numbered = [(reader.line_num, row[:1] + [",".join(row[1:])]) for row in reader if row]
        expected_fields = 2
    rows, malformed = [], []
    for number, fields in numbered:
        if not "".join(fields).strip():
            continue  # blank line
        if len(fields) < expected_fields or not fields[0].strip():
            malformed.append(Skipped(f"{path}:{number}", f"malformed row: {FLICKR_FORMATS}"))
            continue
        rows.append((number, fields[0].strip(), " ".join(fields[-1].split())))
    return rows, malformed


def read_imagefolder(directory: str | Path, max_examples: int | None = None) -> DatasetSplit:
    """A folder of images with ``metadata.csv`` (``file_name,text``), as ``datasets`` reads it.

    Several rows for one file are several references for that image, and so are the items of a
    ``references`` column holding a JSON list (what ``prsl attack`` writes); other columns are
    ignored, and ``file_name`` may name a file in a subfolder.
    """
    check_max_examples(max_examples)
    folder = check_image_dir(directory)
    path = folder / "metadata.csv"
    if not path.is_file():
        raise MissingInput(f"no metadata.csv in {folder} (expected {IMAGEFOLDER_FORMAT})")
    reader = csv.DictReader(io.StringIO(_read_text(path, IMAGEFOLDER_FORMAT)))
    columns = reader.fieldnames or []
    if "file_name" not in columns or "text" not in columns:
        raise format_error(path, IMAGEFOLDER_FORMAT, f"wrong column names {columns}")
    rows, malformed = [], []
    for row in reader:
        file_name = (row["file_name"] or "").strip()
        if not file_name:
            where = f"{path}:{reader.line_num}"
            malformed.append(Skipped(where, f"malformed row: {IMAGEFOLDER_FORMAT}"))
            continue
        for text in _row_references(row):
            rows.append((reader.line_num, file_name, " ".join(text.split())))
    split = caption_split(_group_rows(rows, folder), max_examples)
    split.skipped[:0] = malformed
    return split


def _row_references(row: dict[str, str | None]) -> list[str]:
    """The row's captions: its ``references`` JSON list when it has one, else its ``text``."""
    listed = row.get("references")
    if listed:
        try:
            references = json.loads(listed)
        except json.JSONDecodeError:
            references = None
        if isinstance(references, list) and all(isinstance(r, str) for r in references):
            return references or [""]
    return [row.get("text") or ""]


def _group_rows(rows: list[tuple[int, str, str]], image_dir: Path) -> list[ImageCaptions]:
    """One entry per file name, in order of first appearance, with all its captions."""
    grouped: dict[str, ImageCaptions] = {}
    for number, file_name, caption in rows:
        if file_name not in grouped:
            grouped[file_name] = ImageCaptions(file_name, image_dir / file_name, [])
        grouped[file_name].captions.append((caption, f"line {number}"))
    return list(grouped.values())


def _read_text(path: Path, expected: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a BOM from spreadsheet exports
    except UnicodeDecodeError as err:
        raise format_error(path, expected, f"not UTF-8 text ({err})") from err
