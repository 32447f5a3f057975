"""The report's first line: one sentence computed from the comparisons, by rules a reader can
check (prsl.report.answer): counts, how many chance alone gives, Holm's correction, and what
changes the sentence (degenerate models, few items, attacks that change nothing, one model, no
attack). Results are built directly, so each case takes milliseconds; one case goes through
``write_report`` to show the sentence is the report's first line, with its caveats below it.
"""

from __future__ import annotations

import itertools
import math

import pytest

from prsl.evaluate.ledger import Prediction
from prsl.report import write_report
from prsl.report.answer import answer, excess_p, holm
from prsl.report.caveats import few_items_line, uninformative_line
from prsl.report.field import field_tables
from prsl.results import Bootstrap, Comparison, Meta, Results, RunRecord, write_results

ATTACKS = ("bim", "pgd", "square", "apgd")
EPSILONS = (2 / 255, 4 / 255, 8 / 255)
REFERENCES = ("clean", "ground_truth")
CELLS = [(a, e, r) for a in ATTACKS for e in EPSILONS for r in REFERENCES]  # 24


def _run(model, loss, attack, eps, reference, *, adv=0.5, n=200, task="caption", **extra):
    metric = "CIDEr" if task == "caption" else "VQA-acc"
    return RunRecord(
        model=model,
        loss=loss,
        loss_params={},
        task=task,
        attack=attack,
        eps=eps,
        steps=10,
        n_images=n,
        reference=reference,
        clean={metric: 0.9},
        adversarial={metric: adv},
        degradation={metric: 0.9 - adv},
        intervals={"adversarial": {metric: [adv - 0.1, adv + 0.1]}},
        **extra,
    )


def _comparison(model, loss, attack, eps, reference, outcome="none", p=0.5, n=200, **extra):
    difference = {"less": -0.2, "more": 0.2, "none": 0.01}[outcome]
    low, high = (difference - 0.1, difference + 0.1) if outcome != "none" else (-0.1, 0.1)
    fields = {
        "model": model,
        "baseline": "m-ce",
        "loss": loss,
        "baseline_loss": "ce",
        "task": "caption",
        "attack": attack,
        "eps": eps,
        "reference": reference,
        "metric": "CIDEr",
        "n_items": n,
        "difference": difference,
        "interval": [low, high],
        "p_value": p,
        "outcome": outcome,
    }
    return Comparison(**(fields | extra))


def _results(outcomes=None, *, n=200, contenders=(("m-prsl", "prsl"),), runs_extra=None, **kw):
    """CE and each contender under 4 attacks x 3 ε x 2 references; ``outcomes[i]`` is the
    (outcome, p) of cell i for every contender (default: no detectable difference)."""
    outcomes = outcomes or {}
    extra = runs_extra or {}
    runs, comparisons = [], []
    for model, loss in (("m-ce", "ce"), *contenders):
        for attack, eps, reference in CELLS:
            runs.append(_run(model, loss, attack, eps, reference, n=n, **extra.get(model, {})))
    for model, loss in contenders:
        given = outcomes.get(model, outcomes) if isinstance(outcomes, dict) else outcomes
        for i, cell in enumerate(CELLS):
            outcome, p = given.get(i, ("none", 0.5)) if isinstance(given, dict) else given[i]
            comparisons.append(_comparison(model, loss, *cell, outcome=outcome, p=p, n=n))
    meta = Meta(bootstrap=Bootstrap(resamples=10_000, level=0.95, **kw))
    return Results(runs=runs, comparisons=comparisons, meta=meta)


def test_a_count_near_chance_is_no_evidence_either_way():
    """The issue's own example: 3 cells one way, 1 the other, in 24 at the 95 % level."""
    outcomes = {0: ("less", 0.01), 5: ("less", 0.02), 9: ("less", 0.03), 14: ("more", 0.04)}
    assert answer(_results(outcomes)) == (
        "PRSL is more robust than CE in 3 of 24 cells, less in 1; about 1 expected by chance at "
        "the 95% level: no evidence either way on this data."
    )


def test_cells_that_survive_holms_correction_give_a_direction():
    outcomes = {0: ("less", 1e-4), 1: ("less", 1e-4), 2: ("less", 0.001), 3: ("less", 0.03)}
    assert answer(_results(outcomes)) == (
        "PRSL is more robust than CE in 4 of 24 cells, less in 0; about 1 expected by chance at "
        "the 95% level: PRSL is more robust on this data (3 cells survive Holm's correction for "
        "24 comparisons)."
    )
    worse = {i: ("more", 1e-4) for i in range(2)}
    assert "PRSL is less robust on this data (2 cells survive" in answer(_results(worse))
    both = {0: ("less", 1e-4), 1: ("more", 1e-4)}
    assert ": mixed on this data: 1 cell more robust and 1 less survive" in answer(_results(both))


def test_many_cells_one_way_without_a_surviving_one_are_a_hint():
    outcomes = {i: ("less", 0.02) for i in range(6)}  # 0.02 > 0.05/24: none survives Holm
    assert answer(_results(outcomes)).endswith(
        "more cells one way than chance alone gives, but none survive Holm's correction for 24 "
        "comparisons: a hint that PRSL is more robust, not evidence, on this data."
    )


def test_holm_matches_its_definition():
    # sorted: 0.001 <= 0.05/4, 0.004 <= 0.05/3, then 0.03 > 0.05/2 stops (both 0.03 kept)
    assert holm([0.03, 0.001, 0.03, 0.004], 0.05) == [False, True, False, True]
    assert holm([0.03, 0.001, 0.013, 0.004], 0.05) == [True] * 4  # 0.013 <= 0.025, 0.03 <= 0.05
    assert holm([0.02, 0.02], 0.05) == [True, True]  # 0.02 <= 0.025, then <= 0.05
    assert holm([0.03, 0.03], 0.05) == [False, False]


@pytest.mark.parametrize(("less", "more", "cells"), [(3, 1, 6), (2, 0, 5), (0, 4, 7), (1, 1, 4)])
def test_the_excess_test_is_the_multinomial_tail(less, more, cells):
    """Against the definition, summed over every way ``cells`` cells fall (less, more, none)."""
    alpha, excess = 0.05, abs(less - more)
    expected = 0.0
    for outcome in itertools.product((0, 1, 2), repeat=cells):
        x, y = outcome.count(0), outcome.count(1)
        if abs(x - y) >= excess:
            expected += (alpha / 2) ** (x + y) * (1 - alpha) ** (cells - x - y)
    assert excess_p(less, more, cells, alpha) == pytest.approx(min(1.0, expected), rel=1e-9)


def test_several_models_against_one_baseline_in_one_sentence():
    outcomes = {"m-prsl": {}, "m-at": {i: ("less", 1e-4) for i in range(5)}}
    results = _results(
        outcomes,
        contenders=(("m-prsl", "prsl"), ("m-at", "ce")),
        runs_extra={"m-at": {"train_adversarial": {"attack": "pgd"}}},
    )
    assert answer(results) == (
        "Against CE, PRSL is more robust in 0 of 24 cells and less in 0, CE-AT is more robust "
        "in 5 of 24 cells and less in 0; about 1 of 24 each expected by chance at the 95% "
        "level: on this data, CE-AT is more robust (5 cells survive Holm's correction), PRSL "
        "shows no evidence either way."
    )


def test_a_degenerate_baseline_leaves_no_answer():
    said = "200 of 200 clean outputs are the same text"
    results = _results(runs_extra={"m-ce": {"degenerate": said}})
    assert answer(results) == (
        "No answer: m-ce (ce) is degenerate (one output for nearly every image, or none), so the "
        "comparisons say nothing about robustness; check the training first."
    )


def test_a_degenerate_contender_is_left_out_and_named():
    results = _results(
        {"m-prsl": {}, "m-ls": {}},
        contenders=(("m-prsl", "prsl"), ("m-ls", "ls")),
        runs_extra={"m-ls": {"degenerate": "200 of 200 clean outputs are empty"}},
    )
    assert answer(results) == (
        "PRSL is more robust than CE in 0 of 24 cells, less in 0; about 1 expected by chance at "
        "the 95% level: no evidence either way on this data (m-ls (ls) left out: degenerate)."
    )


def test_few_items_change_the_sentence_and_add_the_caveat():
    results = _results(n=12)
    assert answer(results).endswith("no evidence either way on these 12 items (few: see below).")
    line = few_items_line(results.runs, results.comparisons, 0.95)
    # 1.96 * 0.5 / sqrt(12) = 0.283: the widest 95 % interval on a share of 12 items
    assert round(100 * 1.959964 * 0.5 / math.sqrt(12)) == 28 and "±28 points" in line
    assert "median width of 0.2 (caption CIDEr)" in line
    assert few_items_line(_results(n=100).runs, [], 0.95) is None


def test_attacks_that_change_no_output_make_the_results_uninformative():
    quiet = {"unchanged": 190}  # 95 % of 200 items keep their clean output
    results = _results(runs_extra={"m-ce": quiet, "m-prsl": quiet})
    assert answer(results) == (
        "PRSL is more robust than CE in 0 of 24 cells, less in 0; but the attacks barely change "
        "any output (every model keeps its clean output on at least 90% of the items in every "
        "cell), so this data cannot tell."
    )
    line = uninformative_line(results.runs)
    assert line.startswith("The attacks barely change the outputs in 12 of 12 attack × ε cells")
    assert "caption apgd at 2/255 (190/200)" in line
    # an attack that moves the baseline but not PRSL is the robustness measured, not noise
    moved = _results(runs_extra={"m-ce": {"unchanged": 20}, "m-prsl": quiet})
    assert uninformative_line(moved.runs) is None
    assert "barely" not in answer(moved)


def test_one_model_no_attack_and_no_runs():
    one = Results(
        runs=[_run("m-ce", "ce", "bim", e, "ground_truth", adv=0.9 - e * 20) for e in EPSILONS],
        meta=Meta(),
    )
    assert answer(one) == (
        "Only one model was evaluated, so nothing is compared: m-ce (ce)'s CIDEr against the "
        "ground truth falls from 0.900 to 0.273 under bim at ε=8/255 (its largest drop measured)."
    )
    clean = Results(runs=[_run("m-ce", "ce", "bim", 0.0, "ground_truth", adv=0.9)], meta=Meta())
    assert answer(clean) == (
        "Clean scores only (no attack ran at ε > 0), so robustness was not measured; clean "
        "scores: caption CIDEr: m-ce (ce) 0.900."
    )
    assert answer(Results(runs=[], meta=Meta())) == (
        "These results hold no runs: nothing was measured."
    )


def test_seeds_count_a_cell_only_when_every_seed_rejects():
    """Seed 0 very sure, seed 1 barely: the cell's p-value is seed 1's, too large for Holm."""
    base = _results({0: ("less", 1e-4)})
    comparisons = [c.updated(seed=0) for c in base.comparisons]
    second = {0: ("less", 0.04)}
    for i, c in enumerate(base.comparisons):
        outcome, p = second.get(i, ("none", 0.5))
        comparisons.append(c.updated(seed=1, outcome=outcome, p_value=p))
    runs = [r.updated(seed=s) for s in (0, 1) for r in base.runs]
    said = answer(Results(runs=runs, comparisons=comparisons, meta=base.meta))
    assert said.startswith("PRSL is more robust than CE in 1 of 24 cells, less in 0; at most")
    assert "no evidence either way" in said


def test_the_field_table_bolds_only_significant_cells():
    results = _results({3: ("less", 1e-4)})  # bim, 4/255, ground truth
    truth, own = field_tables(results.runs, results.comparisons)
    assert truth.header == ["model", "attack", "items", "clean", "ε=2/255", "ε=4/255", "ε=8/255"]
    # rows: CE's 4 attacks (apgd, bim, pgd, square), then PRSL's; bim is PRSL's second row
    assert [row[1] for row in truth.rows[4:]] == ["apgd", "bim", "pgd", "square"]
    assert truth.rows[5][5] == "**0.500 [0.400, 0.600] ▲**"
    bold = [cell for table in (truth, own) for row in table.rows for cell in row if "**" in cell]
    assert len(bold) == 1
    assert truth.rows[0][0] == "m-ce (ce) — baseline"
    assert "each attack on its own (no `worst-case` row" in truth.title


def test_with_a_worst_case_row_the_table_and_the_answer_use_it():
    results = _results()
    worst = [
        _run(m, loss, "worst-case", e, r, adv=0.1)
        for m, loss in (("m-ce", "ce"), ("m-prsl", "prsl"))
        for e in EPSILONS
        for r in REFERENCES
    ]
    compared = [
        _comparison("m-prsl", "prsl", "worst-case", e, r) for e in EPSILONS for r in REFERENCES
    ]
    results = Results(
        runs=results.runs + worst, comparisons=results.comparisons + compared, meta=results.meta
    )
    assert answer(results).startswith("PRSL is more robust than CE in 0 of 6 cells, less in 0")
    truth, _ = field_tables(results.runs, results.comparisons)
    assert [row[1] for row in truth.rows] == ["worst-case", "worst-case"]
    assert "the worst case per item over the grid's attacks" in truth.title


def test_the_report_opens_with_the_sentence_and_its_caveats(tmp_path):
    quiet = {"unchanged": 190}
    results = _results({3: ("less", 1e-4)}, n=12, runs_extra={"m-ce": quiet, "m-prsl": quiet})
    write_results(tmp_path / "results.json", results)
    paths = write_report([tmp_path / "results.json"], tmp_path / "report")
    lines = paths["markdown"].read_text().splitlines()
    assert lines[0] == answer(results) == paths["answer"]
    lead = "\n".join(lines[:12])
    assert "- Items: 12 (caption)." in lead and "- Few items: 12 (fewer than 100)" in lead
    assert "- The attacks barely change the outputs in 12 of 12" in lead
    # the one significant cell is bold in the field's table, the detailed table and the
    # comparison table, and nothing else is
    bold = [line for line in lines if "**" in line]
    assert len(bold) == 3, bold


def test_unchanged_outputs_are_counted_as_the_protocol_reads_them():
    from prsl.attacks import BIM
    from prsl.evaluate.grid import Cell
    from prsl.evaluate.scoring import score_predictions
    from prsl.metrics import Scorer
    from prsl.provenance import ModelRef

    model = ModelRef("m", "/m", "m", "f", "ce")
    answers = [("no", "yes "), ("Yes", "yes"), ("Yes.", " yes"), ("Yes", "no"), ("two", "2")]
    rows = [
        Prediction("m", "/m", "ce", "bim", 8 / 255, 10, f"k{i}", "q?", ["yes"] * 10, c, a, 0.0)
        for i, (c, a) in enumerate(answers)
    ]
    with Scorer() as scorer:
        runs, _ = score_predictions(
            rows,
            task="vqa",
            models=[model],
            cells=[Cell("bim", 8 / 255, BIM(eps=8 / 255))],
            metrics=["VQA-acc"],
            scorer=scorer,
        )
    own = next(r.record for r in runs if r.record.reference == "clean")
    # "Yes"/"yes", "Yes."/" yes" and "two"/"2" are one answer once normalised
    assert own.unchanged == 3
    # ... which is exactly what VQA accuracy against the model's own answer counts
    assert own.unchanged == round(own.adversarial["VQA-acc"] * own.n_images)
