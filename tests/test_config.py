"""Configs: YAML + overrides + validation that fails before any work, naming the field."""

from __future__ import annotations

import pytest

from prsl.config import load_config, parse_overrides
from prsl.evaluate import EvalConfig
from prsl.train import FinetuneConfig


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  name: prsl\n  params: {k: 10}\ntrain:\n  lr: 5.0e-5\n")
    cfg = load_config(FinetuneConfig, path, ["train.lr=1e-4", "loss.params.k=20", "train.seed=3"])
    assert cfg.train.lr == 1e-4
    assert cfg.loss.params.given() == {"k": 20} and cfg.loss.params.k == 20
    assert cfg.train.seed == 3


def test_every_field_has_a_default():
    cfg = load_config(EvalConfig)
    assert cfg.attacks[0].name == "bim" and cfg.attacks[0].eps == [8 / 255]


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=fast", r"train\.lr"),
        ("train.batch_size=0", r"train\.batch_size: Input should be greater than or equal to 1"),
        ("train.learning_rate=1", r"train\.learning_rate: Extra inputs are not permitted"),
        ("train.mixed_precision=fp8", r"train\.mixed_precision"),
    ],
)
def test_wrong_field_fails_naming_it(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(FinetuneConfig, None, [override])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="section.field=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(FinetuneConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(FinetuneConfig, bad)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ValueError, match="could not determine a constructor"):
        load_config(FinetuneConfig, path)


def test_override_reaches_into_lists_of_the_file_or_the_defaults(tmp_path):
    default = load_config(EvalConfig, None, ["attacks.0.steps=20", "attacks.0.eps=[2/255]"])
    assert (default.attacks[0].name, default.attacks[0].attacks[0].steps) == ("bim", 20)
    assert default.attacks[0].eps == [2 / 255]
    path = tmp_path / "eval.yaml"
    path.write_text("attacks:\n  - {name: fgsm}\n  - {name: pgd, steps: 5}\nn_images: 3\n")
    cfg = load_config(EvalConfig, path, ["attacks.1.norm=l2"])
    built = [spec.attacks[0] for spec in cfg.attacks]
    assert [(a.name, a.iterations, a.ball_norm) for a in built] == [
        ("fgsm", 1, "linf"),
        ("pgd", 5, "l2"),
    ]
    assert cfg.n_images == 3 and cfg.batch_size == EvalConfig().batch_size
    with pytest.raises(ValueError, match="'2' must index the list, which has 2 item"):
        load_config(EvalConfig, path, ["attacks.2.steps=1"])
