"""Readers by name, so configs and the CLI pick a dataset with a string and keyword options."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

from pydantic import ConfigDict, TypeAdapter, ValidationError

from prsl.core.errors import InvalidInput
from prsl.data.captions import read_coco, read_flickr, read_imagefolder, read_karpathy
from prsl.data.hf import read_hf
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
