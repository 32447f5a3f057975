"""The command line as a user drives it: ``prsl attack`` files, ``prsl evaluate`` with overrides,
and one-line errors (exit status 2) for mistakes a user can fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prsl.cli import app
from prsl.data import evaluation_samples, load_batch, read_dataset
from prsl.models import build_tiny_captioner, load_adapter

SHAPES = ["data.name=shapes", "data.options={n: 3, seed: 2}", "n_images=3", "max_new_tokens=5"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def overrides(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    texts = [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]
    folder = tmp_path_factory.mktemp("cli") / "tiny"
    build_tiny_captioner(texts, seed=1).save(folder)
    return str(folder)


def test_attack_writes_8_bit_images_inside_the_budget(tiny_model, tmp_path):
    out = tmp_path / "adv"
    result = invoke(
        "attack",
        "--model",
        tiny_model,
        "--out",
        str(out),
        *overrides(*SHAPES, "attacks.0.name=pgd", "attacks.0.eps=[8/255]", "attacks.0.steps=3"),
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 adversarial image(s)" in result.output
    records = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["attack"] == "pgd" for r in records)
    adapter = load_adapter(tiny_model)
    samples = evaluation_samples(read_dataset("shapes", n=3, seed=2), adapter.vqa_prompt)
    clean, _, _ = load_batch(samples, adapter.pixel_size)
    for record, pixels in zip(records, clean, strict=True):
        saved = np.asarray(Image.open(out / record["file"]), dtype=np.int16)
        original = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
        assert saved.shape == original.shape
        assert np.abs(saved - original).max() <= 8  # ε = 8/255, exactly representable
        assert np.abs(saved - original).max() >= 1  # and the attack did move pixels


def test_evaluate_command_with_overrides(tiny_model, tmp_path):
    result = invoke(
        "evaluate",
        "--model",
        tiny_model,
        *overrides(
            *SHAPES,
            "attacks=[{name: fgsm, eps: [4/255]}]",
            "metrics=[VQA-acc]",
            f"output_dir={tmp_path}",
        ),
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["attack"], r["n_images"]) for r in results["runs"]} == {("fgsm", 3)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--set", "n_images=many"], "n_images"),
        (["evaluate", "--set", "attacks.0.name=bimm", "--model", "x"], "unknown attack 'bimm'"),
        (["evaluate", "--set", "nimages=3"], "nimages"),
        (["evaluate", "--config", "missing.yaml"], "missing.yaml does not exist"),
        (["finetune", "--set", "train.lr"], "must look like section.field=value"),
        (["report", "missing-results.json"], "does not exist"),
        (["sweep", "--set", "grid={loss.params.k: []}"], "non-empty list"),
        (["bench", "nosuch"], "not found"),
    ],
)
def test_user_errors_are_one_line_messages_with_status_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_quickstart_refuses_zero_seeds_before_any_work(tmp_path):
    result = invoke("quickstart", "--seeds", "0", "--out", str(tmp_path / "qs"))
    assert result.exit_code == 2
    assert "--seeds must be at least 1, got 0" in " ".join(result.output.split())
    assert not (tmp_path / "qs").exists()
