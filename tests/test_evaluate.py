"""``prsl evaluate`` end to end on a tiny captioner: the results schema, the numbers' meaning,
incremental predictions and resuming a killed run without redoing finished images."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import prsl.evaluate.loop as evaluate_module
from prsl.attacks import craft_on_surrogate, get_attack, parse_eps
from prsl.config import DataConfig
from prsl.data import evaluation_samples, load_batch, read_dataset
from prsl.data.images import to_pixels
from prsl.evaluate import PREDICTIONS, AttackSpec, EvalConfig, evaluate, read_predictions
from prsl.models import build_tiny_captioner, load_adapter
from prsl.results import RESULTS, validate_results
from prsl.train import FinetuneConfig, LossConfig, TrainConfig, finetune

METRICS = ["BLEU-1", "CIDEr", "BERTScore"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """An untrained tiny captioner over the shapes vocabulary: evaluation needs no skill."""
    texts = [t for ex in read_dataset("shapes", n=50, seed=0).examples for t in ex.references]
    texts += [ex.question for ex in read_dataset("shapes-vqa", n=50, seed=0).examples]
    texts += [a for ex in read_dataset("shapes-vqa", n=50, seed=0).examples for a in ex.answers]
    folder = tmp_path_factory.mktemp("tiny") / "tiny-untrained"
    build_tiny_captioner(texts, seed=3).save(folder)
    return str(folder)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> str:
    """A tiny captioner trained briefly on shapes, so that its captions have words to score."""
    out = tmp_path_factory.mktemp("trained") / "tiny-ce"
    cfg = FinetuneConfig(
        data=DataConfig(name="shapes", options={"n": 120, "seed": 0}),
        loss=LossConfig(name="ce"),
        train=TrainConfig(output_dir=str(out), lr=3e-3, max_steps=60, batch_size=16),
    )
    return str(finetune(cfg, progress=False).model_dir)


def config(model: str, out: Path, **overrides) -> EvalConfig:
    fields = {
        "models": [model],
        "data": DataConfig(name="shapes", options={"n": 6, "seed": 5}),
        "attacks": [
            AttackSpec(name="bim", eps=["2/255", "8/255"], steps=3, record_every_step=True),
            AttackSpec(name="fgsm", eps=["8/255"]),
        ],
        "output_dir": str(out),
        "n_images": 6,
        "batch_size": 3,
        "max_new_tokens": 6,
        "metrics": METRICS,
        "gallery": 2,
    }
    return EvalConfig(**(fields | overrides))


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]


def test_results_follow_the_schema_and_mean_what_they_say(trained_model, tmp_path, scorer):
    results = evaluate(config(trained_model, tmp_path), progress=False, scorer=scorer)
    validate_results(results)
    assert json.loads((tmp_path / RESULTS).read_text()) == results
    cells = {(r["attack"], r["eps"], r["reference"]) for r in results["runs"]}
    eps = [parse_eps("2/255"), parse_eps("8/255")]
    want = {("bim", e, ref) for e in eps for ref in ("clean", "ground_truth")}
    assert cells == want | {("fgsm", eps[1], ref) for ref in ("clean", "ground_truth")}
    for run in results["runs"]:
        assert run["model"] == "tiny-ce" and run["loss"] == "ce"
        assert run["task"] == "caption" and run["n_images"] == 6
        # the steps each attack really took: BIM's 3, and FGSM's single step
        assert run["steps"] == {"bim": 3, "fgsm": 1}[run["attack"]]
        assert run["norm"] == "linf" and run["attack_params"]["eps"] == run["eps"]
        assert list(run["clean"]) == METRICS
        for metric in METRICS:
            assert run["degradation"][metric] == pytest.approx(
                run["clean"][metric] - run["adversarial"][metric]
            )
        if run["reference"] == "clean":  # the clean caption scored against itself
            assert run["clean"]["BLEU-1"] == pytest.approx(1.0)
            assert run["clean"]["BERTScore"] == pytest.approx(1.0, abs=1e-4)
        if run["attack"] == "bim":
            assert len(run["per_step"]) == 3
            assert run["per_step"][-1] == pytest.approx(run["adversarial"])
    assert "MiniLM" in results["meta"]["bertscore_model"]
    predictions = rows(tmp_path)
    assert len(predictions) == 6 * 3  # one row per image and (attack, ε)
    for row in predictions:
        assert row["linf"] <= row["eps"] + 1e-6  # the attack stayed in its ball
    pairs = [r["gallery"] for r in predictions if "gallery" in r]
    assert len(pairs) == 2 * 3  # `gallery` pairs per (model, attack, ε)
    assert all((tmp_path / p["adversarial"]).is_file() for p in pairs)


def test_vqa_scores_answers_with_soft_accuracy(tiny_model, tmp_path, scorer):
    cfg = config(
        tiny_model,
        tmp_path,
        data=DataConfig(name="shapes-vqa", options={"n": 4, "seed": 5}),
        attacks=[AttackSpec(name="fgsm", eps=["8/255"])],
        n_images=4,
        metrics=None,
    )
    results = evaluate(cfg, progress=False, scorer=scorer)
    validate_results(results)
    by_reference = {run["reference"]: run for run in results["runs"]}
    assert set(by_reference) == {"clean", "ground_truth"}
    assert all(
        run["task"] == "vqa" and list(run["clean"]) == ["VQA-acc"] for run in by_reference.values()
    )
    assert by_reference["clean"]["clean"]["VQA-acc"] == pytest.approx(1.0)
    assert all(row["question"] for row in rows(tmp_path))


def test_a_torn_last_line_is_redone(trained_model, tmp_path, scorer):
    cfg = config(trained_model, tmp_path, attacks=[AttackSpec(name="fgsm", eps=["8/255"])])
    evaluate(cfg, progress=False, scorer=scorer)
    lines = (tmp_path / PREDICTIONS).read_text().splitlines()
    (tmp_path / PREDICTIONS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    results = evaluate(cfg, progress=False, scorer=scorer)
    keys = [r["key"] for r in rows_skipping_torn(tmp_path)]
    assert sorted(keys) == sorted(json.loads(line)["key"] for line in lines)
    assert all(run["n_images"] == 6 for run in results["runs"])


def rows_skipping_torn(out: Path) -> list[dict]:
    return read_predictions(out / PREDICTIONS)


KILLED_RUN = """
import sys
from prsl.evaluate import EvalConfig, evaluate
evaluate(EvalConfig.model_validate_json(sys.argv[1]), progress=False)
"""


def test_a_killed_run_resumes_without_redoing_finished_images(
    trained_model, tmp_path, scorer, monkeypatch
):
    cfg = config(trained_model, tmp_path, batch_size=1, n_images=6)
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, cfg.model_dump_json()])
    predictions = tmp_path / PREDICTIONS
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if predictions.exists() and predictions.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = read_predictions(predictions)
    assert 6 <= len(before) < 18, "the run should be killed midway"

    crafted = []
    real_craft = evaluate_module.craft
    monkeypatch.setattr(
        evaluate_module,
        "craft",
        lambda cell, pixels, *a, **k: (
            crafted.append(pixels.shape[0]) or real_craft(cell, pixels, *a, **k)
        ),
    )
    results = evaluate(cfg, progress=False, scorer=scorer)
    after = read_predictions(predictions)
    assert after[: len(before)] == before  # finished rows kept as they were
    cells = [(r["attack"], r["eps"], r["key"]) for r in after]
    assert len(cells) == len(set(cells)) == 18  # every cell exactly once
    images_done = {r["key"] for r in before if sum(b["key"] == r["key"] for b in before) == 3}
    assert len(crafted) <= 3 * (6 - len(images_done))  # finished images were not attacked again
    assert all(run["n_images"] == 6 for run in results["runs"])


def test_bad_input_fails_before_any_work(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="unknown attack 'bimm'"):
        evaluate(config(tiny_model, tmp_path, attacks=[AttackSpec(name="bimm")]))
    with pytest.raises(ValueError, match="no model to evaluate"):
        evaluate(config(tiny_model, tmp_path, models=[]))
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate(config(tiny_model, tmp_path, data=DataConfig(name="cocoo")))
    assert not (tmp_path / PREDICTIONS).exists()


def test_transfer_scores_images_crafted_on_the_surrogate(
    trained_model, tiny_model, tmp_path, scorer
):
    cfg = config(
        trained_model,
        tmp_path,
        surrogate=tiny_model,
        attacks=[AttackSpec(name="fgsm", eps=["8/255"])],
        n_images=4,
        batch_size=4,
    )
    results = evaluate(cfg, progress=False, scorer=scorer)
    validate_results(results)
    assert {r["attack"] for r in results["runs"]} == {"fgsm", "fgsm@tiny-untrained"}
    assert results["meta"]["surrogate"] == tiny_model
    # Independently: FGSM on the surrogate's own clean captions, captioned by the target.
    target, surrogate = load_adapter(trained_model), load_adapter(tiny_model)
    samples = evaluation_samples(read_dataset("shapes", n=6, seed=5), target.vqa_prompt)[:4]
    pixels, _, _ = load_batch(samples, target.pixel_size)
    with torch.no_grad():
        own = surrogate.generate(pixels, max_new_tokens=6)
    adv = craft_on_surrogate(get_attack("fgsm", eps=8 / 255), pixels, surrogate, own)
    with torch.no_grad():
        want = target.generate(adv, max_new_tokens=6)
    got = {r["key"]: r["adversarial"] for r in rows(tmp_path) if "@" in r["attack"]}
    assert [got[s.key] for s in samples] == want


def test_two_specs_of_one_attack_need_distinct_labels(trained_model, tmp_path, scorer):
    twice = [AttackSpec(name="bim", steps=1), AttackSpec(name="bim", steps=2)]
    with pytest.raises(ValueError, match="two attacks are named 'bim'.*distinct `label`"):
        evaluate(config(trained_model, tmp_path, attacks=twice))
    twice[1] = AttackSpec(name="bim", steps=2, label="bim-2")
    results = evaluate(config(trained_model, tmp_path, attacks=twice, n_images=2), scorer=scorer)
    assert {(r["attack"], r["steps"]) for r in results["runs"]} == {("bim", 1), ("bim-2", 2)}


@pytest.mark.parametrize("per_call", [1, 3, 7, 100])
def test_outputs_after_every_step_are_those_of_one_step_at_a_time(trained_model, per_call):
    """Per-step outputs generated across steps, ``per_call`` images per call, are each step's
    own outputs; the step equal to the final images reuses the final outputs."""
    from prsl.evaluate.crafting import generate, generate_steps
    from prsl.models import load_adapter

    adapter = load_adapter(trained_model)
    pixels = to_pixels([ex.image for ex in read_dataset("shapes", n=3, seed=8).examples], (32, 32))
    noise = torch.Generator().manual_seed(0)
    steps = [
        (pixels + 0.2 * i * torch.rand(pixels.shape, generator=noise)).clamp(0, 1) for i in range(4)
    ]
    final = steps[-1]
    one_at_a_time = [generate(adapter, step, None, 6) for step in steps]
    calls = []
    original = adapter.generate
    adapter.generate = lambda images, *a, **kw: (
        calls.append(len(images)) or original(images, *a, **kw)
    )
    got = generate_steps(adapter, steps, (final, one_at_a_time[-1]), None, 6, per_call)
    assert got == one_at_a_time
    assert sum(calls) == 3 * 3 and max(calls) <= per_call  # 3 steps of 3 images; the last reused


def test_a_bfloat16_evaluation_attacks_fp32_pixels_and_says_so(
    trained_model, tmp_path, scorer, monkeypatch
):
    loaded, real = [], evaluate_module.load_adapter
    monkeypatch.setattr(
        evaluate_module,
        "load_adapter",
        lambda *a, **kw: loaded.append(real(*a, **kw)) or loaded[-1],
    )
    cfg = config(trained_model, tmp_path, dtype="bfloat16", attacks=[AttackSpec(name="fgsm")])
    results = evaluate(cfg, progress=False, scorer=scorer)
    assert loaded and all(a.model.dtype == torch.bfloat16 for a in loaded)  # it computed in bf16
    assert results["meta"]["dtype"] == "bfloat16"
    for row in rows(tmp_path):
        assert row["linf"] <= row["eps"] + 1e-6  # the pixels and their ball stay fp32
    for run in results["runs"]:
        assert all(v == v for v in run["adversarial"].values())
