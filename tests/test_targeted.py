"""Attacks aimed at every reference or at target texts, and the steps they need to succeed.

One evaluation of the session's trained captioner holds the three kinds of cell: BIM against
each distinct ground-truth caption in turn (the shapes images have 3 to 6), BIM toward two target
texts, and BIM whose success is the shape words vanishing. Each figure of its results is checked
against a computation of its own from ``predictions.jsonl``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from prsl.config import DataConfig, validate_config
from prsl.core.errors import InvalidInput, RunConflict
from prsl.data import Sample
from prsl.evaluate import PREDICTIONS, AttackSpec, EvalConfig, attack_to_files, evaluate
from prsl.evaluate.aims import distinct_references
from prsl.evaluate.ledger import Prediction
from prsl.evaluate.outcomes import Reading, iterations_to_success, keywords_in
from prsl.evaluate.shards import read_predictions
from prsl.evaluate.uncertainty import ITEM_SCORES
from prsl.metrics.bootstrap import resample_counts
from prsl.report.tables import iteration_rows, targeted_rows
from prsl.results import validate_results

TARGETS = ["a red circle", "square"]
KEYWORDS = ["triangle", "circle", "square"]
RESAMPLES, SEED = 200, 3


@pytest.fixture(scope="module")
def model(trained_captioner, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("targeted") / "captioner"
    trained_captioner.save(folder)
    return str(folder)


def config(model: str, out: Path, **overrides) -> EvalConfig:
    bim = {"name": "bim", "eps": ["8/255"], "steps": 3, "record_every_step": True}
    fields = {
        "models": [model],
        "data": DataConfig(name="shapes", options={"n": 6, "seed": 5}),
        "attacks": [
            AttackSpec(**bim, label="each", reference="each_ground_truth"),
            AttackSpec(**bim, label="toward", targets=TARGETS),
            AttackSpec(**bim, label="words", keywords=KEYWORDS),
        ],
        "output_dir": str(out),
        "n_images": 6,
        "batch_size": 3,
        "max_new_tokens": 8,
        "metrics": ["CIDEr", "BLEU-1"],
        "gallery": 1,
        "seed": SEED,
        "bootstrap": {"resamples": RESAMPLES},
    }
    return EvalConfig(**(fields | overrides))


@pytest.fixture(scope="module")
def evaluated(model, tmp_path_factory, scorer):
    out = tmp_path_factory.mktemp("evaluated")
    results = evaluate(config(model, out), progress=False, scorer=scorer)
    validate_results(results)
    items = [json.loads(line) for line in (out / ITEM_SCORES).read_text().splitlines()]
    return results, read_predictions(out / PREDICTIONS), items


def run_of(results: dict, attack: str, reference: str = "ground_truth") -> dict:
    (found,) = (r for r in results["runs"] if r["attack"] == attack and r["reference"] == reference)
    return found


def test_each_reference_is_attacked_and_each_item_keeps_its_lowest_scoring_run(evaluated, scorer):
    results, predictions, items = evaluated
    rows = sorted((p for p in predictions if p["attack"] == "each"), key=lambda p: p["key"])
    # one run per distinct reference, in the reference's order: items of 3, 4 and 6 references
    counts = [len(r["runs"]) for r in rows]
    assert counts == [len(set(r["references"])) for r in rows] and len(set(counts)) > 1
    for row in rows:
        assert [run["aim"] for run in row["runs"]] == list(dict.fromkeys(row["references"]))
        assert all(run["linf"] <= row["eps"] + 1e-6 for run in row["runs"])
    # every run's CIDEr against the ground truth, each scored with the others' outputs fixed
    # (CIDEr-D's document frequencies come from the references alone)
    chosen = {i["key"]: i for i in items if i["attack"] == "each"}
    references = [r["references"] for r in rows]
    base = [chosen[r["key"]] for r in rows]
    assert all(i["runs"] == len(r["runs"]) for i, r in zip(base, rows, strict=True))
    kept = [r["runs"][chosen[r["key"]]["won"]["run"]]["adversarial"] for r in rows]
    corpora, places = [], []
    for n, row in enumerate(rows):
        for r, run in enumerate(row["runs"]):
            outputs = kept[:n] + [run["adversarial"]] + kept[n + 1 :]
            corpora.append((outputs, references))
            places.append((n, r))
    scored = scorer.score_items(corpora, ["CIDEr"])
    per_run: dict[int, list[float]] = {}
    for (n, _), corpus in zip(places, scored, strict=True):
        per_run.setdefault(n, []).append(float(corpus.item_scores("CIDEr")[n]))
    for n, row in enumerate(rows):
        ground = [i for i in items if i["attack"] == "each" and i["key"] == row["key"]]
        (truth,) = [i for i in ground if i["reference"] == "ground_truth"]
        assert truth["adversarial"]["CIDEr"] == pytest.approx(min(per_run[n]), abs=1e-9)
        assert per_run[n].index(min(per_run[n])) == truth["won"]["run"]
        assert truth["won"]["aim"] == row["runs"][truth["won"]["run"]]["aim"]
    run = run_of(results, "each")
    assert run["attack_reference"] == "each_ground_truth"
    assert run["ensemble"]["runs"] == sum(counts) and run["ensemble"]["chosen_by"] == "CIDEr"
    assert sum(run["ensemble"]["wins"].values()) == len(rows)
    # the row's corpus score is the chosen outputs' and never above any single run's
    mean_cider = float(np.mean([min(per_run[n]) for n in range(len(rows))]))
    assert run["adversarial"]["CIDEr"] == pytest.approx(mean_cider, abs=1e-9)


def test_a_targeted_attack_reports_its_success_rate_over_item_target_pairs(evaluated):
    results, predictions, _ = evaluated
    rows = sorted((p for p in predictions if p["attack"] == "toward"), key=lambda p: p["key"])
    hits = [[r["aim"].lower() in r["adversarial"].lower() for r in row["runs"]] for row in rows]
    assert [[r["aim"] for r in row["runs"]] for row in rows] == [TARGETS] * len(rows)
    for reference in ("clean", "ground_truth"):
        run = run_of(results, "toward", reference)
        success = run["target_success"]
        assert run["targets"] == TARGETS and success["match"] == "contains"
        assert success["pairs"] == 2 * len(rows) == 12
        assert success["succeeded"] == sum(map(sum, hits))
        assert success["rate"] == pytest.approx(sum(map(sum, hits)) / 12)
        for t, target in enumerate(TARGETS):
            own = [h[t] for h in hits]
            assert success["per_target"][target] == pytest.approx(sum(own) / len(own))
        # the interval resamples items (an item's two pairs together), with the evaluation's
        # resamples: the same draws as every other interval on these items
        draws = resample_counts(len(rows), RESAMPLES, SEED)
        rates = (draws @ np.array([sum(h) for h in hits])) / (draws @ np.full(len(rows), 2.0))
        assert success["interval"] == pytest.approx(list(np.quantile(rates, [0.025, 0.975])))
    assert 0 < run_of(results, "toward")["target_success"]["rate"] < 1  # the test discriminates
    header_row = targeted_rows(results["runs"])
    assert len(header_row) == 1 and f"{success['rate']:.1%} (contains)" in header_row[0]


def first_step(per_step: list[str], done) -> int | None:
    return next((t + 1 for t, text in enumerate(per_step) if done(text)), None)


def test_iterations_count_the_steps_until_success_and_censor_the_rest(evaluated):
    results, predictions, _ = evaluated
    words = sorted((p for p in predictions if p["attack"] == "words"), key=lambda p: p["key"])

    def held(text: str) -> set[str]:
        return {k for k in KEYWORDS if re.search(rf"\b{k}\b", text.lower())}

    steps = [
        first_step(row["per_step"], lambda text, row=row: not held(text) & held(row["clean"]))
        for row in words
        if held(row["clean"])
    ]
    found = run_of(results, "words")["iterations"]
    assert found["criterion"] == "keywords_vanished" and found["keywords"] == KEYWORDS
    assert found["max_steps"] == 3 and found["pairs"] == len(steps)
    assert (
        found["censored"] == steps.count(None)
        and found["succeeded"] == len(steps) - found["censored"]
    )
    assert found["first_success"] == [steps.count(t) for t in (1, 2, 3)]
    each = run_of(results, "each")["iterations"]  # untargeted, no keywords: the output changes
    pairs = [(row, run) for row in predictions if row["attack"] == "each" for run in row["runs"]]
    changed = [
        first_step(run["per_step"], lambda t, row=row: t != row["clean"]) for row, run in pairs
    ]
    assert each["criterion"] == "changed" and each["pairs"] == len(pairs)
    assert each["first_success"] == [changed.count(t) for t in (1, 2, 3)]
    toward = run_of(results, "toward")["iterations"]
    assert toward["criterion"] == "target_appeared"
    assert toward["pairs"] + toward["already"] == 12
    shown = {row[1]: row for row in iteration_rows(results["runs"])}
    assert set(shown) == {"each", "toward", "words"}
    assert shown["words"][5].startswith(f"{found['succeeded']} of {found['pairs']}")


def step_rows(first_steps: list[int | None], max_steps: int = 4) -> list[Prediction]:
    """Rows whose outputs change from "a" to "b" after the given step (None: never)."""
    rows = []
    for i, step in enumerate(first_steps):
        outputs = ["a" if step is None or t + 1 < step else "b" for t in range(max_steps)]
        rows.append(
            Prediction(
                "m", "m", "ce", "bim", 0.1, max_steps, str(i), None, ["a"], "a", "b", 0.1, outputs
            )
        )
    return rows


def test_quartiles_of_censored_steps_are_the_smallest_step_reaching_each_share():
    found = iterations_to_success(
        step_rows([1, 1, 2, 4, None, None, None, None]), ("changed", ()), Reading("caption")
    )
    assert found is not None
    assert (found.succeeded, found.censored, found.first_success) == (4, 4, [2, 1, 0, 1])
    # 2 of 8 by step 1 (25 %), 4 of 8 by step 4 (50 %), never 75 %: not reached, not "4"
    assert found.quartiles == [1, 4, None] and found.share == 0.5


def test_vqa_answers_are_compared_normalised_and_captions_by_containment():
    vqa, caption = Reading("vqa"), Reading("caption")
    assert vqa.hit("Yes.", "yes") and not vqa.hit("yes it is", "yes")
    assert caption.hit("Visit WWW.EXAMPLE.com now", "www.example.com")
    assert keywords_in("A cat, two dogs", ["cat", "dog", "a"]) == ["cat", "a"]
    answers = ("two", "2", "three", "2 ", "three", "two")
    sample = Sample("q", "q", "x.png", "2", "prompt", answers, "how many?")
    assert distinct_references(sample) == ["two", "three"]  # "two" and "2" are one answer


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"targets": []}, "targets is empty"),
        ({"targets": ["ok", " "]}, r"targets\[1\] is an empty text"),
        ({"targets": ["x", "x"]}, "lists 'x' twice"),
        ({"targets": ["x"], "reference": "clean"}, "both targets and reference"),
        ({"keywords": ["cat"]}, "keywords but records no steps: .*record_every_step: true"),
        ({"name": "square", "keywords": ["cat"]}, "records no steps"),
        ({"reference": "every"}, "reference"),
    ],
)
def test_bad_aims_are_refused_in_one_line(spec, message):
    tree = {"attacks": [{"name": "bim", **spec}]}
    with pytest.raises(InvalidInput, match=message) as caught:
        validate_config(EvalConfig, tree)
    assert "\n" not in str(caught.value)


def test_keywords_of_the_evaluation_need_an_attack_that_records_steps():
    with pytest.raises(InvalidInput, match="no untargeted attack records them"):
        validate_config(EvalConfig, {"keywords": ["cat"], "attacks": [{"name": "bim"}]})


def test_each_ground_truth_on_data_with_one_reference_per_item_is_refused(model, tmp_path):
    one = DataConfig(name="shapes-vqa", options={"n": 3, "seed": 5})  # ten equal answers
    cfg = config(model, tmp_path, data=one, n_images=3, attack_target="each_ground_truth")
    with pytest.raises(InvalidInput, match="no item of dataset 'shapes-vqa' has more than one"):
        evaluate(cfg, progress=False)
    assert not (tmp_path / PREDICTIONS).exists()


def test_prsl_attack_refuses_several_runs_per_item(model, tmp_path):
    cfg = config(model, tmp_path, attacks=[AttackSpec(name="fgsm", targets=TARGETS)])
    with pytest.raises(InvalidInput, match="one image per item"):
        attack_to_files(cfg, model, tmp_path / "images")


def test_a_rerun_with_other_targets_or_reference_does_not_reuse_rows(model, tmp_path, scorer):
    small = {"n_images": 2, "bootstrap": {"resamples": 0}, "metrics": ["BLEU-1"]}
    fgsm = {"name": "fgsm", "eps": ["8/255"]}
    aims = {"t": {"targets": ["square"]}, "r": {"reference": "ground_truth"}}
    changes = {"t": {"targets": ["circle"]}, "r": {"reference": "clean"}}

    def specs(changed: str | None = None) -> list[AttackSpec]:
        return [
            AttackSpec(**fgsm, label=label, **(changes[label] if label == changed else aim))
            for label, aim in aims.items()
        ]

    evaluate(config(model, tmp_path, attacks=specs(), **small), progress=False, scorer=scorer)
    for changed, field in (("t", 'targets: \\["square"\\] -> \\["circle"\\]'), ("r", "reference")):
        again = config(model, tmp_path, attacks=specs(changed), **small)
        with pytest.raises(RunConflict, match=field):
            evaluate(again, progress=False, scorer=scorer)


def test_an_unquoted_yes_as_a_target_says_to_quote_it():
    """VQA targets are often yes or no, which YAML reads as booleans when unquoted."""
    from prsl.config import load_config

    with pytest.raises(InvalidInput, match=r"targets holds true, not a text.*quote them"):
        load_config(EvalConfig, None, ["attacks=[{name: pgd, eps: [8/255], targets: [yes]}]"])
