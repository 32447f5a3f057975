"""The ``results.json`` records: written once, validated on load, refused in one line.

A file of the previous version (no ``format`` field) is read when its records validate, and
refused naming that version when they do not; a damaged or foreign file is one line naming the
file and its first problem, which ``prsl report`` turns into exit code 2.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prsl.cli import app
from prsl.core.errors import InvalidInput, UserError
from prsl.report import verdict_lines
from prsl.results import (
    FORMAT,
    Comparison,
    GalleryEntry,
    Meta,
    Results,
    RunRecord,
    merge_results,
    read_results,
    validate_results,
    write_results,
)

RUN = {
    "model": "tiny-prsl",
    "loss": "prsl",
    "loss_params": {"k": 4, "weight": None},
    "train_steps": 60,
    "train_device_seconds": 4.5,
    "train_device": "cpu",
    "train_adversarial": {"attack": "pgd", "eps": 0.0314, "alpha": None, "fraction": 0.5},
    "task": "caption",
    "attack": "bim",
    "eps": 8 / 255,
    "steps": 10,
    "norm": "linf",
    "attack_params": {"alpha": 0.01, "restarts": None},
    "n_images": 8,
    "reference": "clean",
    "gradient_free": False,
    "clean": {"CIDEr": 1.25, "BLEU-4": 1},
    "adversarial": {"CIDEr": 0.5, "BLEU-4": 0.25},
    "degradation": {"CIDEr": 0.75, "BLEU-4": 0.75},
    "per_step": [{"CIDEr": 0.75, "BLEU-4": 0.5}],
    "intervals": {"degradation": {"CIDEr": [0.5, 1.0]}},
}
COMPARISON = {
    "model": "tiny-prsl",
    "baseline": "tiny-ce",
    "loss": "prsl",
    "baseline_loss": "ce",
    "task": "caption",
    "attack": "bim",
    "eps": 8 / 255,
    "norm": "linf",
    "reference": "clean",
    "metric": "CIDEr",
    "n_items": 8,
    "difference": -0.25,
    "interval": [-0.5, -0.1],
    "p_value": 0.01,
    "outcome": "less",
}
GALLERY = {
    "model": "tiny-prsl",
    "loss": "prsl",
    "attack": "bim",
    "eps": 8 / 255,
    "norm": "linf",
    "key": "img-0",
    "clean": "a red square",
    "adversarial": "a blue circle",
    "images": {"clean": "gallery/a.png", "adversarial": "gallery/b.png"},
}
META = {
    "prsl_version": "0.1.0",
    "bootstrap": {"resamples": 1000, "level": 0.95, "seed": 0, "paired": True, "baseline": None},
    "vqa_protocol": None,
    "surrogate": None,
    "items": {"looked_at": 8, "skipped": 0},
    "skipped": [],
}
PREVIOUS = {"runs": [RUN], "comparisons": [COMPARISON], "gallery": [GALLERY], "meta": META}
"""A ``results.json`` as the previous version wrote it: the same records, no ``format``."""


def _written(tmp_path, data) -> str:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_a_round_trip_gives_back_the_same_records_and_json(tmp_path):
    results = Results(
        runs=[RunRecord.model_validate(RUN)],
        comparisons=[Comparison.model_validate(COMPARISON)],
        gallery=[GalleryEntry.model_validate(GALLERY)],
        meta=Meta.model_validate(META),
    )
    path = tmp_path / "results.json"
    write_results(path, results)
    on_disk = json.loads(path.read_text())
    assert on_disk == {"format": FORMAT, **PREVIOUS}  # absent fields absent, None kept in dicts
    back = read_results(path)
    assert back == results.with_gallery_under(tmp_path)
    assert back.gallery[0].images.clean == str(tmp_path / "gallery" / "a.png")
    assert back.runs[0].interval("degradation", "CIDEr") == [0.5, 1.0]
    assert back.level == 0.95 and back.runs[0].label == "tiny-prsl (prsl)"
    assert back.runs[0].train_adversarial.attack == "pgd"


def test_a_file_of_the_previous_version_loads(tmp_path):
    results = read_results(_written(tmp_path, PREVIOUS))
    assert results.format == FORMAT
    assert results.runs[0].clean == {"CIDEr": 1.25, "BLEU-4": 1}
    assert results.comparisons[0].outcome == "less"
    assert results.meta.surrogate is None and results.meta.items.looked_at == 8  # kept as written


def test_a_previous_version_file_that_does_not_validate_is_refused_naming_the_version(tmp_path):
    run = {k: v for k, v in RUN.items() if k != "loss"}
    path = _written(tmp_path, PREVIOUS | {"runs": [run]})
    with pytest.raises(InvalidInput) as err:
        read_results(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert f"written by prsl before format {FORMAT}" in message
    assert "runs[0] lacks field 'loss'" in message and "rerun `prsl evaluate`" in message


def test_a_newer_format_is_refused(tmp_path):
    path = _written(tmp_path, PREVIOUS | {"format": FORMAT + 1})
    with pytest.raises(
        InvalidInput, match=f"written by a newer prsl \\(results format {FORMAT + 1}"
    ):
        read_results(path)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"runs": [RUN | {"colour": "red"}]}, "runs[0].colour is not a field of prsl results"),
        ({"runs": [RUN | {"steps": "10"}]}, "runs[0].steps has the wrong type"),
        ({"runs": [RUN | {"eps": True}]}, "runs[0].eps is not a finite number"),
        ({"gallery": [GALLERY | {"images": {"clean": "a.png"}}]}, "gallery[0].images lacks field"),
        ({"comparisons": [COMPARISON | {"n_items": 8.5}]}, "comparisons[0].n_items has the wrong"),
        ({"runs": [RUN | {"clean": {"CIDEr": "high"}}]}, "runs[0].clean['CIDEr'] is not a finite"),
        ({"meta": META | {"items": {"looked_at": "many"}}}, "meta.items.looked_at has the wrong"),
    ],
)
def test_an_unknown_field_or_a_wrong_type_is_refused_naming_the_field(change, said):
    with pytest.raises(InvalidInput) as err:
        validate_results({"format": FORMAT, **PREVIOUS} | change, "results.json")
    assert str(err.value).startswith(f"results.json: {said}"), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"runs": [', "is not a prsl results file (not valid JSON"),
        ('{"name": "prsl", "version": "0.1.0"}', "expected an object with a 'runs' list"),
        ("[1, 2, 3]", "expected an object with a 'runs' list"),
    ],
)
def test_prsl_report_refuses_a_damaged_or_foreign_file_in_one_line(tmp_path, text, said):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(UserError):
        read_results(path)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "report")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert said in " ".join(result.output.split()) and "Traceback" not in result.output


def test_records_given_as_dicts_are_validated_at_the_report(tmp_path):
    broken = {k: v for k, v in RUN.items() if k != "task"}
    with pytest.raises(InvalidInput, match=r"^runs\[0\] lacks field 'task'$"):
        verdict_lines([], [broken], 0.95)


def test_a_merge_annotates_and_rebases_and_writes_the_current_format(tmp_path):
    source = tmp_path / "eval"
    source.mkdir()
    _written(source, PREVIOUS)
    target = tmp_path / "merged" / "results.json"
    merged = merge_results(
        [source / "results.json"],
        target,
        {"fast": True},
        {source / "results.json": {"seed": 3, "cell": {"loss.k": 4}}},
    )
    on_disk = json.loads(target.read_text())
    assert on_disk == merged.as_json() and on_disk["format"] == FORMAT
    (run,) = read_results(target).runs
    assert (run.seed, run.cell) == (3, {"loss.k": 4})
    assert merged.comparisons[0].seed == 3 and merged.gallery[0].seed == 3
    assert on_disk["gallery"][0]["images"]["clean"] == "../eval/gallery/a.png"
    assert on_disk["meta"]["fast"] is True and on_disk["meta"]["bootstrap"]["level"] == 0.95
