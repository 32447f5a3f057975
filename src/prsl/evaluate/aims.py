"""What each run of a cell's attack aims at, on one batch.

Most cells run their attack once per batch, untargeted, away from one text per item: the
model's own clean output or the first ground-truth reference. Two kinds run it several times:

- ``reference: each_ground_truth`` runs it once per distinct reference of each item (RobustVLM's
  ensemble over the five COCO captions; for VQA the distinct answers, most frequent first), each
  run on the items that have that many references, so items with different numbers of
  references share the batch;
- ``targets`` runs it once per target text, targeted (the attack drives the output toward it),
  on every item.

The results then keep, per item, the run with the lowest score (:mod:`prsl.evaluate.ensemble`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from prsl.core.errors import InvalidInput
from prsl.data import DatasetSplit, Sample, evaluation_samples
from prsl.evaluate.config import EACH_GROUND_TRUTH, EvalConfig
from prsl.evaluate.grid import Cell
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol, normalize_answer


@dataclass(frozen=True)
class Aim:
    """One run of a cell's attack on a batch: the items it attacks (places in the batch) and,
    for each, the text it pushes away from (untargeted) or toward (``targeted``)."""

    items: list[int]
    texts: list[str]
    targeted: bool = False


def reference_of(cell: Cell, attack_target: str) -> str:
    """The reference an untargeted cell aims at: its spec's, else the evaluation's."""
    return cell.reference if cell.reference is not None else attack_target


def runs_several(cell: Cell, attack_target: str) -> bool:
    """Whether the cell runs its attack several times per item (its rows keep every run)."""
    return cell.targeted or reference_of(cell, attack_target) == EACH_GROUND_TRUTH


def distinct_references(sample: Sample, protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL) -> list[str]:
    """An item's references, each once: captions as given; VQA answers told apart as VQA
    accuracy normalises them, the most frequent first (its first is the majority answer)."""
    if sample.question is None:
        return list(dict.fromkeys(sample.references))
    forms = [normalize_answer(answer, protocol) for answer in sample.references]
    counts = Counter(forms)
    order = sorted(counts, key=lambda form: (-counts[form], forms.index(form)))
    return [sample.references[forms.index(form)] for form in order]


def cell_aims(
    cell: Cell,
    attack_target: str,
    own_clean: list[str],
    samples: list[Sample],
    protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
) -> list[Aim]:
    """The runs of ``cell`` on a batch (module docstring); ``own_clean`` is the crafting
    model's clean output per item."""
    everyone = list(range(len(samples)))
    if cell.targeted:
        return [Aim(everyone, [target] * len(samples), True) for target in cell.targets]
    reference = reference_of(cell, attack_target)
    if reference == "clean":
        return [Aim(everyone, list(own_clean))]
    if reference != EACH_GROUND_TRUTH:
        return [Aim(everyone, [s.text for s in samples])]
    references = [distinct_references(s, protocol) for s in samples]
    aims = []
    for r in range(max(map(len, references))):
        having = [i for i in everyone if len(references[i]) > r]
        aims.append(Aim(having, [references[i][r] for i in having]))
    return aims


def check_references(cfg: EvalConfig, split: DatasetSplit) -> None:
    """Refuse ``each_ground_truth`` on data whose items have one reference each: it would be
    the ``ground_truth`` attack under another name, not an ensemble."""
    asked = [
        spec.result_name
        for spec in cfg.attacks
        if spec.targets is None and (spec.reference or cfg.attack_target) == EACH_GROUND_TRUTH
    ]
    samples = evaluation_samples(split, str)
    if asked and all(len(distinct_references(s, cfg.vqa_protocol)) < 2 for s in samples):
        raise InvalidInput(
            f"attack {asked[0]!r} runs once per distinct reference (each_ground_truth), but no "
            f"item of dataset {cfg.data.name!r} has more than one: use reference: ground_truth"
        )
