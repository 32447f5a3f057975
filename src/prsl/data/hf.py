"""Hugging Face ``datasets`` as a data source: a hub id, a ``save_to_disk`` folder, or local files.

``read_hf(path, split=..., columns={...})`` maps a table's columns onto captioning or VQA
records. ``columns`` names, for each role, the column that plays it:

- ``image``: an ``Image`` feature, encoded bytes, a ``{"bytes", "path"}`` mapping, or a path
  (relative paths are taken from the dataset's folder);
- ``caption``: a string or a list of strings (every one a reference), for captioning;
- ``question`` and ``answers``: a string and a list of strings or VQAv2's list of
  ``{"answer": ...}`` mappings, for VQA (a single answer counts ``ANSWER_COPIES`` times, so a
  correct prediction scores 1);
- ``id`` (optional): the item's id; ``image_id`` (optional, VQA).

``preset`` fills ``columns`` for a common hub layout, named after the dataset whose schema it
follows (:data:`PRESETS`). ``data_files`` (a glob such as ``data/validation-*``) reads only those
files of a hub repository or a local folder: ``datasets`` otherwise downloads every split of a
repository to give one. Images are never decoded here: each record holds a
:class:`~prsl.data.types.LazyImage` that reads its row when a batch needs it, so a split of any
size stays small in memory. ``streaming: true`` reads a hub dataset without downloading it;
its first ``n`` items' encoded images are kept in a temporary file as they stream past. Items
without a usable text are skipped and recorded like the file readers' (a broken image is
skipped when it is decoded).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from prsl.core.errors import InvalidInput, MissingInput, UserError
from prsl.data._parsing import check_max_examples
from prsl.data.types import CaptionExample, DatasetSplit, LazyImage, Skipped, VQAExample
from prsl.data.vqa import ANSWER_COPIES

PRESETS: Mapping[str, Mapping[str, str]] = {
    # nlphuji/flickr30k: image, caption (5 strings), img_id, filename, split
    "flickr30k": {"image": "image", "caption": "caption", "id": "img_id"},
    # lmms-lab/COCO-Caption2017 (and COCO-Caption): image, answer (5 captions), question_id
    "coco-caption": {"image": "image", "caption": "answer", "id": "question_id"},
    # HuggingFaceM4/VQAv2: image, question, answers [{answer, answer_confidence, answer_id}]
    "vqav2": {
        "image": "image",
        "question": "question",
        "answers": "answers",
        "id": "question_id",
        "image_id": "image_id",
    },
    # lmms-lab/textvqa: image, question, answers (10 strings), question_id, image_id
    "textvqa": {
        "image": "image",
        "question": "question",
        "answers": "answers",
        "id": "question_id",
        "image_id": "image_id",
    },
    # lmms-lab/VizWiz-VQA: question_id, image, question, answers (10 strings, "unanswerable"
    # among them), category; no image id
    "vizwiz": {"image": "image", "question": "question", "answers": "answers", "id": "question_id"},
    # lmms-lab/OK-VQA: question_id, image, question, answers (10 strings), question_type,
    # answer_type; no image id
    "ok-vqa": {"image": "image", "question": "question", "answers": "answers", "id": "question_id"},
    # a `datasets` image folder: images beside a metadata.csv with file_name and text
    "imagefolder": {"image": "image", "caption": "text"},
}
COLUMN_ROLES: Mapping[str, str] = {
    "image": "the image: an Image feature, encoded bytes, a {bytes, path} mapping or a path "
    "(relative to the data's folder)",
    "caption": "captioning: the reference caption, a string or a list of strings (each a "
    "reference)",
    "question": "VQA: the question, a string",
    "answers": "VQA: the human answers, a list of strings or VQAv2's list of {answer: ...} "
    "mappings (a single answer counts ten times)",
    "id": "optional: the item's id (default: the split and the row number, test-0)",
    "image_id": "optional, VQA: the image's id (default: the item's id)",
}
"""What each role of ``columns`` is (the module docstring has the details)."""
ROLES = tuple(COLUMN_ROLES)
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def read_hf(
    path: str,
    name: str | None = None,
    split: str = "test",
    columns: dict[str, str] | None = None,
    preset: str | None = None,
    streaming: bool = False,
    n: int | None = None,
    shuffle_seed: int | None = None,
    data_files: str | None = None,
    max_examples: int | None = None,
) -> DatasetSplit:
    """A ``datasets`` table as captioning or VQA records (see the module docstring).

    ``path`` is a hub id, a folder written by ``save_to_disk``, or a local file / folder of
    parquet, arrow, json, csv or images; ``name`` the hub config, ``split`` the split. ``n``
    keeps the first ``n`` items (after a shuffle with ``shuffle_seed``). ``data_files``: only
    the files of ``split`` matching this glob, in a hub repository or a local folder.
    """
    check_max_examples(max_examples)
    if n is not None and n < 1:
        raise InvalidInput(f"n must be a positive int or None, got {n!r}")
    mapping = resolve_columns(columns, preset)
    task = "vqa" if "question" in mapping else "caption"
    table = _load(path, name, split, streaming, data_files)
    # the first load of local files converts them to arrow (cached); arrow's allocator keeps the
    # memory that took (hundreds of MB for a large file) unless told to give it back
    import pyarrow  # datasets' own storage

    pyarrow.default_memory_pool().release_unused()
    _check_columns(table, mapping, path)
    # what a rerun's check sees of the content: datasets' fingerprint of the table (it changes
    # when the files or the hub revision do); a stream has none, so its images are hashed
    version = getattr(table, "_fingerprint", None) or ""
    table = _without_decoding(table, mapping["image"])
    if shuffle_seed is not None:
        table = table.shuffle(seed=shuffle_seed, **({"buffer_size": 1000} if streaming else {}))
    limit = min(x for x in (n, max_examples) if x is not None) if (n or max_examples) else None
    rows = _rows(table, mapping["image"], streaming, limit if streaming else n)
    folder = Path(path) if Path(path).exists() else None
    examples, skipped = [], []
    for index, row, image in rows:
        if max_examples is not None and len(examples) >= max_examples:
            break
        record = _record(index, row, image, mapping, task, split, folder, version)
        (skipped if isinstance(record, Skipped) else examples).append(record)
    return DatasetSplit(examples, skipped, task=task)


def resolve_columns(columns: dict[str, str] | None, preset: str | None) -> dict[str, str]:
    """Each role's column, from ``preset`` with ``columns`` over it, checked for a usable set
    (an image, and a caption or both question and answers); no data is opened."""
    if preset is not None and preset not in PRESETS:
        raise InvalidInput(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    mapping = {**(PRESETS[preset] if preset else {}), **(columns or {})}
    unknown = sorted(set(mapping) - set(ROLES))
    if unknown:
        raise InvalidInput(f"columns: unknown role(s) {unknown}; the roles are: {', '.join(ROLES)}")
    if "image" not in mapping:
        raise InvalidInput("columns must name the image column (columns: {image: ...}) or a preset")
    caption, vqa = "caption" in mapping, "question" in mapping or "answers" in mapping
    if caption == vqa or (vqa and not {"question", "answers"} <= set(mapping)):
        raise InvalidInput(
            "columns must name a caption column (captioning) or both question and answers (VQA)"
        )
    return mapping


def _load(path: str, name: str | None, split: str, streaming: bool, data_files: str | None) -> Any:
    import datasets

    local = Path(path).expanduser()
    saved = local.is_dir() and any((local / marker).is_file() for marker in SAVED_MARKERS)
    if data_files is not None and (saved or local.is_file()):
        raise InvalidInput(
            f"data_files selects files of a hub repository or a folder of data files; {path!r} "
            "is a single file or a save_to_disk folder: leave data_files out"
        )
    # a mapping, so the files keep the split's name (a bare glob would be read as "train")
    files = {"data_files": {split: data_files}} if data_files is not None else {}
    try:
        if saved:
            if _saved_empty(local):
                raise InvalidInput(_empty(path, None))
            if _saved_empty(local / split):
                raise InvalidInput(_empty(path, split))
            try:
                saved = datasets.load_from_disk(str(local))
            except IndexError:  # datasets cannot open a split saved with 0 rows
                raise InvalidInput(_empty(path, None)) from None
            table = _pick_split(saved, split, path)
        elif local.is_file():
            builder = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json"}.get(
                local.suffix, local.suffix.lstrip(".")
            )
            table = datasets.load_dataset(
                builder, data_files=str(local), split="train", streaming=streaming
            )
        elif local.exists():
            table = datasets.load_dataset(
                str(local), name, split=split, streaming=streaming, **files
            )
        else:
            table = datasets.load_dataset(path, name, split=split, streaming=streaming, **files)
    except (FileNotFoundError, ConnectionError) as err:
        cause = " ".join(str(err).split())[:300]
        raise MissingInput(
            f"dataset {path!r} could not be loaded (not a local folder or file, and not reachable "
            f"on the hub: offline, a wrong id, or gated?): {cause}"
        ) from None
    except UserError:
        raise
    except ValueError as err:  # an unknown split or config name, or files without a row
        if "corresponds to no data" in str(err):
            raise InvalidInput(_empty(path, None if local.is_file() else split)) from None
        raise InvalidInput(f"dataset {path!r}: {' '.join(str(err).split())[:300]}") from None
    if not streaming and len(table) == 0:
        raise InvalidInput(_empty(path, None if local.is_file() else split))
    return table


def _empty(path: str, split: str | None) -> str:
    where = f" in split {split!r}" if split is not None else ""
    return f"dataset {path!r} has 0 rows{where}: nothing to evaluate or train on"


def _saved_empty(folder: Path) -> bool:
    """Whether a ``save_to_disk`` folder of one split holds no data file (0 rows)."""
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def _pick_split(saved: Any, split: str, path: str) -> Any:
    import datasets

    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise InvalidInput(
                f"dataset {path!r} has no split {split!r}; its splits: {', '.join(saved)}"
            )
        return saved[split]
    return saved


def _check_columns(table: Any, mapping: Mapping[str, str], path: str) -> None:
    names = list(table.column_names or []) if table.column_names is not None else None
    if names is None:  # a stream whose schema is only known from its rows
        return
    missing = [f"{role}: {column!r}" for role, column in mapping.items() if column not in names]
    if missing:
        raise InvalidInput(
            f"dataset {path!r} has no column {', '.join(missing)}; its columns: {', '.join(names)}"
        )


def _without_decoding(table: Any, column: str) -> Any:
    """An ``Image`` column read as ``{"bytes", "path"}``: decoding waits for the batch."""
    import datasets

    features = getattr(table, "features", None) or {}
    if isinstance(features.get(column), datasets.Image):
        return table.cast_column(column, datasets.Image(decode=False))
    return table


def _rows(
    table: Any, image_column: str, streaming: bool, limit: int | None
) -> Iterable[tuple[int, dict, Any]]:
    """(index, row without its image, the image as a lazy handle) for each kept row."""
    if streaming:  # no random access: each row's encoded image is kept on disk as it passes
        spool = _Spool()
        for index, row in enumerate(table):
            if limit is not None and index >= limit:
                return
            yield index, row, spool
        return
    count = len(table) if limit is None else min(limit, len(table))
    texts = table.remove_columns([image_column])  # the metadata pass reads no image bytes
    for index in range(count):
        yield index, texts[index], _RowImage(table, index)


class _RowImage:
    """Reads one row of a table again when its image is needed (the table is memory-mapped)."""

    def __init__(self, table: Any, index: int) -> None:
        self.table, self.index = table, index

    def __call__(self, column: str) -> Any:
        return self.table[self.index][column]


class _Spool:
    """Encoded images of a stream, appended to an anonymous temporary file (removed when the
    split is dropped): a streamed split of any size keeps its images on disk, not in memory."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (open while the split lives)
        self.size = 0

    def keep(self, value: Any) -> tuple[Callable[[], Any], str]:
        """A loader of ``value`` and what identifies it: bytes are written out (to be read back)
        and hashed; a path, or an image the stream already decoded, is held as it is."""
        if isinstance(value, Image.Image):
            return (lambda: value), hashlib.sha1(value.tobytes()).hexdigest()
        if not isinstance(value, bytes | bytearray):
            return (lambda: value), str(value)
        offset, length = self.size, len(value)
        self.file.write(value)
        self.file.flush()
        self.size += length
        digest = hashlib.sha1(value).hexdigest()
        return (lambda: os.pread(self.file.fileno(), length, offset)), digest


def _image_value(value: Any, folder: Path | None) -> Any:
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, str) and folder is not None and not Path(value).is_absolute():
        base = folder if folder.is_dir() else folder.parent
        return str(base / value)
    return value


def _record(
    index: int,
    row: Mapping[str, Any],
    image: Any,
    mapping: Mapping[str, str],
    task: str,
    split: str,
    folder: Path | None,
    version: str,
) -> CaptionExample | VQAExample | Skipped:
    key = str(row[mapping["id"]]) if "id" in mapping else f"{split}-{index}"
    column = mapping["image"]
    label = f"{split}[{index}].{column}"
    if isinstance(image, _RowImage):
        load = lambda: _image_value(image(column), folder)  # noqa: E731
        lazy = LazyImage(load, label, f"{version}:{label}:{key}")
    else:  # a streamed row: its encoded image goes to the spool file, not memory
        load, digest = image.keep(_image_value(row[column], folder))
        lazy = LazyImage(load, label, f"{digest}:{label}:{key}")
    if task == "caption":
        references = _texts(row[mapping["caption"]])
        if not references:
            return Skipped(label, f"no non-empty caption (row {index})", key)
        return CaptionExample(lazy, tuple(references), key)
    question = " ".join(str(row[mapping["question"]] or "").split())
    answers = _texts(row[mapping["answers"]])
    if not question:
        return Skipped(label, f"empty question (row {index})", key)
    if not answers:
        return Skipped(label, f"no non-empty answer (row {index})", key)
    if len(answers) == 1:
        answers = answers * ANSWER_COPIES
    image_id = str(row[mapping["image_id"]]) if "image_id" in mapping else key
    return VQAExample(lazy, question, tuple(answers), image_id, key)


def _texts(value: Any) -> list[str]:
    """Non-empty, whitespace-normalised strings from a string, a list, or VQAv2's dicts."""
    items = value if isinstance(value, list | tuple) else [value]
    texts = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("answer", item.get("text", item.get("raw")))
        if item is None:
            continue
        text = " ".join(str(item).split())
        if text:
            texts.append(text)
    return texts
