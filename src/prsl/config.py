"""Run configuration: YAML files validated by pydantic, every field overridable from the CLI.

A config is plain data. ``load_config(schema, path, overrides)`` reads YAML safely, applies
``key.sub=value`` overrides (values parsed as YAML, so ``train.lr=1e-4`` is a float), and
validates the whole tree, loss and attack parameters included, before any work starts: a wrong
type, an unknown field or malformed YAML is one :class:`~prsl.core.errors.InvalidInput` naming
the file, the line or the field.

The stage schemas live with their stage (``prsl.train.config``, ``prsl.evaluate.config``);
this module holds what they share.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prsl.core.errors import InvalidInput, MissingInput
from prsl.core.labels import IGNORE_INDEX
from prsl.core.params import describe_errors
from prsl.data import check_reader_options

Schema = TypeVar("Schema", bound=BaseModel)


class Strict(BaseModel):
    """A config section: unknown fields are errors and numbers are strict (``true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)


class DataConfig(Strict):
    """A dataset reader by name and its arguments (see ``prsl.data.read_dataset``).

    ``pad_labels`` (training only): ``-100``, the default, leaves padded label positions out of
    the loss; ``eos`` is the authors' ViT-GPT2 recipe, every padded position labelled with the
    end token and counted in CE and in PRSL's R, with ``pad_length`` (they used 128) padding
    every batch to that many positions and cutting longer texts there, as their tokenizer did.
    """

    name: str = "shapes"
    """The dataset reader: ``coco``, ``karpathy``, ``flickr``,
    ``imagefolder``, ``vqav2``, ``vg``, ``hf``, ``shapes`` or ``shapes-vqa``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The reader's own options, e.g. ``{directory: data/adv}``
    for ``imagefolder`` or ``{path: nlphuji/flickr30k, preset: flickr30k}`` for ``hf``."""
    pad_labels: Literal[-100, "eos"] = IGNORE_INDEX
    """Training only: ``-100`` leaves padded label positions out of the loss; ``eos``
    labels them with the end token and counts them (the authors' ViT-GPT2 recipe)."""
    pad_length: int | None = Field(None, ge=1)
    """With ``pad_labels: eos``: pad (and cut) every training text to this many tokens
    (the authors used 128); None: to the longest of the batch."""

    @model_validator(mode="after")
    def _reader_exists(self) -> DataConfig:
        check_reader_options(self.name, self.options)
        if self.pad_length is not None and self.pad_labels != "eos":
            raise ValueError(
                "pad_length goes with pad_labels: eos, both for training batches only: set both "
                "in a fine-tuning config, or neither"
            )
        return self


# --------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` with YAML 1.2 floats: ``1e-5`` is a number, not the string "1e-5".

    YAML 1.1, which PyYAML implements, needs a dot and a signed exponent (``1.0e-5``), so a
    learning rate or loss weight written the usual way would reach the config as text.
    """


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _mapping_without_repeats(loader: _Loader, node: yaml.MappingNode) -> dict:
    """A mapping; a key given twice is an error (YAML would keep the last one silently)."""
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def parse_yaml(text: str, source: str, *, one_line: bool = False) -> Any:
    """YAML text as Python data; a syntax error names ``source`` and the line and column
    (``file.yaml:4:6``), or only the column for a one-line text such as a ``--set`` value."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if mark is None:
            where = source
        elif one_line:
            where = f"{source}, column {mark.column + 1} of the value"
        else:
            where = f"{source}:{mark.line + 1}:{mark.column + 1}"
        problem = err.problem or err.context or "not valid YAML"
        raise InvalidInput(f"{where}: {problem} (not valid YAML)") from None
    except yaml.YAMLError as err:
        raise InvalidInput(f"{source}: not valid YAML ({err})") from None


# ---------------------------------------------------------------------------------- overrides


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted = 'a.b'``, creating levels as needed.

    A numeric part indexes a list: ``attacks.0.steps`` is the first attack's ``steps``.
    """
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for key in parents:
        if isinstance(node, list):
            node = node[_list_index(node, key, dotted)]
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, dict | list):
            raise InvalidInput(f"override {dotted!r}: {key!r} is not a section")
    if isinstance(node, list):
        node[_list_index(node, leaf, dotted)] = value
    else:
        node[leaf] = value


def _list_index(items: list, key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise InvalidInput(
            f"override {dotted!r}: {key!r} must index the list, which has {len(items)} item(s)"
        )
    return int(key)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.lr=1e-4", "loss.params.k=20"]`` -> [(key, parsed YAML value), ...]."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"override {item!r} must look like section.field=value")
        value = parse_yaml(raw, f"--set {item!r}", one_line=True) if raw.strip() else None
        parsed.append((key.strip(), value))
    return parsed


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else in ``top`` replaces."""
    merged = dict(base)
    for key, value in top.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both_maps else value
    return merged


def validate_config(schema: type[Schema], tree: Any, source: str = "") -> Schema:
    """``schema.model_validate(tree)``, failures as one InvalidInput line naming the fields."""
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        where = f" in {source}" if source else ""
        raise InvalidInput(f"invalid configuration{where}: {describe_errors(err)}") from None


def load_config(
    schema: type[Schema], path: str | Path | None = None, overrides: list[str] | None = None
) -> Schema:
    """Read, override and validate a config; errors name the file and the offending field.

    The file is laid over the schema's defaults, so an override can reach into a default list
    (``attacks.0.eps=[8/255]``) that the file never spelled out.
    """
    tree: dict[str, Any] = schema().model_dump()
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise InvalidInput(f"config file {path} is a folder; give a YAML file")
        if not path.is_file():
            raise MissingInput(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"config file {path} is not UTF-8 text (a YAML file?)") from None
        loaded = parse_yaml(text, str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise InvalidInput(
                f"config file {path} must hold a mapping of sections, got {loaded!r}"
            )
        tree = _merged(tree, loaded or {})
    for key, value in parse_overrides(overrides or []):
        set_dotted(tree, key, value)
    return validate_config(schema, tree, str(path) if path is not None else "")
