"""Comparisons, the verdict and the gradient-masking checks: only real differences count.

A model "degrades less than the baseline" in a cell only when the paired-bootstrap interval of
the difference excludes 0. Equal scores, and differences of float noise, are never wins.
"""

from __future__ import annotations

import numpy as np
import pytest

from prsl.core.errors import InvalidInput
from prsl.evaluate.config import BootstrapConfig
from prsl.evaluate.uncertainty import (
    Resamples,
    ScoredRun,
    add_intervals,
    choose_baseline,
    compare,
    outcome,
)
from prsl.metrics.scorer import CorpusScores
from prsl.provenance import ModelRef
from prsl.report import masking_checks, verdict_lines
from prsl.report.masking import masking_summary
from prsl.report.seeds import collapse_seeds, seed_spread
from prsl.results import validate_results

CE = ModelRef("ce", "/m/ce", "tiny-ce", "f0", "ce")
PRSL = ModelRef("prsl", "/m/prsl", "tiny-prsl", "f1", "prsl", {"k": 4})
METRIC = "VQA-acc"


def _scored(model: ModelRef, clean, adversarial, *, attack="bim", eps=8 / 255) -> ScoredRun:
    clean, adversarial = np.asarray(clean, float), np.asarray(adversarial, float)
    fields = {
        "model": model.name,
        "loss": model.loss,
        "loss_params": model.loss_params,
        "task": "vqa",
        "attack": attack,
        "eps": eps,
        "steps": 10,
        "n_images": len(clean),
        "reference": "clean",
        "clean": {METRIC: float(clean.mean())},
        "adversarial": {METRIC: float(adversarial.mean())},
        "degradation": {METRIC: float(clean.mean() - adversarial.mean())},
    }
    keys = tuple(f"item-{i}" for i in range(len(clean)))

    def corpus(values):
        return CorpusScores({METRIC: float(values.mean())}, {METRIC: values.reshape(-1, 1)})

    return ScoredRun(fields, model, keys, corpus(clean), corpus(adversarial))


def _compared(ce_adv, prsl_adv, n=40):
    runs = [_scored(CE, np.ones(n), ce_adv), _scored(PRSL, np.ones(n), prsl_adv)]
    resamples = Resamples(BootstrapConfig(), seed=0)
    add_intervals(runs, resamples)
    return runs, compare(runs, CE, resamples)


def test_equal_scores_are_no_detectable_difference() -> None:
    adversarial = np.tile([0.0, 1.0], 20)
    runs, (comparison,) = _compared(adversarial, adversarial.copy())
    assert comparison["difference"] == 0 and comparison["outcome"] == "none"
    assert comparison["p_value"] == 1.0
    (line, *_) = verdict_lines([comparison], [r.fields for r in runs], 0.95)
    assert "degrades less in 0 of 1 cell, more in 0, no detectable difference in 1" in line


def test_float_noise_differences_are_no_detectable_difference() -> None:
    """1e-14 apart on every item: the interval excludes 0 (the noise is systematic), yet it is
    float noise, not an effect."""
    adversarial = np.tile([0.25, 0.75], 20)
    runs, (comparison,) = _compared(adversarial, adversarial + 1e-14)
    low, high = comparison["interval"]
    assert high < 0  # a naive "interval excludes 0" would call this a win
    assert comparison["outcome"] == "none"
    (line, *_) = verdict_lines([comparison], [r.fields for r in runs], 0.95)
    assert "no detectable difference in 1" in line


def test_a_real_difference_is_counted_with_its_direction() -> None:
    rng = np.random.default_rng(0)
    ce_adv = (rng.uniform(size=60) < 0.2).astype(float)  # CE keeps about 20 % under attack
    prsl_adv = (rng.uniform(size=60) < 0.8).astype(float)  # PRSL about 80 %
    runs, (comparison,) = _compared(ce_adv, prsl_adv, n=60)
    assert comparison["difference"] < 0 and comparison["interval"][1] < 0
    assert comparison["outcome"] == "less" and comparison["p_value"] < 0.01
    _, (reverse,) = _compared(prsl_adv, ce_adv, n=60)
    assert reverse["outcome"] == "more"
    lines = verdict_lines([comparison], [r.fields for r in runs], 0.95)
    assert lines[0].startswith("tiny-prsl (prsl) vs tiny-ce (ce), vqa, VQA-acc: degrades less in 1")
    assert "95% paired bootstrap" in lines[0]


def test_a_pair_with_a_degenerate_side_says_so_on_its_line() -> None:
    adversarial = np.tile([0.0, 1.0], 20)
    runs, (comparison,) = _compared(adversarial, adversarial.copy())
    fields = [r.fields for r in runs]
    (line, *_) = verdict_lines([comparison], fields, 0.95)
    assert "degenerate" not in line
    fields[0]["degenerate"] = "40 of 40 clean outputs are the same text"  # the baseline, CE
    (line, *_) = verdict_lines([comparison], fields, 0.95)
    assert line.endswith("But tiny-ce (ce) is degenerate (see above): these counts say nothing.")


def test_the_verdict_states_each_sides_training_cost() -> None:
    """A defense that degrades less at twice the compute is read at that price."""
    runs, (comparison,) = _compared(np.zeros(30), np.ones(30), n=30)
    fields = [r.fields for r in runs]
    assert not any("training cost" in line for line in verdict_lines([comparison], fields, 0.95))
    costs = {"tiny-ce": (10.0, 400, None), "tiny-prsl": (25.0, 600, "tiny-ce")}
    for run in fields:
        seconds, steps, start = costs[run["model"]]
        run |= {"train_device_seconds": seconds, "train_steps": steps}
        run |= {"train_started_from": start} if start else {}
    lines = verdict_lines([comparison], fields, 0.95)
    assert lines[-2] == (
        "tiny-prsl (prsl) vs tiny-ce (ce), vqa, training cost: 25.0 s (one measurement) and 600 "
        "steps, with tiny-ce it started from vs 10.0 s (one measurement) and 400 steps; seconds "
        "are measured wall-clock, a timing rather than a fixed cost (see the table of models)."
    )


def test_the_cost_is_that_of_the_task_and_a_mean_over_seeds_says_so() -> None:
    from prsl.report.verdict import _training_cost

    def run(task, seed, seconds):
        return {"model": "m", "task": task, "seed": seed, "train_steps": 100} | {
            "train_device_seconds": seconds
        }

    runs = [run("caption", 0, 10.0), run("caption", 1, 30.0), run("vqa", 0, 40.0)]
    caption = _training_cost("m", "caption", runs)
    assert (caption.seconds, caption.seeds) == (20.0, 2)
    assert caption.sd == pytest.approx(np.std([10.0, 30.0], ddof=1))
    assert caption.text().startswith("20.0 s (mean of 2 seeds' measurements, sd 14.1 s)")
    assert _training_cost("m", "vqa", runs).seconds == 40.0
    unknown = [*runs, {"model": "m", "task": "caption", "seed": 2}]  # one seed without a cost
    assert _training_cost("m", "caption", unknown) is None


def test_intervals_hold_the_point_estimate_and_are_written_per_part() -> None:
    rng = np.random.default_rng(1)
    runs, _ = _compared((rng.uniform(size=40) < 0.5).astype(float), np.ones(40) * 0.5)
    for run in runs:
        for part in ("clean", "adversarial", "degradation"):
            low, high = run.fields["intervals"][part][METRIC]
            assert low <= run.fields[part][METRIC] <= high


def test_comparisons_pair_only_the_items_both_models_have() -> None:
    ce = _scored(CE, np.ones(4), [0, 0, 1, 1])
    prsl = _scored(PRSL, np.ones(3), [1, 1, 1])
    prsl.keys = ("item-1", "item-2", "item-3")  # item-0 is missing for PRSL
    (comparison,) = compare([ce, prsl], CE, Resamples(BootstrapConfig(), seed=0))
    assert comparison["n_items"] == 3
    assert comparison["difference"] == pytest.approx(0.0 - (1 - 2 / 3))


def test_outcome_tolerates_ties_exactly() -> None:
    assert outcome(0.0, (-0.1, 0.1)) == "none"
    assert outcome(-0.2, (-0.3, -0.1)) == "less"
    assert outcome(0.2, (0.1, 0.3)) == "more"
    assert outcome(-1e-12, (-2e-12, -1e-13)) == "none"


def test_baseline_is_ce_by_default_or_the_named_model() -> None:
    assert choose_baseline([PRSL, CE], None) == CE
    assert choose_baseline([PRSL, CE], "tiny-prsl") == PRSL
    assert choose_baseline([PRSL], None) is None
    with pytest.raises(InvalidInput, match="baseline 'nope' is not one of the evaluated models"):
        choose_baseline([PRSL, CE], "nope")


def test_without_comparisons_the_verdict_says_why() -> None:
    run = _scored(CE, np.ones(3), np.zeros(3)).fields
    (line,) = verdict_lines([], [run], 0.95)
    assert "rerun `prsl evaluate`" in line
    (line,) = verdict_lines([], [run | {"intervals": {}}], 0.95)
    assert "No comparison" in line and "baseline: MODEL" in line


def test_comparisons_schema_is_validated() -> None:
    runs, comparisons = _compared(np.zeros(40), np.ones(40))
    good = {"runs": [r.fields for r in runs], "comparisons": comparisons, "meta": {}}
    validate_results(good)
    broken = dict(comparisons[0])
    del broken["p_value"]
    with pytest.raises(InvalidInput, match=r"comparisons\[0\] lacks field 'p_value'"):
        validate_results(good | {"comparisons": [broken]})
    with pytest.raises(InvalidInput, match="outcome must be one of less, more, none"):
        validate_results(good | {"comparisons": [comparisons[0] | {"outcome": "win"}]})
    with pytest.raises(InvalidInput, match="interval must be"):
        validate_results(good | {"comparisons": [comparisons[0] | {"interval": [0.2, 0.1]}]})


# --- gradient masking -------------------------------------------------------------------------


def _run(attack, eps, clean, adv, **extra) -> dict:
    return {
        "model": "tiny-prsl",
        "loss": "prsl",
        "loss_params": {},
        "task": "vqa",
        "attack": attack,
        "eps": eps,
        "steps": 10,
        "n_images": 8,
        "reference": "clean",
        "clean": {METRIC: clean},
        "adversarial": {METRIC: adv},
        "degradation": {METRIC: clean - adv},
    } | extra


def test_an_honest_model_raises_no_flag() -> None:
    runs = [
        _run("bim", 2 / 255, 1.0, 0.5),
        _run("bim", 8 / 255, 1.0, 0.0),
        _run("bim@other", 8 / 255, 1.0, 0.6, transfer_of="bim"),
        _run("square", 8 / 255, 1.0, 0.4, gradient_free=True),
    ]
    flags, checked = masking_checks(runs)
    assert flags == []
    assert [c.split(":")[0] for c in checked] == [
        "transfer vs white-box",
        "gradient-free vs gradient-based",
        "growth with ε",
    ]


def test_the_three_signs_of_masking_are_flagged() -> None:
    intervals = {"degradation": {METRIC: [0.05, 0.15]}}
    runs = [
        _run("bim", 2 / 255, 1.0, 0.95),
        _run("bim", 8 / 255, 1.0, 0.9, intervals=intervals),  # 90 % left at the largest ε
        _run("bim@other", 8 / 255, 1.0, 0.2, transfer_of="bim"),  # transfer beats white-box
        _run("square", 8 / 255, 1.0, 0.3, gradient_free=True),  # so does Square
    ]
    flags = masking_checks(runs)[0]
    assert len(flags) == 3
    said = "\n".join(flags)
    assert "bim@other (transferred) degrades VQA-acc by 0.8 at ε=8/255" in said
    assert "more than bim on the model itself (0.1)" in said
    assert "square (gradient-free) degrades VQA-acc by 0.7" in said
    assert "bim at its largest ε=8/255 leaves 90% of the clean VQA-acc" in said


def test_checks_that_cannot_run_say_so() -> None:
    flags, checked = masking_checks([_run("bim", 8 / 255, 1.0, 0.0)])
    assert flags == []
    assert "no `surrogate`" in checked[0] and "no Square" in checked[1]
    assert "not checked" in checked[2]


def test_a_degenerate_model_is_not_checked_and_says_why() -> None:
    """Results written before the ``degenerate`` field: a clean score of 0 against the model's
    own output (one text for every image) is the sign; PGD ran at two ε, so "no white-box
    attack at several ε" would be a wrong reason."""
    runs = [_run("pgd", 2 / 255, 0.0, 0.0), _run("pgd", 8 / 255, 0.0, 0.0)]
    flags, checked = masking_checks(runs)
    assert flags == []
    said = "\n".join(checked)
    assert (
        "every check: not checked for tiny-prsl (prsl): it is degenerate (its clean VQA-acc "
        "against its own output is 0)" in said
    )
    assert "several ε" not in said
    assert masking_summary(flags, checked).startswith("No check could run")
    marked = [_run("pgd", 2 / 255, 1.0, 0.0, degenerate="8 of 8 clean outputs are empty")]
    assert "it is degenerate (8 of 8 clean outputs are empty)" in masking_checks(marked)[1][0]


def test_each_skipped_check_gives_its_own_reason() -> None:
    runs = [
        _run("bim", 8 / 255, 1.0, 0.0),
        _run("square", 4 / 255, 1.0, 0.2, gradient_free=True),
        _run("bim@other", 4 / 255, 1.0, 0.2, transfer_of="bim"),
    ]
    transfer, free, growth = masking_checks(runs)[1]
    assert transfer == (
        "transfer vs white-box: not checked: bim@other of tiny-prsl (prsl), vqa, ε=4/255 (no "
        "white-box bim at that ε)"
    )
    assert free == (
        "gradient-free vs gradient-based: not checked: square of tiny-prsl (prsl), vqa, "
        "ε=4/255 (no gradient-based attack at that ε)"
    )
    assert growth == "growth with ε: not checked: bim of tiny-prsl (prsl), vqa (one ε only)"


# --- several training seeds -----------------------------------------------------------------


RUNS = [_scored(CE, np.ones(3), np.zeros(3)).fields]


def _seeded(outcome_by_seed: dict[int, tuple[str, float]]) -> list[dict]:
    _, base = _compared(np.zeros(40), np.ones(40))
    (template,) = base
    return [
        template | {"seed": seed, "outcome": outcome, "difference": difference}
        for seed, (outcome, difference) in outcome_by_seed.items()
    ]


def test_a_cell_counts_across_seeds_only_when_every_seed_agrees() -> None:
    (agree,) = collapse_seeds(_seeded({0: ("less", -0.4), 1: ("less", -0.2), 2: ("less", -0.3)}))
    assert agree["outcome"] == "less" and agree["seeds"] == 3
    assert agree["difference"] == pytest.approx(-0.3)
    assert agree["difference_sd"] == pytest.approx(0.1)
    (split,) = collapse_seeds(_seeded({0: ("less", -0.4), 1: ("none", -0.01)}))
    assert split["outcome"] == "none" and split["seed_outcomes"] == {"0": "less", "1": "none"}
    (opposed,) = collapse_seeds(_seeded({0: ("less", -0.4), 1: ("more", 0.3)}))
    assert opposed["outcome"] == "none"
    lines = verdict_lines(_seeded({0: ("less", -0.4), 1: ("none", -0.01)}), RUNS, 0.95)
    assert "degrades less in 0 of 1 cell" in lines[0]
    assert "within each of 2 training seeds; a cell counts only when every seed agrees" in lines[0]


def test_one_seed_collapses_to_itself() -> None:
    _, comparisons = _compared(np.zeros(40), np.ones(40))
    (same,) = collapse_seeds(comparisons)
    assert same == comparisons[0] | {"seeds": 1}


def test_spread_across_seeds_is_the_mean_and_sd_of_the_degradations() -> None:
    runs = [_run("bim", 8 / 255, 1.0, adv, seed=seed) for seed, adv in ((0, 0.2), (1, 0.4))]
    (spread,) = seed_spread(runs).values()
    assert (spread.mean, spread.seeds) == (pytest.approx(0.7), 2)
    assert spread.sd == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert seed_spread([_run("bim", 8 / 255, 1.0, 0.2)]) == {}


def test_masking_checks_compare_within_a_seed():
    """Seed 0: BIM degrades 5, Square 3; seed 1: BIM 1, Square 0.5. Square never beats BIM."""
    runs = [
        _run("bim", 8 / 255, 10.0, 5.0, seed=0),
        _run("square", 8 / 255, 10.0, 7.0, seed=0, gradient_free=True),
        _run("bim", 8 / 255, 10.0, 9.0, seed=1),
        _run("square", 8 / 255, 10.0, 9.5, seed=1, gradient_free=True),
    ]
    flags, _ = masking_checks(runs)
    assert not any("gradient-free" in f for f in flags)


def test_detailed_tables_keep_every_seed():
    from prsl.report import table_rows

    runs = [_run("bim", 8 / 255, 1.0, adv, seed=seed) for seed, adv in ((0, 0.32), (1, 0.40))]
    header, rows = table_rows(runs)
    assert "tiny-prsl (prsl) seed 0 adv" in header and "tiny-prsl (prsl) seed 1 adv" in header
    # both seeds, and neither bold: the higher number is not a significant difference
    assert {"0.3200", "0.4000"} <= set(rows[0])
    assert not any("**" in cell for cell in rows[0])


def test_only_a_significant_difference_is_bold_in_the_detailed_tables():
    from prsl.report import table_rows

    runs, comparisons = _compared(np.zeros(40), np.ones(40))  # PRSL keeps every answer
    _, (row,) = table_rows([r.fields for r in runs], comparisons)
    assert comparisons[0]["outcome"] == "less"
    assert [cell for cell in row if "**" in cell] == ["**+0.0000 ▲**"]  # PRSL's Δ alone
    _, (row,) = table_rows([r.fields for r in runs], [comparisons[0] | {"outcome": "none"}])
    assert not any("**" in cell for cell in row)


def test_the_spread_across_seeds_is_shown_once_per_group_of_seeds():
    from prsl.report.tables import compact_table

    runs = [_run("bim", 8 / 255, 1.0, adv, seed=seed) for seed, adv in ((0, 0.2), (1, 0.4))]
    header, rows = compact_table(runs, [])
    column = header.index(header[-1])
    assert [row[column] for row in rows] == ["+0.7000 ± 0.1414 (2 seeds)", ""]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"resamples": 10}, "resamples=10 cannot place a 95% interval's ends.*at least 100"),
        ({"level": 95}, "level is the intervals' coverage as a fraction.*e.g. 0.95"),
    ],
)
def test_a_bootstrap_too_small_to_mean_anything_is_refused(given, message):
    with pytest.raises(ValueError, match=message):
        BootstrapConfig(**given)


def test_a_direction_needs_the_p_value_too():
    assert outcome(-0.2, (-0.3, -0.1), p=0.2, level=0.95) == "none"
    assert outcome(-0.2, (-0.3, -0.1), p=0.01, level=0.95) == "less"
