"""Fine-tuning: every loss learns, resume is exact, a kill mid-checkpoint is harmless, bad input
fails before any work, the logs hold CE and the regulariser apart, and the shipped configs validate.

Everything trains the tiny captioner on a handful of synthetic shapes images, one thread.
"""

from __future__ import annotations

import csv
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import prsl.train.checkpoint
import prsl.train.loop
import prsl.train.objectives
from interrupting import Killed, die_after_saving
from prsl.cli import app
from prsl.config import DataConfig, load_config
from prsl.core.errors import InvalidInput
from prsl.data import read_dataset
from prsl.data.registry import READERS
from prsl.evaluate import EvalConfig
from prsl.losses import get_loss
from prsl.models import LabelPadding
from prsl.models.hf import teacher_forcing_batch
from prsl.models.registry import adapter_class
from prsl.quickstart import FULL, PRSL_PARAMS
from prsl.sweep import SweepConfig
from prsl.train import (
    FinetuneConfig,
    LossConfig,
    ModelConfig,
    TinyModelConfig,
    TrainConfig,
    finetune,
)
from prsl.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from prsl.train.start_model import build_adapter

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = TinyModelConfig(hidden=32, layers=1, heads=2)
LOSS_PARAMS = {
    "ce": {},
    "prsl": {"k": 4, "weight": 1e-3},
    "drsl": {"weight": 1e-5},
    "ls": {"smoothing": 0.1},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a small shared CPU run many times faster on one thread than on several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(out: Path, loss: str = "ce", *, n: int = 8, **train) -> FinetuneConfig:
    options = {"lr": 3e-3, "batch_size": 4, "seed": 0, "log_every": 1} | train
    return FinetuneConfig(
        model=ModelConfig(tiny=TINY),
        data=DataConfig(name="shapes", options={"n": n, "seed": 0}),
        loss=LossConfig(name=loss, params=LOSS_PARAMS[loss]),
        train=TrainConfig(output_dir=str(out), **options),
    )


def read_log(out: Path) -> list[dict[str, str]]:
    with (out / "train_log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# ----------------------------------------------------------------------------- every loss learns


@pytest.mark.parametrize("loss", ["ce", "prsl", "drsl", "ls"])
def test_every_loss_brings_the_loss_down_and_logs_its_parts(tmp_path, capsys, loss):
    steps = 24
    cfg = tiny_config(tmp_path, loss, n=16, batch_size=8, max_steps=steps, scheduler="constant")
    result = finetune(cfg)

    history = result.history
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    for key in ("loss", "ce"):
        first, last = mean(h[key] for h in history[:4]), mean(h[key] for h in history[-4:])
        assert last < 0.75 * first, f"{loss}: {key} went from {first:.3f} to {last:.3f}"

    rows = read_log(tmp_path)
    assert {"step", "epoch", "loss", "ce", "regularizer", "lr", "tokens_per_s"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    assert all(float(r["tokens_per_s"]) > 0 for r in rows)
    regularizer = [float(r["regularizer"]) for r in rows]
    if loss == "ce":
        assert regularizer == [0.0] * steps
    if loss in ("prsl", "drsl"):
        # CE and the regulariser are logged apart, and they make up the objective.
        weight = LOSS_PARAMS[loss]["weight"]
        assert all(r > 0 for r in regularizer)
        for row in rows:
            expected = float(row["ce"]) + weight * float(row["regularizer"])
            assert float(row["loss"]) == pytest.approx(expected, rel=1e-5)

    console = " ".join(capsys.readouterr().out.split())
    assert f"step {steps}/{steps} loss" in console
    assert re.search(r"\(ce [\d.]+, reg [-\d.e+]+\) [\d,]+ tok/s", console), console[-300:]
    assert (result.model_dir / "model.safetensors").is_file()


def test_tiny_model_without_dropout_is_deterministic_in_training_mode(tmp_path):
    """``model.tiny.dropout: 0`` reaches every module and the saved copy other processes load;
    the encoder's pooler, which no loss reaches (and DDP would wait for), is frozen."""
    split = read_dataset("shapes", n=4, seed=0)
    cfg = ModelConfig(tiny=TinyModelConfig(hidden=32, layers=1, heads=2, dropout=0.0))
    built = build_adapter(cfg, split, base_dir=tmp_path)
    loaded = build_adapter(cfg, split, base_dir=tmp_path)  # the copy in base_dir
    pixels, texts = torch.rand(2, 3, 32, 32), ["a red circle", "there are two shapes"]
    for adapter in (built, loaded):
        assert adapter.model.config.decoder.attn_pdrop == 0.0
        assert all(m.p == 0.0 for m in adapter.model.modules() if isinstance(m, torch.nn.Dropout))
        assert not any(p.requires_grad for p in adapter.model.encoder.pooler.parameters())
        adapter.model.train()
        first, second = (adapter.logits_and_labels(pixels, texts)[0] for _ in range(2))
        assert torch.equal(first, second)
    default = build_adapter(ModelConfig(tiny=TINY), split)
    assert default.model.config.decoder.attn_pdrop == 0.1  # GPT-2's default is kept


# ----------------------------------------------------------------------------- resume

RESUME_STEPS = 6
"""40 samples in micro-batches of 5, two per step: 4 steps per epoch, so the run crosses an epoch,
checkpoint 4 ends epoch 0 and checkpoint 2 lies inside it."""


def resume_config(out: Path) -> FinetuneConfig:
    # PRSL and the model's default dropout: resume must restore the RNG as well as the weights.
    return tiny_config(
        out,
        "prsl",
        batch_size=5,
        grad_accum=2,
        max_steps=RESUME_STEPS,
        save_every=2,
        warmup_steps=2,
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """The uninterrupted reference run."""
    out = tmp_path_factory.mktemp("straight")
    finetune(resume_config(out), progress=False)
    return out


def assert_same_run(out: Path, reference: Path) -> None:
    """Same final weights (every tensor) and the same logged curve, each step once."""
    final, expected = (load_file(str(d / "final" / "model.safetensors")) for d in (out, reference))
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-7, msg=name)
    rows, reference_rows = read_log(out), read_log(reference)
    assert [int(r["step"]) for r in rows] == list(range(1, RESUME_STEPS + 1))
    for row, ref in zip(rows, reference_rows, strict=True):
        for key in ("loss", "ce", "regularizer", "lr"):
            assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-6, abs=1e-9)


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, straight_run):
    die_after_saving(monkeypatch, step=4)
    with pytest.raises(Killed):
        finetune(resume_config(tmp_path), progress=False)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    position = load_checkpoint(tmp_path / "checkpoint-4")["position"]
    spent = {"seconds": 0, "device_seconds": 0}
    assert position | spent == {"step": 4, "epoch": 0, "in_epoch": 4} | spent
    assert position["seconds"] > 0  # the compute so far travels with the checkpoint
    assert position["device_seconds"] == position["seconds"]  # one process
    assert not (tmp_path / "final").exists()

    result = finetune(resume_config(tmp_path), resume=True, progress=False)
    assert [h["step"] for h in result.history] == [5, 6]
    record = json.loads((tmp_path / "final" / "prsl_train.json").read_text())
    assert record["steps"] == RESUME_STEPS and record["compute"]["device"] == "cpu"
    assert record["compute"]["seconds"] > position["seconds"]  # both parts of the run count
    assert record["compute"]["device_seconds"] == record["compute"]["seconds"]  # one process
    assert [h["epoch"] for h in result.history] == [1, 1]
    assert_same_run(tmp_path, straight_run)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]

    # Resuming a finished run does nothing more and leaves the result alone.
    again = finetune(resume_config(tmp_path), resume=True, progress=False)
    assert again.history == []
    assert_same_run(tmp_path, straight_run)


def test_a_compute_budget_stops_the_run_once_spent_and_counts_the_start_model(tmp_path):
    """train.max_device_seconds: equal compute for defenses of different cost per step."""
    budget = 1.5
    cfg = tiny_config(
        tmp_path / "a", max_steps=100_000, max_device_seconds=budget, log_every=100_000
    )
    first = finetune(cfg, progress=False)
    record = json.loads((tmp_path / "a" / "final" / "prsl_train.json").read_text())
    spent, steps = record["compute"]["device_seconds"], record["steps"]
    assert 1 < steps < 100_000 and steps == len(first.history)
    assert budget <= spent < budget + 10 * spent / steps  # stopped at the first step past it
    assert [int(row["step"]) for row in read_log(tmp_path / "a")] == [steps]  # the last is logged

    def started_from_it(out: Path, seconds: float) -> FinetuneConfig:
        tree = cfg.model_dump()
        tree["model"] = {"name_or_path": str(tmp_path / "a" / "final")}
        tree["train"] |= {"output_dir": str(out), "max_device_seconds": seconds}
        return FinetuneConfig(**tree)

    # Starting from that model, the budget counts what it cost: a second run gets the rest.
    finetune(started_from_it(tmp_path / "b", 2 * spent), progress=False)
    second = json.loads((tmp_path / "b" / "final" / "prsl_train.json").read_text())["compute"]
    assert 2 * spent <= second["total_device_seconds"] and second["device_seconds"] < 2 * spent
    with pytest.raises(InvalidInput, match="spent before the first step.*raise the budget"):
        finetune(started_from_it(tmp_path / "c", spent / 2), progress=False)
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_usable(
    tmp_path, monkeypatch, straight_run
):
    written = prsl.train.checkpoint.save_state_dict

    def die_midway(state, directory, name):
        if directory.name == ".checkpoint-4.partial" and name == "optimizer":
            # The model file is complete, the optimiser's torn off after a few bytes.
            (directory / "optimizer.safetensors").write_bytes(b"\x08\x00\x00")
            raise Killed
        written(state, directory, name)

    monkeypatch.setattr(prsl.train.checkpoint, "save_state_dict", die_midway)
    with pytest.raises(Killed):
        finetune(resume_config(tmp_path), progress=False)
    monkeypatch.undo()

    partial = tmp_path / ".checkpoint-4.partial"
    assert (partial / "model.safetensors").is_file()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    previous = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert previous["position"]["step"] == 2
    assert previous["model"].keys() == load_file(str(partial / "model.safetensors")).keys()

    result = finetune(resume_config(tmp_path), resume=True, progress=False)
    assert [h["step"] for h in result.history] == [3, 4, 5, 6]
    assert not partial.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    assert_same_run(tmp_path, straight_run)


# ----------------------------------------------------------------------------- bad input

BAD_INPUT = [
    pytest.param(["loss.name=focal"], "unknown loss 'focal'", id="unknown-loss"),
    pytest.param(["loss.params.kk=3"], "loss 'prsl' does not take 'kk'", id="loss-param"),
    pytest.param(["loss.params.k=ten"], "k must be an integer", id="loss-param-type"),
    pytest.param(["model.family=llava"], "unknown model family 'llava'", id="unknown-family"),
    pytest.param(["model.family=blip2"], "does not fit model.name_or_path='tiny'", id="family"),
    pytest.param(["train.lr=fast"], "train.lr: Input should be a valid number", id="lr-type"),
    pytest.param(["train.max_steps=[3]"], "train.max_steps", id="steps-type"),
    pytest.param(
        ["train.batch_size=0"],
        "train.batch_size: Input should be greater than or equal to 1",
        id="batch",
    ),
    pytest.param(["model.tiny.dropout=2"], "model.tiny.dropout", id="dropout"),
    pytest.param(["data.name=cifar"], "unknown dataset 'cifar'", id="unknown-dataset"),
    pytest.param(["data.options.colour=red"], "dataset 'shapes'", id="dataset-option"),
]


@pytest.fixture
def no_model_build(monkeypatch):
    """Any bad input must fail before the model is built, let alone trained."""

    def build(*args, **kwargs):
        raise AssertionError("the model was built: the error came too late")

    monkeypatch.setattr(prsl.train.loop, "build_adapter", build)


def run_cli(*args: str):
    result = CliRunner().invoke(app, ["finetune", *args])
    return result, " ".join(result.output.split())


@pytest.mark.parametrize("overrides,message", BAD_INPUT)
def test_bad_input_on_the_command_line_fails_before_any_work(
    tmp_path, no_model_build, overrides, message
):
    out = tmp_path / "run"
    sets = [arg for item in [f"train.output_dir={out}", *overrides] for arg in ("--set", item)]
    result, output = run_cli(*sets)
    assert result.exit_code == 2, output
    assert message in output, output
    assert "Traceback" not in output
    assert not out.exists()


@pytest.mark.parametrize("overrides,message", BAD_INPUT)
def test_bad_input_through_the_python_api_fails_before_any_work(
    tmp_path, no_model_build, overrides, message
):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(message)):
        finetune(load_config(FinetuneConfig, None, [f"train.output_dir={out}", *overrides]))
    assert not out.exists()


def test_a_wrong_type_in_a_config_object_is_refused():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr="fast")
    with pytest.raises(ValueError, match="dropout"):
        TinyModelConfig(dropout=1.5)


def test_another_runs_checkpoints_need_resume(tmp_path, no_model_build):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(
        tmp_path,
        7,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scheduler_state={},
        position={"step": 7, "epoch": 0, "in_epoch": 7},
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    result, output = run_cli("--set", f"train.output_dir={tmp_path}")
    assert result.exit_code == 2, output
    assert "holds a fine-tuning run without a settings record" in output
    assert "pass --resume to continue it unchecked, --overwrite to discard it" in output
    with pytest.raises(FileExistsError, match="pass --resume"):
        finetune(tiny_config(tmp_path))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_tensorboard_requested_but_missing_is_a_clear_error(tmp_path, monkeypatch, no_model_build):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    out = tmp_path / "run"
    result, output = run_cli("--set", f"train.output_dir={out}", "--set", "train.tensorboard=true")
    assert result.exit_code == 2, output
    assert "needs the tensorboard package: pip install tensorboard" in output
    assert not out.exists()


def test_tensorboard_gets_the_training_curve(tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    finetune(tiny_config(tmp_path, "prsl", max_steps=2, tensorboard=True), progress=False)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


# ----------------------------------------------------------------------------- shipped configs


def shipped_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("accelerate_"))


def check_finetune_config(cfg: FinetuneConfig) -> None:
    """What ``finetune`` checks before opening any file: loss, reader options, model family."""
    get_loss(cfg.loss.params)
    assert cfg.data.name in READERS, cfg.data.name
    inspect.signature(READERS[cfg.data.name]).bind(**cfg.data.options)
    if cfg.model.family is not None:
        adapter_class(cfg.model.family)


def test_configs_are_shipped():
    names = {p.name for p in shipped_configs()}
    assert {
        "vitgpt2_coco_prsl.yaml",
        "vitgpt2_coco_ce.yaml",
        "blip2_vqav2_prsl.yaml",
        "blip2_vqav2_ce.yaml",
        "shapes_tiny_ce.yaml",
        "shapes_tiny_prsl.yaml",
    } <= names


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    """Each YAML is a fine-tuning, evaluation or sweep config; the first schema that fits wins."""
    errors = []
    for schema in (FinetuneConfig, EvalConfig, SweepConfig):
        try:
            cfg = load_config(schema, path)
        except ValueError as err:
            errors.append(str(err))
            continue
        if isinstance(cfg, FinetuneConfig):
            check_finetune_config(cfg)
        if isinstance(cfg, SweepConfig):
            check_finetune_config(cfg.finetune)
        return
    pytest.fail(f"{path.name} fits no config schema:\n" + "\n".join(errors))


PAPER = {
    # config: (model, loss params); the paper: lr 5e-5, 2 epochs, b and K per model
    "vitgpt2_coco": ("nlpconnect/vit-gpt2-image-captioning", {"k": 10, "start": 0, "weight": 1e-5}),
    "blip2_vqav2": ("Salesforce/blip2-opt-2.7b", {"k": 20, "start": 0, "weight": 1e-6}),
}


@pytest.mark.parametrize("setting", sorted(PAPER))
def test_paper_configs_reproduce_the_paper(setting):
    model, params = PAPER[setting]
    prsl_cfg = load_config(FinetuneConfig, CONFIGS / f"{setting}_prsl.yaml")
    ce_cfg = load_config(FinetuneConfig, CONFIGS / f"{setting}_ce.yaml")
    assert prsl_cfg.model.name_or_path == model
    assert prsl_cfg.loss.name == "prsl" and prsl_cfg.loss.params.given() == params
    assert ce_cfg.loss.name == "ce" and ce_cfg.loss.params.given() == {}
    for cfg in (prsl_cfg, ce_cfg):
        assert cfg.train.lr == 5e-5
        assert cfg.train.epochs == 2 and cfg.train.max_steps is None
    # The baseline differs from the PRSL run in its loss and where it writes, nothing else.
    assert prsl_cfg.train.output_dir != ce_cfg.train.output_dir
    same = {"loss": True, "train": {"output_dir"}}
    assert prsl_cfg.model_dump(exclude=same) == ce_cfg.model_dump(exclude=same)


@pytest.mark.parametrize("setting", sorted(PAPER))
def test_defense_configs_are_the_ce_config_with_the_defense(setting):
    """CE-AT and FARE beside CE and PRSL: one config apart from the CE run."""
    ce = load_config(FinetuneConfig, CONFIGS / f"{setting}_ce.yaml")
    at = load_config(FinetuneConfig, CONFIGS / f"{setting}_ce_at.yaml")
    fare = load_config(FinetuneConfig, CONFIGS / f"{setting}_fare.yaml")
    assert at.train.adversarial.attack == "pgd" and at.train.fare is None
    assert at.train.adversarial.model_dump()["eps"] == pytest.approx(4 / 255)
    assert fare.train.fare.model_dump()["eps"] == pytest.approx(4 / 255) and fare.train.lr == 1e-5
    same = {"train": {"output_dir", "adversarial", "fare", "lr"}}
    assert (
        at.model_dump(exclude=same) == ce.model_dump(exclude=same) == fare.model_dump(exclude=same)
    )
    assert at.train.lr == ce.train.lr


@pytest.mark.parametrize("loss,params", [("ce", {}), ("prsl", PRSL_PARAMS)])
def test_shapes_configs_mirror_the_quickstart(loss, params):
    cfg = load_config(FinetuneConfig, CONFIGS / f"shapes_tiny_{loss}.yaml")
    assert cfg.loss == LossConfig(name=loss, params=params)
    assert cfg.model == ModelConfig(name_or_path="tiny")
    assert cfg.data == DataConfig(name="shapes", options={"n": FULL.train_examples, "seed": 0})
    assert cfg.train == TrainConfig(
        output_dir=cfg.train.output_dir,
        lr=3e-3,
        max_steps=FULL.steps,
        batch_size=FULL.batch_size,
        warmup_steps=FULL.steps // 10,
        seed=0,
        log_every=20,
    )


# ------------------------------------------------------------- the authors' padded-label recipe


def test_teacher_forcing_pads_labels_with_eos_only_when_asked():
    prefixes, texts = [[1], [1, 7, 8]], [[5, 6, 4], [9]]
    ids, mask, labels = teacher_forcing_batch(prefixes, texts, end_id=2, pad_id=0)
    assert labels.tolist() == [[5, 6, 4, 2], [-100, -100, 9, 2]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    ids, mask, labels = teacher_forcing_batch(
        prefixes, texts, end_id=2, pad_id=0, padding=LabelPadding(eos=True, length=6)
    )
    assert ids.tolist() == [[1, 5, 6, 4, 0, 0], [1, 7, 8, 9, 0, 0]]
    assert labels.tolist() == [[5, 6, 4, 2, 2, 2], [-100, -100, 9, 2, 2, 2]]
    assert mask.tolist() == [[1] * 6, [1] * 6]  # the recipe passes no attention mask
    _, _, labels = teacher_forcing_batch(
        [[1]], [[5, 6, 7, 8]], end_id=2, pad_id=0, padding=LabelPadding(eos=True, length=3)
    )
    assert labels.tolist() == [[5, 6, 7]]  # cut at the length, as the recipe's tokenizer did
    _, mask, labels = teacher_forcing_batch([[1], [1]], [[5, 6], [5]], end_id=2, pad_id=0)
    assert labels.tolist() == [[5, 6, 2], [5, 2, -100]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_pad_labels_eos_counts_every_padded_position_in_training(tmp_path, monkeypatch):
    counted = []
    original = prsl.train.objectives.counted_tokens

    def spy(labels):
        counted.append((int(original(labels)), labels.numel()))
        return original(labels)

    monkeypatch.setattr(prsl.train.objectives, "counted_tokens", spy)
    finetune(tiny_config(tmp_path / "plain", n=8, max_steps=2))
    assert all(n < size for n, size in counted)  # padding is left out by default
    counted.clear()
    cfg = tiny_config(tmp_path / "eos", n=8, max_steps=2)
    data = cfg.data.model_copy(update={"pad_labels": "eos", "pad_length": 24})
    finetune(cfg.model_copy(update={"data": data}))
    # every position of every caption counts, each batch padded to 24: 4 captions x 24
    assert counted == [(4 * 24, 4 * 24)] * 2
    settings = json.loads((tmp_path / "eos" / "prsl_run.json").read_text())["settings"]
    assert settings["data"]["pad_labels"] == "eos" and settings["data"]["pad_length"] == 24


def test_pad_length_needs_pad_labels_eos_and_evaluation_refuses_both():
    with pytest.raises(ValueError, match="pad_length goes with pad_labels: eos"):
        DataConfig(name="shapes", pad_length=128)
    with pytest.raises(ValueError, match="data.pad_labels pads training batches"):
        EvalConfig(models=["m"], data={"name": "shapes", "pad_labels": "eos"})
