"""No silent wrong results: every run does the right thing or refuses in one line.

Each case is driven as a user drives it, through the command line: the exit status, the one
line printed (no traceback), and what is on disk afterwards (nothing written, nothing lost).
Where a Python caller meets the same mistake it gets a typed exception with the same message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import prsl.evaluate
import prsl.evaluate.loop as evaluate_loop
from prsl.cli import app
from prsl.config import DataConfig, load_config
from prsl.core.errors import InvalidInput, MissingInput, RunConflict, UserError
from prsl.core.pixels import levels_text
from prsl.data import read_dataset
from prsl.evaluate import PREDICTIONS, EvalConfig, evaluate, read_predictions
from prsl.metrics.coco import ptb_tokenize
from prsl.models import ADAPTER_INFO, VisionEncoderDecoderAdapter, build_tiny_captioner
from prsl.provenance import TrainingRecord, write_training_record
from prsl.results import RESULTS, eps_text
from prsl.train import FinetuneConfig
from test_locks_and_signals import sweep_config

SHAPES = [
    "data.name=shapes",
    "data.options={n: 3, seed: 2}",
    "n_images=3",
    "max_new_tokens=4",
    "metrics=[VQA-acc]",  # exact match: no Java, so every case here scores in milliseconds
    "attacks=[{name: fgsm, eps: [4/255]}]",
]
TUNE = [
    "data.options={n: 8, seed: 0}",
    "model.tiny={hidden: 16, layers: 1, heads: 2}",
    "loss.params={k: 2}",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.save_every=1",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def run(*args: str):
    """The CLI's exit status and its output with white space folded (so wrapping would show)."""
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())


def one_line_error(result, output: str, fragment: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in output, output


def runs_of(out: Path) -> set[int]:
    """The item counts (``n_images``) of an evaluation's runs."""
    return {r["n_images"] for r in json.loads((out / RESULTS).read_text())["runs"]}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, texts) -> str:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_captioner(texts, hidden=16, layers=1, seed=1).save(folder)
    return str(folder)


def trained_record(folder: Path, loss: str) -> None:
    record = TrainingRecord(loss=loss, loss_params={"k": 2} if loss == "prsl" else {}, steps=1)
    write_training_record(folder, record)


# ------------------------------------------------------------------ 1. two folders, one name


def test_two_models_in_folders_of_the_same_name_are_both_evaluated(tmp_path, texts):
    for parent, seed, loss in (("a", 1, "ce"), ("b", 2, "prsl")):
        folder = tmp_path / parent / "run" / "final"
        build_tiny_captioner(texts, hidden=16, layers=1, seed=seed).save(folder)
        trained_record(folder, loss)
    out = tmp_path / "eval"
    result, output = run(
        "evaluate",
        *("-m", str(tmp_path / "a/run/final"), "-m", str(tmp_path / "b/run/final")),
        *sets(*SHAPES, f"output_dir={out}"),
    )
    assert result.exit_code == 0, output
    results = json.loads((out / RESULTS).read_text())
    assert {(r["model"], r["loss"]) for r in results["runs"]} == {
        ("a/run", "ce"),
        ("b/run", "prsl"),
    }
    rows = read_predictions(out / PREDICTIONS)
    by_model = {(r["model"], r["model_path"]) for r in rows}
    assert by_model == {
        ("a/run", str((tmp_path / "a/run/final").resolve())),
        ("b/run", str((tmp_path / "b/run/final").resolve())),
    }
    assert len(rows) == 2 * 3  # every item once per model

    twice, output = run(
        "evaluate",
        "-m",
        str(tmp_path / "a/run/final"),
        "-m",
        str(tmp_path / "a/run/../run/final"),
        *sets(*SHAPES),
    )
    one_line_error(twice, output, "is given twice")


# ------------------------------------------------------------------ 2. reruns of an evaluation


@pytest.fixture
def evaluated(tmp_path, tiny) -> Path:
    out = tmp_path / "eval"
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}"))
    assert result.exit_code == 0, output
    return out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("max_new_tokens=6", "max_new_tokens: 4 -> 6"),
        ("attacks=[{name: fgsm, eps: [4/255], quantize: uint8}]", 'quantize: null -> "uint8"'),
        ("data.options={n: 3, seed: 3}", "data.options.seed: 2 -> 3"),
        ("seed=1", "seed: 0 -> 1"),
        ("attack_target=ground_truth", 'attack_target: "clean" -> "ground_truth"'),
        ("dtype=bfloat16", 'dtype: (not set) -> "bfloat16"'),
    ],
)
def test_a_rerun_with_other_settings_is_refused_naming_the_field(evaluated, tiny, change, named):
    before = snapshot(evaluated)
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}", change))
    one_line_error(result, output, named)
    assert "--overwrite" in output
    assert snapshot(evaluated) == before  # nothing lost, nothing added


def test_a_rerun_after_the_models_prompts_changed_is_refused(tmp_path, tiny, monkeypatch):
    """The same weights asked with another prompt (here an architecture's default changed by an
    upgrade; a prompt saved beside the model edited changes the model's fingerprint as well)
    give other predictions: results.json names the prompts each model was given, and a rerun
    into the folder is refused."""
    model = Path(shutil.copytree(tiny, tmp_path / "model"))
    saved = json.loads((model / ADAPTER_INFO).read_text())
    del saved["vqa_template"]  # the family's default applies
    (model / ADAPTER_INFO).write_text(json.dumps(saved))
    out = tmp_path / "eval"
    result, output = run("evaluate", "-m", str(model), *sets(*SHAPES, f"output_dir={out}"))
    assert result.exit_code == 0, output
    meta = json.loads((out / RESULTS).read_text())["meta"]
    default = VisionEncoderDecoderAdapter.default_vqa_template
    assert meta["prompts"] == {"model": {"vqa_template": default}}
    monkeypatch.setattr(VisionEncoderDecoderAdapter, "default_vqa_template", "Q: {question} A:")
    before = snapshot(out)
    result, output = run("evaluate", "-m", str(model), *sets(*SHAPES, f"output_dir={out}"))
    one_line_error(result, output, "prompts.vqa_template:")
    assert snapshot(out) == before


def test_a_refusal_is_one_short_line_with_eps_in_grey_levels(tmp_path, tiny):
    """Every item's picture is replaced and the attack changed: the line names a field per
    setting and counts the rest (not 12 digests), the cell's ε reads 4/255, not 0.0156862..."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = [f"{i:02d}.png" for i in range(12)]
    for level, name in enumerate(names):
        Image.new("L", (40, 40), 10 * level).save(folder / name)
    (folder / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f"{name},a grey square\n" for name in names)
    )
    out = tmp_path / "eval"
    data = ["data.name=imagefolder", f"data.options={{directory: {folder}}}"]
    args = ["evaluate", "-m", tiny, *sets(*SHAPES[3:], *data, f"output_dir={out}")]
    assert run(*args)[0].exit_code == 0
    for level, name in enumerate(names):
        Image.new("L", (40, 40), 250 - 10 * level).save(folder / name)
    quantized = "attacks=[{name: fgsm, eps: [4/255], quantize: uint8}]"
    result, output = run(*args, *sets(quantized, "max_new_tokens=6", "seed=1"))
    one_line_error(result, output, 'cells["fgsm eps=4/255"].quantize: null -> "uint8"; ')
    assert "max_new_tokens: 4 -> 6; seed: 0 -> 1; +12 more in items): rerun with" in output
    assert "0.0156" not in output and len(output) < 450, output
    assert "--overwrite" in output


@pytest.mark.parametrize(
    ("eps", "text"),
    [
        (8 / 255, "8/255"),
        (0.03137254901960784, "8/255"),
        (4 / 255 + 1e-12, "4/255"),
        (0.5 / 255, "0.001961"),
        (0.001, "0.001"),
        (0, "0"),
        (1.0, "1"),
    ],
)
def test_an_eps_is_shown_in_grey_levels_when_it_is_a_whole_number_of_them(eps, text):
    assert levels_text(eps) == text
    assert eps_text(eps) == text


def test_a_rerun_with_the_same_settings_does_no_work(evaluated, tiny, monkeypatch):
    crafted = []
    monkeypatch.setattr(evaluate_loop, "craft", lambda *a, **k: crafted.append(1))
    before = json.loads((evaluated / RESULTS).read_text())["runs"]
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}"))
    assert result.exit_code == 0, output
    assert crafted == []
    assert json.loads((evaluated / RESULTS).read_text())["runs"] == before


def test_fewer_images_or_another_attack_reuse_what_fits_and_report_what_was_asked(
    evaluated, tiny, monkeypatch
):
    result, _ = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}", "n_images=2"))
    assert result.exit_code == 0
    runs = json.loads((evaluated / RESULTS).read_text())["runs"]
    assert {r["n_images"] for r in runs} == {2}  # not the 3 rows the file also holds

    crafted = []
    real = evaluate_loop.craft
    monkeypatch.setattr(
        evaluate_loop,
        "craft",
        lambda cell, *a, **k: crafted.append(cell.name) or real(cell, *a, **k),
    )
    two = "attacks=[{name: fgsm, eps: [4/255]}, {name: bim, eps: [4/255], steps: 2}]"
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}", two))
    assert result.exit_code == 0, output
    assert set(crafted) == {"bim"}  # only the new cell was attacked
    runs = json.loads((evaluated / RESULTS).read_text())["runs"]
    assert {(r["attack"], r["steps"]) for r in runs} == {("fgsm", 1), ("bim", 2)}
    assert "does not ask for" not in output  # every cell it holds is in the results

    # back to the first grid: the bim cell's predictions stay, and the run says they are left out
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}"))
    assert result.exit_code == 0, output
    assert "also holds predictions of 1 cell(s) this run does not ask for (bim eps=" in output
    runs = json.loads((evaluated / RESULTS).read_text())["runs"]
    assert {r["attack"] for r in runs} == {"fgsm"}


def test_a_model_retrained_in_place_is_not_taken_for_the_old_one(evaluated, tiny, texts):
    build_tiny_captioner(texts, hidden=16, layers=1, seed=9).save(tiny)  # same folder, new weights
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}"))
    one_line_error(result, output, ".fingerprint:")


def test_overwrite_recomputes_with_the_new_settings(evaluated, tiny):
    result, output = run(
        "evaluate",
        "-m",
        tiny,
        "--overwrite",
        *sets(*SHAPES, f"output_dir={evaluated}", "max_new_tokens=6"),
    )
    assert result.exit_code == 0, output
    rows = read_predictions(evaluated / PREDICTIONS)
    assert len(rows) == 3


def test_the_python_api_raises_the_same_conflict(evaluated, tiny):
    cfg = load_config(EvalConfig, None, [*SHAPES, f"output_dir={evaluated}", "seed=4"])
    cfg = EvalConfig.model_validate({**cfg.model_dump(), "models": [tiny]})
    with pytest.raises(RunConflict, match="seed: 0 -> 4") as caught:
        evaluate(cfg, progress=False)
    assert isinstance(caught.value, FileExistsError) and isinstance(caught.value, UserError)


def test_prsl_attack_is_as_careful_and_names_files_after_their_items(tmp_path, tiny):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (40, 40), 128).save(folder / "gray.png")
    (folder / "metadata.csv").write_text("file_name,text\ngray.png,a gray square\n")
    data = ["data.name=imagefolder", f"data.options={{directory: {folder}}}", "max_new_tokens=4"]
    out = tmp_path / "adv"
    result, output = run("attack", "-m", tiny, "--out", str(out), *sets(*data))
    assert result.exit_code == 0, output
    assert (out / "gray.png").is_file() and not (out / "gray.png.png").exists()
    before = snapshot(out)
    again, output = run("attack", "-m", tiny, "--out", str(out), *sets(*data, "attacks.0.steps=3"))
    one_line_error(again, output, "steps: 10 -> 3")
    assert snapshot(out) == before
    forced, output = run(
        "attack", "-m", tiny, "--out", str(out), "--overwrite", *sets(*data, "attacks.0.steps=3")
    )
    assert forced.exit_code == 0, output and "wrote 1 adversarial image(s)" in output


def test_a_folder_of_another_command_is_refused_even_with_overwrite(evaluated, tiny, tmp_path):
    """``prsl attack`` into an evaluation's folder (or an evaluation into a fine-tune's) would
    replace the folder's record and write beside another command's output: refused, before
    ``--overwrite`` discards anything, with advice that fits."""
    before = snapshot(evaluated)
    for extra in ((), ("--overwrite",)):
        result, output = run("attack", "-m", tiny, "--out", str(evaluated), *extra, *sets(*SHAPES))
        one_line_error(result, output, "holds the output of `prsl evaluate`, not of `prsl attack`")
        assert "choose another output folder" in output and "rerun" not in output
        assert snapshot(evaluated) == before
    tuned = tmp_path / "tuned"
    result, output = run("finetune", *sets(*TUNE, f"train.output_dir={tuned}"))
    assert result.exit_code == 0, output
    before = snapshot(tuned)
    for extra in ((), ("--overwrite",)):
        result, output = run("evaluate", "-m", tiny, *extra, *sets(*SHAPES, f"output_dir={tuned}"))
        one_line_error(
            result, output, "holds the output of `prsl finetune`, not of `prsl evaluate`"
        )
        assert snapshot(tuned) == before


# ------------------------------------------------------------------ 3. --resume


@pytest.fixture
def trained(tmp_path) -> Path:
    out = tmp_path / "run"
    result, output = run("finetune", *sets(*TUNE, f"train.output_dir={out}"))
    assert result.exit_code == 0, output
    return out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("train.lr=1e-4", "train.lr: 5e-05 -> 0.0001"),
        ("train.max_steps=3", "train.max_steps: 2 -> 3"),
        ("loss.params={k: 3}", "loss.params.k: 2 -> 3"),
        ("loss={name: ce}", 'loss.name: "prsl" -> "ce"'),
        ("model.tiny={hidden: 32, layers: 1, heads: 2}", "model.tiny.hidden: 16 -> 32"),
    ],
)
def test_resume_with_other_settings_is_refused_naming_the_field(trained, change, named):
    before = snapshot(trained)
    result, output = run(
        "finetune", "--resume", *sets(*TUNE, f"train.output_dir={trained}", change)
    )
    one_line_error(result, output, named)
    assert snapshot(trained) == before


def test_resume_may_change_how_often_it_logs_and_saves(trained):
    final = snapshot(trained / "final")
    result, output = run(
        "finetune",
        "--resume",
        *sets(*TUNE, f"train.output_dir={trained}", "train.log_every=5", "train.save_every=2"),
    )
    assert result.exit_code == 0, output
    assert snapshot(trained / "final") == final  # a finished run is left as it is


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, caplog):
    out = tmp_path / "fresh"
    with caplog.at_level("WARNING"):
        result, output = run("finetune", "--resume", *sets(*TUNE, f"train.output_dir={out}"))
    assert result.exit_code == 0, output
    assert f"no checkpoint in {out}: starting fresh" in caplog.text


# ------------------------------------------------------------------ 4. numbers in YAML


@pytest.mark.parametrize("written", ["1e-5", "1.0e-5", "0.00001", "1E-5"])
def test_a_number_written_in_any_usual_form_is_a_number(tmp_path, written):
    path = tmp_path / "run.yaml"
    path.write_text(f"loss:\n  name: prsl\n  params: {{weight: {written}, k: 4}}\n")
    cfg = load_config(FinetuneConfig, path, [f"train.lr={written}"])
    assert cfg.loss.params.weight == 1e-5 and isinstance(cfg.loss.params.weight, float)
    assert cfg.train.lr == 1e-5
    evaluation = load_config(EvalConfig, None, [f"attacks=[{{name: pgd, eps: {written}}}]"])
    assert evaluation.attacks[0].eps == [1e-5]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.params={k: true}", "k must be an integer >= 1"),
        ("train.batch_size=true", "train.batch_size: Input should be a valid integer"),
        ("train.lr=fast", "train.lr: Input should be a valid number"),
    ],
)
def test_a_boolean_or_text_is_not_a_number(override, message):
    with pytest.raises(InvalidInput, match=message):
        load_config(FinetuneConfig, None, [override])


# ------------------------------------------------------------------ 5-8. one line, before any work


def test_a_missing_model_directory_or_unreachable_hub_id_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    result, output = run(
        "evaluate", "-m", str(tmp_path / "no/such/final"), *sets(*SHAPES, f"output_dir={out}")
    )
    one_line_error(result, output, "model folder")
    assert "does not exist" in output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result, output = run(
        "evaluate", "-m", "prsl-tests/no-such-model", *sets(*SHAPES, f"output_dir={out}")
    )
    one_line_error(result, output, "hub id failed")
    assert not out.exists()
    with pytest.raises(MissingInput, match="could not load model 'nope'"):
        evaluate(EvalConfig(models=["nope"], output_dir=str(out)))


def test_an_output_directory_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path, tiny):
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={taken}"))
    one_line_error(result, output, f"output_dir {taken} is a file, not a folder")
    assert taken.read_text() == "a user's file"
    # /proc refuses new folders even to root, where a chmod would not
    result, output = run("finetune", *sets(*TUNE, "train.output_dir=/proc/prsl-test/run"))
    one_line_error(result, output, "train.output_dir /proc/prsl-test/run cannot be written")


def test_malformed_yaml_names_the_file_and_line_or_the_override(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("n_images: 3\nattacks:\n  - {name: pgd, eps: [8/255}\n")
    result, output = run("evaluate", "--config", str(path))
    one_line_error(result, output, f"{path}:3:")
    result, output = run("evaluate", "--set", "attacks=[{name: pgd")
    one_line_error(result, output, "--set 'attacks=[{name: pgd'")


def test_messages_are_printed_literally_and_never_wrapped(tmp_path):
    odd = tmp_path / ("a-long-folder-name-" * 8) / "missing[v2][/].yaml"
    result, output = run("evaluate", "--config", str(odd))
    one_line_error(result, output, f"config file {odd} does not exist")
    assert f"config file {odd} does not exist" in result.output  # unwrapped, markup-free


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        ("evaluate", "n_images=0", "n_images: Input should be greater than or equal to 1"),
        ("evaluate", "batch_size=0", "batch_size: Input should be greater than or equal to 1"),
        ("evaluate", "attacks=[{name: bim, eps: [2]}]", "eps must be in [0, 1] for an L∞ ball"),
        ("evaluate", "attacks=[{name: bim, steps: 0}]", "steps must be an integer >= 1"),
        ("evaluate", "attacks=[{name: bim, norm: l2}]", "attack 'bim' does not take 'norm'"),
        ("evaluate", "attacks=[{name: fgsm, steps: 3}]", "attack 'fgsm' does not take 'steps'"),
        ("evaluate", "metrics=[BLEU, CIDEr]", "unknown metric(s) ['BLEU']"),
        ("finetune", "train.max_steps=0", "train.max_steps: Input should be greater than"),
        ("finetune", "loss.params={weight: -1}", "weight must be a finite number >= 0"),
        ("finetune", "loss.params={kk: 1}", "loss 'prsl' does not take 'kk'"),
    ],
)
def test_bad_values_fail_before_any_work(tmp_path, tiny, command, override, message):
    out = tmp_path / "out"
    where = "output_dir" if command == "evaluate" else "train.output_dir"
    models = ["-m", tiny] if command == "evaluate" else []
    base = SHAPES if command == "evaluate" else TUNE
    result, output = run(command, *models, *sets(*base, f"{where}={out}", override))
    one_line_error(result, output, message)
    assert not out.exists()


def test_datasets_that_leave_nothing_to_do_fail_before_any_work(tmp_path, tiny):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_text("not an image")
    (folder / "metadata.csv").write_text("file_name,text\nbroken.png,a caption\n")
    out = tmp_path / "out"
    data = ["data.name=imagefolder", f"data.options={{directory: {folder}}}"]
    result, output = run("evaluate", "-m", tiny, *sets(*data, f"output_dir={out}"))
    one_line_error(result, output, "none of the 1 images of dataset 'imagefolder' can be read")
    result, output = run("finetune", *sets(*TUNE, *data, f"train.output_dir={out}"))
    one_line_error(result, output, "none of the 1 images")
    as_file = ["data.name=imagefolder", f"data.options={{directory: {folder / 'metadata.csv'}}}"]
    result, output = run("evaluate", "-m", tiny, *sets(*as_file, f"output_dir={out}"))
    one_line_error(result, output, "is a file, not a folder")
    assert not out.exists()


# ------------------------------------------------------------------ 9. skip accounting


@pytest.fixture
def half_broken(tmp_path) -> Path:
    """Two readable images, one broken file, one missing file and one empty caption."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, level in (("a.png", 60), ("b.png", 200)):
        Image.new("L", (40, 40), level).save(folder / name)
    (folder / "broken.png").write_text("not an image")
    (folder / "metadata.csv").write_text(
        "file_name,text\na.png,a dark square\na.png,\nb.png,a light square\n"
        "broken.png,a caption\nmissing.png,a caption\n"
    )
    return folder


def test_each_bad_item_is_counted_once_in_results_console_and_report(
    tmp_path, tiny, texts, half_broken, monkeypatch
):
    second = tmp_path / "second"
    build_tiny_captioner(texts, hidden=16, layers=1, seed=5).save(second)
    out = tmp_path / "eval"
    data = ["data.name=imagefolder", f"data.options={{directory: {half_broken}}}"]
    args = [
        "evaluate",
        "-m",
        tiny,
        "-m",
        str(second),
        *sets(*SHAPES[3:], *data, f"output_dir={out}"),
    ]
    result, output = run(*args)
    assert result.exit_code == 0, output
    meta = json.loads((out / RESULTS).read_text())["meta"]
    assert meta["items"] == {"looked_at": 4, "skipped": 2}  # a, b, broken, missing
    reasons = sorted(s["reason"].split(" (")[0] for s in meta["skipped"])
    assert reasons == ["image file not found", "unreadable image"]
    assert [s["reason"] for s in meta["dropped_references"]] == ["empty caption (line 3)"]
    assert "2 of 4 items skipped: 1 image file not found, 1 unreadable image" in output
    assert "1 empty caption dropped from items that were kept" in output
    # one count: the broken image, found when decoded, is not counted as usable
    assert "2 of the 4 item(s) looked at are usable" in output
    assert runs_of(out) == {2}

    report = tmp_path / "report"
    assert run("report", str(out / RESULTS), "--out", str(report))[0].exit_code == 0
    assert "2 of 4 items skipped" in (report / "report.md").read_text()

    crafted = []
    monkeypatch.setattr(evaluate_loop, "craft", lambda *a, **k: crafted.append(1))
    result, output = run(*args)
    assert result.exit_code == 0, output
    assert crafted == []  # a rerun of a finished evaluation attacks nothing, broken image or not


def test_fine_tuning_counts_a_bad_item_once_however_many_epochs(tmp_path, half_broken):
    out = tmp_path / "run"
    data = ["data.name=imagefolder", f"data.options={{directory: {half_broken}}}"]
    result, output = run(
        "finetune",
        *sets(*TUNE, *data, "train.max_steps=6", "train.batch_size=2", f"train.output_dir={out}"),
    )
    assert result.exit_code == 0, output
    record = json.loads((out / "final" / "prsl_train.json").read_text())
    assert len(record["skipped"]) == 2  # broken.png and missing.png, once each over 3 epochs
    assert "2 of 4 items skipped" in output


# ------------------------------------------------------------------ 10. the rest


def test_ctrl_c_says_what_was_kept_and_exits_130(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prsl.evaluate, "evaluate", interrupted)
    result, output = run("evaluate", "-m", "x")
    assert result.exit_code == 130
    assert "interrupted:" in output and "run the same command again to resume" in output


def test_a_real_failure_keeps_its_traceback_and_out_of_memory_gets_a_hint(monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(prsl.evaluate, "evaluate", failing)
    result, _ = run("evaluate", "-m", "x")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(prsl.evaluate, "evaluate", out_of_memory)
    result, output = run("evaluate", "-m", "x")
    assert result.exit_code == 1 and isinstance(result.exception, torch.OutOfMemoryError)
    assert "hint: out of memory: lower batch_size" in output


def test_the_java_tokenizer_prints_nothing_on_the_console(capfd):
    assert ptb_tokenize(["A dog, running.", "two cats"]) == {
        "A dog, running.": "a dog running",
        "two cats": "two cats",
    }
    captured = capfd.readouterr()
    assert "PTBTokenizer" not in captured.err + captured.out


def test_a_data_config_names_an_unknown_reader_or_option_at_load():
    with pytest.raises(ValueError, match="unknown dataset 'cocoo'"):
        DataConfig(name="cocoo")
    with pytest.raises(InvalidInput, match="dataset 'shapes'.*accepted options"):
        load_config(EvalConfig, None, ["data.options={colour: red}"])


# ------------------------------------------------------------------ found by trying it as a user


def test_an_edited_caption_or_replaced_image_is_not_reused(tmp_path, tiny, half_broken):
    out = tmp_path / "eval"
    data = ["data.name=imagefolder", f"data.options={{directory: {half_broken}}}"]
    args = ["evaluate", "-m", tiny, *sets(*SHAPES[3:], *data, f"output_dir={out}")]
    assert run(*args)[0].exit_code == 0
    metadata = half_broken / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("a light square", "a bright square"))
    result, output = run(*args)
    one_line_error(result, output, 'items["b.png"]')
    Image.new("L", (40, 40), 90).save(half_broken / "a.png")  # same name, new picture
    result, output = run(*args, "--overwrite")
    assert result.exit_code == 0, output


def test_models_whose_names_slug_alike_keep_their_own_gallery(tmp_path, texts):
    paths = [tmp_path / "a" / "x", tmp_path / "b" / "x", tmp_path / "a-x"]
    for seed, path in enumerate(paths):
        build_tiny_captioner(texts, hidden=16, layers=1, seed=seed).save(path)
    out = tmp_path / "eval"
    models = [arg for path in paths for arg in ("-m", str(path))]
    result, output = run("evaluate", *models, *sets(*SHAPES, f"output_dir={out}", "gallery=1"))
    assert result.exit_code == 0, output
    gallery = json.loads((out / RESULTS).read_text())["gallery"]
    files = [row["images"]["adversarial"] for row in gallery]
    assert len(gallery) == 3 and len(set(files)) == 3


def test_a_report_of_two_files_with_the_same_cell_is_refused(evaluated, tmp_path, tiny):
    other = tmp_path / "other"
    assert run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={other}"))[0].exit_code == 0
    result, output = run(
        "report", str(evaluated / RESULTS), str(other / RESULTS), "--out", str(tmp_path / "r")
    )
    one_line_error(result, output, "report them separately")
    assert not (tmp_path / "r").exists()


def test_a_step_whose_images_are_all_unreadable_is_not_taken(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (32, 32), 80).save(folder / "a.png")
    for name in ("b.png", "c.png", "d.png"):
        (folder / name).write_text("not an image")
    rows = "".join(f"{n},a caption\n" for n in ("a.png", "b.png", "c.png", "d.png"))
    (folder / "metadata.csv").write_text("file_name,text\n" + rows)
    out = tmp_path / "run"
    data = ["data.name=imagefolder", f"data.options={{directory: {folder}}}"]
    tune = [*TUNE, *data, "train.batch_size=1", "train.max_steps=3", "train.log_every=1"]
    result, output = run("finetune", *sets(*tune, f"train.output_dir={out}"))
    assert result.exit_code == 0, output
    log = (out / "train_log.csv").read_text().splitlines()[1:]
    assert len(log) == 3  # three real steps, on the one readable image
    assert all(float(row.split(",")[-1]) > 0 for row in log)  # never a 0 tok/s "step"
    assert "no optimizer step was taken" in output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.options={n: '3'}", "option n must be int; got '3'"),
        ("data.options={n: 3.7}", "option n must be int; got 3.7"),
        ("data={name: imagefolder, options: {directory: 5}}", "option directory must be"),
    ],
)
def test_a_reader_option_of_the_wrong_type_is_one_line(tmp_path, tiny, override, message):
    out = tmp_path / "eval"
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}", override))
    one_line_error(result, output, message)


def test_config_files_that_are_not_yaml_mappings_are_one_line(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    one_line_error(*run("evaluate", "--config", str(binary)), "is not UTF-8 text")
    one_line_error(*run("evaluate", "--config", str(tmp_path)), "is a folder; give a YAML file")
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("attacks:\n  - {name: pgd, eps: 8/255, eps: 4/255}\n")
    one_line_error(*run("evaluate", "--config", str(repeated)), "the key 'eps' is given twice")


def test_a_damaged_model_folder_is_one_line_and_leaves_nothing(tmp_path, tiny):
    from shutil import copytree

    damaged = {}
    for kind in ("config", "weights", "truncated"):
        folder = copytree(tiny, tmp_path / kind)
        damaged[kind] = folder
    (damaged["config"] / "config.json").write_text("{not json")
    (damaged["weights"] / "model.safetensors").unlink()
    weights = damaged["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    for kind, message in (
        ("config", "cannot be read"),
        ("weights", "holds no weights"),
        ("truncated", "damaged or incomplete files"),
    ):
        out = tmp_path / f"eval-{kind}"
        result, output = run(
            "evaluate", "-m", str(damaged[kind]), *sets(*SHAPES, f"output_dir={out}")
        )
        one_line_error(result, output, message)
        assert not out.exists(), kind


def test_a_surrogate_of_another_size_is_refused_before_anything_is_written(tmp_path, tiny, texts):
    small = tmp_path / "small"
    build_tiny_captioner(texts, image_size=16, patch_size=8, hidden=16, layers=1).save(small)
    out = tmp_path / "eval"
    result, output = run(
        "evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}", f"surrogate={small}")
    )
    one_line_error(result, output, "transfer needs the same size")
    assert not out.exists()


def test_prsl_attack_overwrite_removes_its_old_images(tmp_path, tiny):
    out = tmp_path / "adv"
    assert run("attack", "-m", tiny, "--out", str(out), *sets(*SHAPES))[0].exit_code == 0
    assert len(list(out.glob("*.png"))) == 3
    result, output = run(
        "attack", "-m", tiny, "--out", str(out), "--overwrite", *sets(*SHAPES, "n_images=2")
    )
    assert result.exit_code == 0, output
    assert len(list(out.glob("*.png"))) == 2


def test_a_sweep_conflict_gives_advice_a_sweep_can_follow(tmp_path):
    path = sweep_config(tmp_path, tmp_path / "sweep")
    assert run("sweep", "--config", str(path))[0].exit_code == 0
    result, output = run("sweep", "--config", str(path), "--set", "finetune.train.lr=1e-3")
    one_line_error(result, output, "train.lr: 5e-05 -> 0.001")
    assert "give the sweep another output_dir, or delete" in output and "--resume" not in output
    assert "train.output_dir" not in output  # the cell's own fix is not the user's to take


def test_usage_mistakes_are_one_line_too(capsys):
    from prsl.cli import run as console_script

    for argv, message in (
        (["evaluate", "--nosuch"], "No such option: --nosuch"),
        (["bogus"], "No such command 'bogus'"),
        (["report"], "Missing argument 'results'"),
    ):
        with pytest.raises(SystemExit) as exit_status:
            console_script(argv)
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_pgd_records_every_gradient_step_of_its_restarts():
    spec = load_config(EvalConfig, None, ["attacks=[{name: pgd, steps: 2, restarts: 3}]"])
    attack = spec.attacks[0].attacks[0]
    assert attack.iterations == 6 and attack.recorded()["restarts"] == 3


def test_finetune_refuses_a_folder_that_holds_something_else(tmp_path, tiny):
    result, output = run("finetune", *sets(*TUNE, f"train.output_dir={tiny}"))
    one_line_error(result, output, "holds other files, not a prsl fine-tuning run")


# ------------------------------------------------------------------ a collapsed model


def test_a_collapsed_model_is_said_first_and_its_checks_give_the_true_reason(
    tmp_path, tiny, monkeypatch
):
    """Every image gets "a green a green a green" (a model collapsed after a few steps): the
    log and the report say so before anything else, and no check pretends a reason of its own."""
    collapsed = "a green a green a green"
    monkeypatch.setattr(evaluate_loop, "generate", lambda _, pixels, *a: [collapsed] * len(pixels))
    out = tmp_path / "eval"
    grid = "attacks=[{name: pgd, eps: [2/255, 4/255], steps: 1}]"
    five = ["data.name=shapes", "data.options={n: 5, seed: 2}", "n_images=5", "max_new_tokens=4"]
    result, output = run(
        "evaluate", "-m", tiny, *sets(*five, "metrics=[CIDEr]", grid, f"output_dir={out}")
    )
    assert result.exit_code == 0, output
    said = 'is degenerate (5 of 5 clean outputs are the same text ("a green a green a green")'
    assert said in output and "its clean CIDEr against its own output is 0)" in output
    runs = json.loads((out / RESULTS).read_text())["runs"]
    assert all("5 of 5 clean outputs" in r["degenerate"] for r in runs)

    result, output = run("report", str(out), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, output
    md = (tmp_path / "report" / "report.md").read_text()
    assert said in md and md.index(said) < md.index("## Details")  # before any table
    assert "not checked for tiny (pretrained): it is degenerate (5 of 5" in md
    assert "several ε" not in md and "No sign of masking found" not in md
    assert "No check could run" in md


def test_too_few_items_judge_no_model_degenerate(tmp_path, tiny, monkeypatch):
    """On one item CIDEr is 0 whatever the output says, and a few equal outputs prove little:
    below DEGENERATE_MIN_ITEMS nothing is called degenerate."""
    monkeypatch.setattr(evaluate_loop, "generate", lambda _, pixels, *a: ["a green"] * len(pixels))
    out = tmp_path / "eval"
    result, output = run(
        "evaluate", "-m", tiny, *sets(*SHAPES[:4], "metrics=[CIDEr]", f"output_dir={out}")
    )
    assert result.exit_code == 0, output
    assert "degenerate" not in output
    assert not any(r.get("degenerate") for r in json.loads((out / RESULTS).read_text())["runs"])


def test_resume_after_the_models_prompts_changed_is_refused(tmp_path, tiny):
    """Fine-tuning a saved model records the prompts it trains with (its own, or its
    architecture's defaults): resuming after they changed (a prompt saved beside the model
    edited, or a default changed by an upgrade) would mix two prompts in one run."""
    model = Path(shutil.copytree(tiny, tmp_path / "model"))
    out = tmp_path / "run"
    tune = [*TUNE, f"train.output_dir={out}", f"model.name_or_path={model}"]
    result, output = run("finetune", *sets(*tune))
    assert result.exit_code == 0, output
    saved = json.loads((model / ADAPTER_INFO).read_text())
    (model / ADAPTER_INFO).write_text(json.dumps({**saved, "vqa_template": "Q: {question} A:"}))
    before = snapshot(out)
    result, output = run("finetune", "--resume", *sets(*tune))
    one_line_error(result, output, "model.prompts.vqa_template:")
    assert snapshot(out) == before


def test_an_evaluations_vqa_template_is_every_models_and_is_recorded(tmp_path, tiny):
    """A dataset's own VQA instruction (VizWiz's "answer unanswerable") for every model: recorded
    as the prompt each model was given, so a rerun without it is refused; one without the
    question's place is refused before any work."""
    out = tmp_path / "eval"
    template = "{question} When unsure, answer unanswerable."
    asked = [*SHAPES, f"output_dir={out}", f"vqa_template='{template}'"]
    result, output = run("evaluate", "-m", tiny, *sets(*asked))
    assert result.exit_code == 0, output
    meta = json.loads((out / RESULTS).read_text())["meta"]
    assert meta["prompts"] == {"tiny": {"vqa_template": template}}
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}"))
    one_line_error(result, output, "prompts.vqa_template:")
    result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, "vqa_template='Q - A'"))
    one_line_error(result, output, "vqa_template must contain {question}")


def test_a_rerun_after_the_models_input_settings_changed_is_refused(tmp_path, tiny):
    """prsl_adapter.json (prompts, input size or canvas) and the processor's settings decide what
    the model is given: edited in place, the model is another, and a rerun is refused."""
    model = Path(shutil.copytree(tiny, tmp_path / "model"))
    out = tmp_path / "eval"
    result, output = run("evaluate", "-m", str(model), *sets(*SHAPES, f"output_dir={out}"))
    assert result.exit_code == 0, output
    processor = model / "preprocessor_config.json"
    settings = json.loads(processor.read_text())
    processor.write_text(json.dumps({**settings, "do_normalize": not settings["do_normalize"]}))
    before = snapshot(out)
    result, output = run("evaluate", "-m", str(model), *sets(*SHAPES, f"output_dir={out}"))
    one_line_error(result, output, "fingerprint:")
    assert snapshot(out) == before
