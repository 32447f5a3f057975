"""FARE (``train.fare``): the vision encoder alone is fine-tuned to keep attacked images where
the original encoder put the clean ones.

- every weight outside the encoder is bit-identical after training, and the whole model is saved;
- on a tiny encoder, the worst-case embedding distance under the same PGD drops;
- the record names the training ``fare`` with its ε, steps and α; bad settings are refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prsl.config import DataConfig
from prsl.core.errors import InvalidInput
from prsl.data import read_dataset
from prsl.data.images import to_pixels
from prsl.models import load_adapter
from prsl.train import (
    FinetuneConfig,
    LossConfig,
    ModelConfig,
    TinyModelConfig,
    TrainConfig,
    finetune,
)
from prsl.train.config import FareConfig
from prsl.train.fare import embedding_distance

TINY = TinyModelConfig(hidden=32, layers=1, heads=2, dropout=0.0)
FARE = {"eps": 8 / 255, "steps": 3}


def config(out: Path, **train) -> FinetuneConfig:
    options = {"lr": 1e-3, "batch_size": 8, "seed": 0, "log_every": 1, "max_steps": 30} | train
    return FinetuneConfig(
        model=ModelConfig(tiny=TINY),
        data=DataConfig(name="shapes", options={"n": 64, "seed": 0}),
        loss=LossConfig(name="ce"),
        train=TrainConfig(output_dir=str(out), fare=FARE, **options),
    )


def worst_distance(adapter, reference, pixels) -> float:
    """The mean embedding distance under a fresh PGD (the evaluation's attack, not training's)."""
    attack = FareConfig(eps=8 / 255, steps=10).built
    with torch.no_grad():
        target = adapter.image_features(pixels, encoder=reference)

    def distance(images):
        return embedding_distance(adapter.image_features(images), target)

    adapter.model.eval()
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    adv = attack(pixels, distance, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return float(distance(adv).mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("fare")
    cfg = config(out)
    # the starting point: the same tiny model, built as finetune builds it, saved untouched
    start = config(tmp_path_factory.mktemp("start"), max_steps=1, lr=1e-12)
    finetune(start, progress=False)
    finetune(cfg, progress=False)
    return out, Path(start.train.output_dir)


def test_fare_changes_the_encoder_only(trained):
    out, start = trained
    before = load_file(str(start / "final" / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert before.keys() == after.keys()
    encoder = [k for k in after if k.startswith("encoder.")]
    others = [k for k in after if not k.startswith("encoder.")]
    assert encoder and others
    assert all(torch.equal(before[k], after[k]) for k in others)
    assert any(not torch.equal(before[k], after[k]) for k in encoder)


def test_fare_lowers_the_embedding_distance_under_attack(trained):
    out, start = trained
    original = load_adapter(str(start / "final"))
    robust = load_adapter(str(out / "final"))
    reference = copy.deepcopy(original.vision_encoder())
    held_out = read_dataset("shapes", n=16, seed=99).examples
    pixels = to_pixels([ex.image for ex in held_out], original.pixel_size)
    before = worst_distance(original, reference, pixels)
    after = worst_distance(robust, reference, pixels)
    print(f"worst-case embedding distance: original {before:.4f}, FARE {after:.4f}")
    assert after < 0.7 * before, (before, after)


def test_the_record_names_fare_with_its_settings(trained):
    out, _ = trained
    record = json.loads((out / "final" / "prsl_train.json").read_text())
    assert record["loss"] == "fare"
    assert record["loss_params"]["eps"] == pytest.approx(8 / 255)
    assert record["loss_params"]["steps"] == 3 and record["steps"] == 30


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"fare": {"eps": 2 / 255, "norm": "l2"}}, "takes eps, steps and alpha, not norm"),
        ({"fare": {"eps": -1}}, "fare\n  Value error, eps must be"),
        (
            {"fare": {}, "adversarial": {"attack": "pgd"}},
            "adversarial .* and fare .* are two trainings",
        ),
    ],
)
def test_bad_fare_settings_are_refused_when_loaded(train, message):
    with pytest.raises((ValueError, InvalidInput), match=message):
        TrainConfig(**train)


def test_fare_parameters_are_the_attack_s_typed_fields():
    fare = FareConfig(eps="4/255", steps=2, alpha="1/255")
    assert (fare.eps, fare.steps, fare.alpha) == (4 / 255, 2, 1 / 255)
    assert fare.built.name == "pgd" and fare.built.norm == "linf"
    assert fare.model_dump() == {"eps": 4 / 255, "steps": 2, "alpha": 1 / 255}
    for bad in ({"steps": True}, {"steps": 2.0}, {"alpha": 0}, {"eps": "a/b"}):
        with pytest.raises((ValueError, InvalidInput), match=f"{next(iter(bad))} must be"):
            FareConfig(**bad)


def test_unset_fare_parameters_run_at_the_documented_defaults():
    fare = TrainConfig(fare={}).fare
    assert fare.built.eps == fare.eps == 4 / 255 and fare.built.steps == fare.steps == 10
    assert fare.model_dump() == {"eps": 4 / 255, "steps": 10, "alpha": 1 / 255}
    assert FareConfig(eps=2 / 255).model_dump()["alpha"] == 0.5 / 255


def test_fare_under_sharded_training_is_refused_naming_the_launch_that_works():
    from accelerate.utils import DistributedType

    from prsl.train.fare import check_fare

    with pytest.raises(InvalidInput, match="data-parallel .*--multi_gpu.*not under FSDP"):
        check_fare(ModelConfig(tiny=TINY), DistributedType.FSDP)


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            "{step: 3}",
            "error: invalid configuration: train.fare: takes eps, steps and alpha, not step",
        ),
        ("{eps: -1}", "error: invalid configuration: train.fare: eps must be a finite number >= 0"),
    ],
)
def test_a_bad_fare_setting_is_one_line_naming_the_field(tmp_path, setting, line):
    from typer.testing import CliRunner

    from prsl.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["finetune", "--set", f"train.fare={setting}", "--set", f"train.output_dir={out}"]
    )
    assert result.exit_code == 2
    (printed,) = result.output.strip().splitlines()
    assert printed.startswith(line) and not out.exists()


def test_the_logged_throughput_counts_what_the_objective_trains_on():
    from prsl.train.log import describe
    from prsl.train.objectives import AdversarialTokenLoss, FareObjective, TokenLoss

    assert FareObjective.unit == "images"
    assert TokenLoss.unit == AdversarialTokenLoss.unit == "tokens"
    stats = {"loss": 0.5, "ce": 0.0, "regularizer": 0.0, "tokens_per_s": 1234.0}
    assert describe(stats, "images") == "FARE distance 0.5000 1,234 images/s"
    assert describe(stats).endswith(" 1,234 tok/s")
