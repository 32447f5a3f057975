"""What an evaluation is configured with: models, data, the attack grid, generation, scoring.

Each attack of the grid is written as in YAML, flat: ``{name: pgd, eps: [2/255, 8/255],
steps: 20}``. Every field but ``name``, ``label`` and ``eps`` is a parameter of the attack, and
the spec is validated into the attack's own typed object (``prsl.attacks.PGD`` ...) once per ε
when the config is loaded: a parameter the attack does not take (``{name: bim, norm: l2}``), a
wrong type or an out-of-range value fails before any work, naming the attack and the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_serializer, model_validator

from prsl.attacks import Attack, parse_attacks
from prsl.config import DataConfig, Strict
from prsl.core.errors import InvalidInput
from prsl.core.pixels import levels_text
from prsl.metrics.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, MIN_RESAMPLES
from prsl.metrics.scorer import resolve_metrics
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol

_SPEC_FIELDS = ("name", "label", "eps", "transfer")
TRANSFER_MARK = "@"
"""``bim@surrogate``: the result name of an attack crafted on the surrogate."""


class AttackSpec(Strict):
    """One attack of an evaluation grid at one or more ε (see the module docstring).

    ``label`` names it in the results (default: ``name``); two specs of the same attack, e.g.
    BIM-10 and BIM-50, need different labels. ``attacks`` holds the validated attack, one per ε.
    ``transfer: false`` leaves it out of the attacks crafted again on the ``surrogate``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "bim"
    """The registered attack: fgsm, bim, pgd, mifgsm, apgd, cw or square. Every key of
    the spec other than name, label, eps and transfer is a parameter of the attack."""
    label: str | None = None
    """The attack's name in the results (None: ``name``); two specs of one attack need
    distinct labels."""
    eps: list[float]
    """One ε or a list of them, in pixel units (``8/255``), each a cell of the grid;
    default: the attack's own."""
    attacks: list[Attack]
    """The attack validated once per ε (built from the spec; not written in a config)."""
    transfer: bool = True
    """Also craft it on the ``surrogate`` and score those images (gradient attacks only)."""

    @model_validator(mode="before")
    @classmethod
    def _build(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "attacks" in data:
            raise ValueError(
                "'attacks' is not a field of an attack spec: write the attack's parameters "
                "beside its name, e.g. {name: pgd, eps: [8/255], steps: 20}"
            )
        default = cls.model_fields["name"].default
        attacks = parse_attacks(data, default=default, reserved=_SPEC_FIELDS)
        name = data.get("name", default)
        label = data.get("label")
        if isinstance(label, str) and TRANSFER_MARK in label:
            raise ValueError(
                f"label {label!r} may not contain {TRANSFER_MARK!r}: it marks transferred attacks"
            )
        spec = {"name": name, "label": label, "eps": [a.eps for a in attacks], "attacks": attacks}
        return spec | ({"transfer": data["transfer"]} if "transfer" in data else {})

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        """The spec as a YAML file would say it: name, label, the ε list, the given parameters."""
        params = {k: v for k, v in self.attacks[0].given().items() if k != "eps"}
        label = {"label": self.label} if self.label is not None else {}
        transfer = {} if self.transfer else {"transfer": False}
        return {"name": self.name, **label, "eps": list(self.eps), **transfer, **params}

    @property
    def result_name(self) -> str:
        return self.label or self.name


class BootstrapConfig(Strict):
    """The paired bootstrap over items behind every interval and comparison of the results
    (``prsl.metrics.bootstrap``): ``resamples`` resamples (0: no intervals), ``level`` the
    intervals' coverage, ``seed`` the resamples' seed (None: the evaluation's ``seed``)."""

    resamples: int = Field(DEFAULT_RESAMPLES, ge=0)
    """Bootstrap resamples (0: no intervals and no comparisons; else at least 100)."""
    level: float = DEFAULT_LEVEL
    """The intervals' coverage, above 0.5 and below 1."""
    seed: int | None = Field(None, ge=0)
    """The resamples' seed (None: the evaluation's ``seed``)."""

    @model_validator(mode="after")
    def _meaningful(self) -> BootstrapConfig:
        if not 0.5 < self.level < 1.0:
            raise ValueError(
                f"level is the intervals' coverage as a fraction above 0.5 and below 1, e.g. "
                f"0.95; got {self.level}"
            )
        if 0 < self.resamples < MIN_RESAMPLES:
            raise ValueError(
                f"resamples={self.resamples} cannot place a {self.level:.0%} interval's ends "
                f"(each would be one resample): use at least {MIN_RESAMPLES} (default "
                f"{DEFAULT_RESAMPLES}), or 0 for no intervals"
            )
        return self


class EvalConfig(Strict):
    """What to evaluate and how.

    ``surrogate``: a model (directory or hub id) on which every gradient-based attack is
    crafted a second time; those images are scored on each evaluated model under the attack
    name ``<attack>@<surrogate>``. A defence that only masks gradients falls to them while
    resisting its own white-box attack. Gradient-free attacks (Square) are not transferred:
    they query the evaluated model itself and need no gradients to begin with.

    ``baseline``: the model the others are compared with (as listed in ``models``, or its
    shown name); default the first one trained with CE. ``bootstrap``: the paired bootstrap
    behind every interval and comparison (``resamples: 0`` turns it off).
    """

    models: list[str] = Field(default_factory=list)
    """The models to evaluate: saved model folders or hub ids (``prsl evaluate -m``
    replaces the list)."""
    surrogate: str | None = None
    """A model on which every gradient attack is crafted again and transferred (None:
    no transfer attacks)."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The evaluation data."""
    attacks: list[AttackSpec] = Field(default_factory=lambda: [AttackSpec()], min_length=1)
    """The attack grid: each spec ``{name, label, eps, transfer, ...its parameters}``."""
    output_dir: str = "runs/evaluate"
    """Where ``predictions.jsonl``, ``item_scores.jsonl`` and ``results.json`` go."""
    n_images: int = Field(32, ge=1)
    """How many items (images; questions for VQA) of the dataset to evaluate, from the first."""
    batch_size: int = Field(16, ge=1)
    """Images per attack and generation batch (on each process)."""
    step_batch_size: int | None = Field(None, ge=1)
    """Images per ``generate`` call for the outputs after every step (attacks with
    ``record_every_step``): several steps' images go through one call. None: 4 x ``batch_size``;
    lower it if generation runs out of memory."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """The dtype models are loaded in for attack and generation (None: as saved). ``bfloat16``
    halves memory and time on GPUs; pixels, normalisation and the attack's steps stay fp32,
    only the model computes in the lower precision. Recorded with the results."""
    device_map: Literal["auto"] | None = None
    """"auto": spread a model too large for one GPU over this process's GPUs (one process;
    under ``accelerate launch`` each process holds a whole model instead)."""
    max_new_tokens: int = Field(20, ge=1)
    """The most tokens generated per caption or answer (greedy decoding)."""
    metrics: list[str] | None = None
    """Metric names (None: every captioning metric, or VQA accuracy for VQA data)."""
    vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL
    """How VQA accuracy normalises answers: ``official`` (the VQA challenge's script),
    ``evalai`` (EvalAI / lmms-eval) or ``openflamingo`` (OpenFlamingo / RobustVLM); see
    ``prsl.metrics.vqa``."""
    caption_prompt: str | None = None
    """The captioning instruction of chat VLMs (None: each model's own, as saved with it)."""
    attack_target: Literal["clean", "ground_truth"] = "clean"
    """What the untargeted attacks push the output away from: the model's own clean
    output (the paper's protocol) or the ground-truth text."""
    gallery: int = Field(6, ge=0)
    """Clean/adversarial image pairs kept per model, attack and ε for the report."""
    seed: int = Field(0, ge=0)
    """Seed of the attacks' random starts (and of the bootstrap unless it has its own)."""
    baseline: str | None = None
    """The model every other is compared with (as given in ``models``, or its shown name);
    None: the first model trained with CE, when there is one."""
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """The paired bootstrap behind every interval and comparison."""

    @model_validator(mode="after")
    def _checks(self) -> EvalConfig:
        if self.data.pad_labels != DataConfig.model_fields["pad_labels"].default:
            raise ValueError(
                "data.pad_labels pads training batches; an evaluation generates text and "
                "pads nothing: drop it from the evaluation config"
            )
        if self.metrics is not None:
            try:
                resolve_metrics(self.metrics)
            except InvalidInput as err:
                raise ValueError(f"metrics: {err}") from None
        seen: set[tuple[str, float]] = set()
        for spec in self.attacks:
            for eps in spec.eps:
                if (spec.result_name, eps) in seen:
                    raise ValueError(
                        f"two attacks are named {spec.result_name!r} at ε={levels_text(eps)}: "
                        "give one of them a distinct `label`"
                    )
                seen.add((spec.result_name, eps))
        return self

    def precision(self) -> dict[str, str]:
        """The ``dtype`` as settings records and results keep it: only when given, so the
        records of runs from before the field existed still match."""
        return {"dtype": self.dtype} if self.dtype is not None else {}
