"""``prsl sweep``: a K x b grid of fine-tune + evaluate cells, resumed after an interruption."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

import prsl.sweep as sweep_module
from prsl.cli import app
from prsl.core.errors import InvalidInput
from prsl.metrics import Scorer
from prsl.report import write_report
from prsl.results import validate_results
from prsl.sweep import SweepConfig, cells, run_sweep

GRID = {"loss.params.k": [2, 4], "loss.params.weight": [1e-3, 1e-2]}


def sweep_config(out) -> dict:
    return {
        "output_dir": str(out),
        "finetune": {
            "data": {"name": "shapes", "options": {"n": 48, "seed": 0}},
            "loss": {"name": "prsl", "params": {"k": 2}},
            "train": {"lr": 3e-3, "max_steps": 6, "batch_size": 8},
        },
        "evaluate": {
            "data": {"name": "shapes", "options": {"n": 3, "seed": 7}},
            "attacks": [{"name": "fgsm", "eps": ["8/255"]}],
            "n_images": 3,
            "max_new_tokens": 6,
            "metrics": ["BLEU-1", "CIDEr"],
            "gallery": 0,
        },
        "grid": GRID,
    }


class Interrupt(Exception):
    """Stands in for a crash or Ctrl-C in the middle of the sweep."""


def test_a_rerun_after_an_interruption_finishes_only_the_missing_cells(tmp_path, monkeypatch):
    cfg = SweepConfig.model_validate(sweep_config(tmp_path))
    calls = {"finetune": [], "evaluate": []}
    real_finetune, real_evaluate = sweep_module.finetune, sweep_module.evaluate

    def counting_finetune(tune, **kwargs):
        calls["finetune"].append(tune.loss.params.given())
        return real_finetune(tune, **kwargs)

    def evaluate_then_crash_on_the_third(ev, **kwargs):
        calls["evaluate"].append(ev.output_dir)
        if len(calls["evaluate"]) == 3:
            raise Interrupt
        return real_evaluate(ev, **kwargs)

    monkeypatch.setattr(sweep_module, "finetune", counting_finetune)
    monkeypatch.setattr(sweep_module, "evaluate", evaluate_then_crash_on_the_third)
    with Scorer() as scorer:
        with pytest.raises(Interrupt):
            run_sweep(cfg, progress=False, scorer=scorer)
        assert len(calls["finetune"]) == 3  # the third cell trained, then its evaluation died
        calls["finetune"].clear()
        calls["evaluate"].clear()
        results = run_sweep(cfg, progress=False, scorer=scorer)

    # Rerun: cell 3 keeps its trained model (evaluation only), cell 4 is new, 1 and 2 untouched.
    assert calls["finetune"] == [{"k": 4, "weight": 1e-2}]
    assert len(calls["evaluate"]) == 2
    validate_results(results)
    found = {(r["loss_params"]["k"], r["loss_params"]["weight"]) for r in results["runs"]}
    assert found == {(k, w) for k in GRID["loss.params.k"] for w in GRID["loss.params.weight"]}
    assert len(results["runs"]) == 4 * 2  # 4 cells x (clean, ground-truth) references
    assert json.loads((tmp_path / "results.json").read_text()) == results

    # A third run from the command line redoes nothing and writes the sensitivity plots.
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(tmp_path)))
    calls["finetune"].clear()
    calls["evaluate"].clear()
    outcome = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml")])
    assert outcome.exit_code == 0, outcome.output
    assert calls["finetune"] == [] and calls["evaluate"] == []
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    # keyed on the loss's own parameter names: prsl.k, prsl.weight
    assert {"param_caption_prsl_k.png", "param_caption_prsl_weight.png"} <= plots
    assert "param_caption_prsl_k" in (tmp_path / "report.md").read_text()


def test_bad_cells_fail_before_any_training(tmp_path):
    raw = sweep_config(tmp_path) | {"grid": {"loss.params.k": [2, 0]}}
    with pytest.raises(ValueError, match="k"):
        run_sweep(SweepConfig.model_validate(raw), progress=False)
    raw["grid"] = {"loss.params.k": []}
    with pytest.raises(ValueError, match="non-empty list"):
        run_sweep(SweepConfig.model_validate(raw), progress=False)
    raw["grid"] = {"train.lr": ["fast"]}
    with pytest.raises(ValueError, match="train.lr"):
        run_sweep(SweepConfig.model_validate(raw), progress=False)
    assert not (tmp_path / "cells").exists()


def test_grid_cells_are_the_cartesian_product_in_a_stable_order():
    assert cells({"b": [1, 2], "a": ["x"]}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]
    assert cells({}) == [{}]


def test_seeds_train_every_cell_again_and_cells_are_compared_with_the_ce_cell(tmp_path):
    config = sweep_config(tmp_path)
    prsl = {"name": "prsl", "params": {"k": 2, "weight": 1e-2}}
    config["grid"] = {"loss": [{"name": "ce"}, prsl]}
    config["seeds"] = [0, 1]
    config["evaluate"]["bootstrap"] = {"resamples": 200}
    with Scorer() as scorer:
        results = run_sweep(SweepConfig.model_validate(config), progress=False, scorer=scorer)
    validate_results(results)
    seeds = {(r["loss"], r["seed"]) for r in results["runs"]}
    assert seeds == {("ce", 0), ("ce", 1), ("prsl", 0), ("prsl", 1)}
    ce, other = sorted({r["model"] for r in results["runs"]}, key=lambda m: "prsl" in m)
    # the prsl cell against the ce cell, seed by seed: 2 seeds x 1 attack x 2 references x 2 metrics
    comparisons = results["comparisons"]
    assert len(comparisons) == 2 * 1 * 2 * 2
    assert {(c["model"], c["baseline"], c["seed"]) for c in comparisons} == {
        (other, ce, 0),
        (other, ce, 1),
    }
    assert results["meta"]["baseline"] == ce
    # the difference is the two cells' degradations apart, computed on the same items
    for c in comparisons:
        mine, base = (
            next(
                r
                for r in results["runs"]
                if (r["model"], r["seed"], r["attack"], r["reference"])
                == (m, c["seed"], c["attack"], c["reference"])
            )
            for m in (other, ce)
        )
        expected = mine["degradation"][c["metric"]] - base["degradation"][c["metric"]]
        assert c["difference"] == pytest.approx(expected, abs=1e-9)
        assert c["n_items"] == 3
    # ... and the report gathers the seeds
    report = write_report([tmp_path / "results.json"], tmp_path / "report")
    verdict = report["markdown"].read_text().split("### Comparisons")[0]
    assert "within each of 2 training seeds" in verdict


def test_sweep_seeds_and_baseline_are_checked_before_any_work(tmp_path):
    config = sweep_config(tmp_path)
    config["seeds"] = [0, 1]
    config["grid"] = GRID | {"train.seed": [0, 1]}
    with pytest.raises(ValueError, match="give the seeds once"):
        SweepConfig.model_validate(config)
    config["grid"] = GRID
    config["baseline"] = {"loss.params.k": 3}
    with pytest.raises(
        InvalidInput, match=r"sweep baseline \{'loss.params.k': 3\} picks out no cell"
    ):
        run_sweep(SweepConfig.model_validate(config), progress=False)
    assert not (tmp_path / "cells").exists()


def test_a_baseline_inside_the_evaluation_of_a_sweep_is_refused(tmp_path):
    config = sweep_config(tmp_path)
    config["evaluate"]["baseline"] = "foo"
    with pytest.raises(ValueError, match="name the baseline cell with the sweep's `baseline:`"):
        SweepConfig.model_validate(config)
