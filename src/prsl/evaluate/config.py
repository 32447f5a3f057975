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
from prsl.metrics.statistics import CORPUS_METRICS
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol
from prsl.results import HEADLINE, WORST_CASE

_SPEC_FIELDS = (
    "name",
    "label",
    "eps",
    "transfer",
    "reference",
    "targets",
    "keywords",
    "start",
    "dtype",
)
TRANSFER_MARK = "@"
"""``bim@surrogate``: the result name of an attack crafted on the surrogate."""
Reference = Literal["clean", "ground_truth", "each_ground_truth"]
"""What an untargeted attack pushes the output away from (see :class:`AttackSpec`)."""
EACH_GROUND_TRUTH = "each_ground_truth"
START_CLEAN = "clean"
START_WORST = "worst_case"
Start = Literal["clean", "worst_case"]
Dtype = Literal["float32", "bfloat16", "float16"]


def _texts(values: list[str], what: str) -> list[str]:
    """A list of non-empty, distinct texts, or the one-line reason it is not."""
    if not values:
        raise ValueError(f"{what} is empty: give at least one text, or leave {what} out")
    blank = [i for i, text in enumerate(values) if not text.strip()]
    if blank:
        raise ValueError(f"{what}[{blank[0]}] is an empty text: every entry must say something")
    twice = next((text for i, text in enumerate(values) if text in values[:i]), None)
    if twice is not None:
        raise ValueError(f"{what} lists {twice!r} twice: give each text once")
    return values


class AttackSpec(Strict):
    """One attack of an evaluation grid at one or more ε (see the module docstring).

    ``label`` names it in the results (default: ``name``); two specs of the same attack, e.g.
    BIM-10 and BIM-50, need different labels. ``attacks`` holds the validated attack, one per ε.
    ``transfer: false`` leaves it out of the attacks crafted again on the ``surrogate``.
    ``reference``, ``targets`` and ``keywords`` say what the attack aims at and when it counts
    as a success (README, "Targets, references and iterations to success").
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
    reference: Reference | None = None
    """What the untargeted attack pushes away from: ``clean`` (the model's own output),
    ``ground_truth`` (the first reference) or ``each_ground_truth`` (one run per distinct
    reference, the lowest-scoring output kept per item); None: the evaluation's
    ``attack_target``."""
    targets: list[str] | None = None
    """Target texts: the attack drives the output toward each in turn (one run per target);
    the results add the success rate (the target in the output). None: untargeted."""
    keywords: list[str] | None = None
    """With ``record_every_step``: the results count the steps until none of these words
    is left in the output (None: the evaluation's ``keywords``)."""
    start: Start = START_CLEAN
    """Where the attack starts: ``clean`` (the clean image, or the attack's own random start
    in the ball) or ``worst_case``: each item's worst adversarial image so far at this ε (by
    ``worst_case.metric``; the clean image where no earlier attack ran on it), the ε-ball
    still centred on the clean image. Needs ``worst_case`` and an attack that steps from a
    point (fgsm, bim, pgd, mifgsm, apgd)."""
    dtype: Dtype | None = None
    """The dtype the model crafts this attack in (None: the evaluation's ``dtype``), e.g.
    ``float32`` for a refinement pass after a bfloat16 run; generation stays in the
    evaluation's dtype, so every row's outputs come from the same model."""

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
        for field in ("targets", "keywords"):
            texts = data.get(field)
            read = [v for v in texts if isinstance(v, bool)] if isinstance(texts, list) else []
            if read:  # YAML reads yes / no / on / off unquoted as booleans
                raise ValueError(
                    f"{field} holds {str(read[0]).lower()}, not a text: YAML reads yes, no, on "
                    f"and off as true or false; quote them, e.g. {field}: ['yes', 'no']"
                )
        default = cls.model_fields["name"].default
        attacks = parse_attacks(data, default=default, reserved=_SPEC_FIELDS)
        name = data.get("name", default)
        label = data.get("label")
        if isinstance(label, str) and TRANSFER_MARK in label:
            raise ValueError(
                f"label {label!r} may not contain {TRANSFER_MARK!r}: it marks transferred attacks"
            )
        if label == WORST_CASE:
            raise ValueError(f"label {WORST_CASE!r} names the grid's worst case: choose another")
        spec = {"name": name, "label": label, "eps": [a.eps for a in attacks], "attacks": attacks}
        return spec | {key: data[key] for key in _SPEC_FIELDS[3:] if key in data}

    @model_validator(mode="after")
    def _aims(self) -> AttackSpec:
        if self.targets is not None:
            _texts(self.targets, "targets")
            if self.reference is not None:
                raise ValueError(
                    f"attack {self.result_name!r} has both targets and reference: a targeted "
                    "attack drives the output toward its targets; drop one of them"
                )
            if self.keywords is not None:
                raise ValueError(
                    f"attack {self.result_name!r} has both targets and keywords: its success is "
                    "the target appearing; drop keywords"
                )
        if self.keywords is not None:
            _texts(self.keywords, "keywords")
            if not self.records_steps:
                raise ValueError(
                    f"attack {self.result_name!r} has keywords but records no steps: counting "
                    "the steps until they vanish needs record_every_step: true"
                )
        return self

    @property
    def records_steps(self) -> bool:
        """Whether the attack records its output after every step (``record_every_step``)."""
        return bool(getattr(self.attacks[0], "record_every_step", False))

    @model_validator(mode="after")
    def _startable(self) -> AttackSpec:
        if self.start == START_WORST and not self.attacks[0].takes_start:
            raise ValueError(
                f"start: {START_WORST} needs an attack that steps from a point (fgsm, bim, pgd, "
                f"mifgsm, apgd); {self.name} does not"
            )
        return self

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        """The spec as a YAML file would say it: name, label, the ε list, the given parameters."""
        params = {k: v for k, v in self.attacks[0].given().items() if k != "eps"}
        label = {"label": self.label} if self.label is not None else {}
        transfer = {} if self.transfer else {"transfer": False}
        aims = {
            key: value
            for key in ("reference", "targets", "keywords")
            if (value := getattr(self, key)) is not None
        }
        start = {} if self.start == START_CLEAN else {"start": self.start}
        dtype = {} if self.dtype is None else {"dtype": self.dtype}
        return {
            "name": self.name,
            **label,
            "eps": list(self.eps),
            **transfer,
            **aims,
            **start,
            **dtype,
            **params,
        }

    @property
    def result_name(self) -> str:
        return self.label or self.name


class ModelEntry(Strict):
    """A model of an evaluation with a separately saved vision tower swapped in:
    ``{path: /models/llava-1.5-7b-hf, vision_tower: /ckpt/fare_eps_2.pt}`` (a plain string is
    the model as saved), evaluated as a model of its own and shown as
    ``llava-1.5-7b-hf+fare_eps_2.pt``: the same model with and without the tower compare."""

    path: str
    """The model: a saved model folder or a hub id."""
    vision_tower: str | None = None
    """A vision tower whose weights replace the model's own: a Hugging Face CLIPVisionModel /
    SiglipVisionModel folder, or an open_clip state dict (``.safetensors``, ``.pt``, ``.bin``);
    position embeddings are resized when its resolution differs. None: the model's own."""


ModelGiven = str | ModelEntry
"""A model as an evaluation names it: a path or hub id, or one with a tower swapped in."""


def model_path(given: ModelGiven) -> str:
    """The saved model (folder or hub id) an entry names."""
    return given if isinstance(given, str) else given.path


def model_tower(given: ModelGiven) -> str | None:
    """The vision tower an entry swaps in (None: the model's own)."""
    return None if isinstance(given, str) else given.vision_tower


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


class WorstCaseConfig(Strict):
    """The per-item worst case over the grid's attacks, and the cascade (``prsl.evaluate.cascade``,
    ``prsl.evaluate.worst_case``).

    For every model, ε (and ball norm) and reference, each item keeps the adversarial output
    with the lowest ``metric`` over every attack cell of the grid at that ε, transferred ones
    (``attack@surrogate``) included: they are attacks too. The chosen outputs are reported as
    the attack ``worst-case``, every metric recomputed on them, with intervals and comparisons
    like any attack. ``stop_below`` makes the attacks a cascade (in the grid's order): an item
    whose ``metric`` against ``reference`` is at or below it after an attack skips the rest of
    the attacks at that ε; each skipped cell is recorded, and an attack's own row then covers
    only the items it ran on.
    """

    metric: str | None = None
    """The per-item score the worst case minimises: any metric the evaluation computes (None:
    the task's headline, CIDEr for captions, VQA-acc for VQA). CIDEr-D takes its document
    frequencies from the references of all the model's items, so an item's score does not
    depend on which attacks the other items met."""
    stop_below: float | None = None
    """Skip the remaining attacks at an ε for an item whose score is at or below this (None:
    every attack runs on every item). RobustVLM: CIDEr 10 on COCO, 2 on Flickr30k (its CIDEr
    is x100: 0.1 and 0.02 here); VQA accuracy 0."""
    reference: Literal["ground_truth", "clean"] = "ground_truth"
    """What the cascade (and a ``start: worst_case`` attack) judges an output against during
    the run: the ground truth (RobustVLM) or the model's own clean output. The ``worst-case``
    rows of the results are chosen for each reference against that reference."""

    @model_validator(mode="after")
    def _known(self) -> WorstCaseConfig:
        if self.metric is not None:
            try:
                resolve_metrics([self.metric])
            except InvalidInput as err:
                raise ValueError(f"metric: {err}") from None
        return self

    def metric_for(self, task: str, metrics: list[str], judged_in_run: bool) -> str:
        """The metric for ``task`` given the evaluation's ``metrics``; one line naming the fix
        when it is not computed, or when the run would have to judge with CIDEr against the
        clean outputs (its frequencies need every item's clean output, known at the end)."""
        metric = self.metric or HEADLINE[task][0]
        if metric not in metrics:
            raise InvalidInput(
                f"worst_case.metric {metric!r} is not computed for this {task} data (metrics: "
                f"{', '.join(metrics)}): set worst_case.metric to one of them"
            )
        if judged_in_run and metric in CORPUS_METRICS and self.reference == "clean":
            raise InvalidInput(
                f"worst_case: {metric} against the model's clean outputs takes its document "
                "frequencies from every item's clean output, unknown until the run ends, so the "
                "cascade cannot judge with it: use reference: ground_truth or another metric"
            )
        return metric


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

    models: list[ModelGiven] = Field(default_factory=list)
    """The models to evaluate: saved model folders or hub ids, or ``{path: ..., vision_tower:
    ...}`` to swap a separately saved vision tower in (``prsl evaluate -m`` replaces the
    list)."""
    surrogate: ModelGiven | None = None
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
    vqa_template: str | None = None
    """How a VQA question becomes every model's prompt, with a ``{question}`` field, e.g. a
    dataset's own instruction (None: each model's own, as saved with it or its family's)."""
    attack_target: Reference = "clean"
    """What the untargeted attacks push the output away from: the model's own clean
    output (the paper's protocol), the first ground-truth text, or each distinct ground-truth
    text in turn (``each_ground_truth``); an attack's ``reference`` overrides it."""
    keywords: list[str] | None = None
    """Words whose vanishing from the output counts as success for every untargeted attack
    with ``record_every_step`` (its own ``keywords`` aside): the results count the steps until
    none is left. None: success is the output changing."""
    gallery: int = Field(6, ge=0)
    """Clean/adversarial image pairs kept per model, attack and ε for the report."""
    seed: int = Field(0, ge=0)
    """Seed of the attacks' random starts (and of the bootstrap unless it has its own)."""
    baseline: str | None = None
    """The model every other is compared with (as given in ``models``, or its shown name);
    None: the first model trained with CE, when there is one."""
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    """The paired bootstrap behind every interval and comparison."""
    worst_case: WorstCaseConfig | None = None
    """The per-item worst case over the grid's attacks at each ε, reported as the attack
    ``worst-case``, and with ``stop_below`` the cascade (None: off)."""

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
        if self.keywords is not None:
            _texts(self.keywords, "keywords")
            if not any(s.records_steps and s.targets is None for s in self.attacks):
                raise ValueError(
                    "keywords are counted on the outputs after every step, and no untargeted "
                    "attack records them: add record_every_step: true to one, or drop keywords"
                )
        self._check_worst_case()
        return self

    @model_validator(mode="after")
    def _template(self) -> EvalConfig:
        if self.vqa_template is not None and "{question}" not in self.vqa_template:
            raise ValueError(
                f"vqa_template must contain {{question}}, where the question goes; got "
                f"{self.vqa_template!r}"
            )
        return self

    def _check_worst_case(self) -> None:
        wc = self.worst_case
        starts = [s.result_name for s in self.attacks if s.start == START_WORST]
        if wc is None:
            if starts:
                raise ValueError(
                    f"attack {starts[0]!r} has start: {START_WORST}, which needs worst_case "
                    "(e.g. worst_case: {metric: CIDEr})"
                )
            return
        if self.metrics is not None and wc.metric is not None and wc.metric not in self.metrics:
            raise ValueError(
                f"worst_case.metric {wc.metric!r} is not among metrics {self.metrics}: add it"
            )

    @property
    def judged_in_run(self) -> bool:
        """Whether outputs are scored during the run: a cascade, or a start at the worst case."""
        wc = self.worst_case
        starts = any(s.start == START_WORST for s in self.attacks)
        return wc is not None and (wc.stop_below is not None or starts)

    def precision(self) -> dict[str, str]:
        """The ``dtype`` as settings records and results keep it: only when given, so the
        records of runs from before the field existed still match."""
        return {"dtype": self.dtype} if self.dtype is not None else {}
