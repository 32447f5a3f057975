"""Run configuration: YAML files validated by pydantic, every field overridable from the CLI.

A config is plain data. ``load_config(path, overrides)`` reads YAML with ``yaml.safe_load``,
applies ``key.sub=value`` overrides (values parsed as YAML, so ``train.lr=1e-4`` is a float),
and validates; a wrong type or unknown field fails before any work starts, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Schema = TypeVar("Schema", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelConfig(Strict):
    """Architecture of the from-scratch captioner used by the embedded default and the tests."""

    image_size: int = 32
    patch_size: int = 8
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float | None = None
    """Every dropout probability of the model; None keeps the architectures' defaults (GPT-2
    0.1, ViT 0.0). 0 makes training independent of the random state, e.g. of the process count."""

    @field_validator("dropout")
    @classmethod
    def _probability(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError("must be in [0, 1)")
        return value


class ModelConfig(Strict):
    """Which model to fine-tune or evaluate.

    ``name_or_path`` is a hub id or a local directory (loaded through ``from_pretrained``), or
    ``tiny`` to build the small from-scratch captioner from the training texts.
    """

    name_or_path: str = "tiny"
    family: str | None = None
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    blip2_trainable: Literal["qformer", "lora"] = "qformer"
    lora_r: int = 8
    lora_alpha: int = 16
    trust_remote_code: bool = False


class DataConfig(Strict):
    """A dataset reader by name and its arguments (see ``prsl.data.read_dataset``)."""

    name: str = "shapes"
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(Strict):
    name: str = "prsl"
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Strict):
    output_dir: str = "runs/finetune"
    lr: float = 5e-5
    weight_decay: float = 0.0
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    scheduler: Literal["linear", "constant", "cosine"] = "linear"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    save_every: int = 0
    log_every: int = 10
    max_grad_norm: float | None = 1.0
    tensorboard: bool = False

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @field_validator("epochs", "batch_size", "grad_accum")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value


class FinetuneConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class AttackSpec(Strict):
    """One attack of an evaluation grid; ``eps`` accepts numbers or strings like ``8/255``.

    ``label`` names it in the results (default: ``name``); two specs of the same attack, e.g.
    BIM-10 and BIM-50, need different labels.
    """

    name: str = "bim"
    label: str | None = None
    eps: list[float | str] = Field(default_factory=lambda: ["8/255"])
    steps: int = 10
    alpha: float | str | None = None
    norm: Literal["linf", "l2"] = "linf"
    record_every_step: bool = False
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def result_name(self) -> str:
        return self.label or self.name


class EvalConfig(Strict):
    """What to evaluate and how.

    ``surrogate``: a model (directory or hub id) on which every attack is crafted a second
    time; those images are scored on each evaluated model under the attack name
    ``<attack>@<surrogate>``. A defence that only masks gradients falls to them while resisting
    its own white-box attack.
    """

    models: list[str] = Field(default_factory=list)
    surrogate: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    attacks: list[AttackSpec] = Field(default_factory=lambda: [AttackSpec()])
    output_dir: str = "runs/evaluate"
    n_images: int = 32
    batch_size: int = 16
    max_new_tokens: int = 20
    metrics: list[str] | None = None
    attack_target: Literal["clean", "ground_truth"] = "clean"
    gallery: int = 6
    seed: int = 0


class SweepConfig(Strict):
    """A grid of fine-tune + evaluate cells (see ``prsl.sweep``).

    ``grid`` maps dotted keys to value lists: ``loss.params.k: [4, 10]`` (fine-tune fields, an
    optional ``finetune.`` prefix) or ``evaluate.attacks.0.steps: [10, 20]``-style keys under
    ``evaluate.``.
    """

    output_dir: str = "runs/sweep"
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    grid: dict[str, list[Any]] = Field(default_factory=dict)


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
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
    if isinstance(node, list):
        node[_list_index(node, leaf, dotted)] = value
    else:
        node[leaf] = value


def _list_index(items: list, key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ValueError(
            f"override {dotted!r}: {key!r} must index the list, which has {len(items)} item(s)"
        )
    return int(key)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.lr=1e-4", "loss.params.k=20"]`` -> [(key, parsed YAML value), ...]."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.field=value")
        parsed.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return parsed


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else in ``top`` replaces."""
    merged = dict(base)
    for key, value in top.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both_maps else value
    return merged


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
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of sections, got {loaded!r}")
        tree = _merged(tree, loaded or {})
    for key, value in parse_overrides(overrides or []):
        set_dotted(tree, key, value)
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        where = f" in {path}" if path is not None else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ValueError(f"invalid configuration{where}: {problems}") from None
