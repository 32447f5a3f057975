"""The command line answers at once: ``prsl --help`` and a config mistake, loss and attack
parameters included, need neither torch nor the model stack (transformers, datasets, accelerate,
peft) nor the report's plots; the work imports them later.

Checked on what a fresh interpreter has imported, never on timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "accelerate", "peft", "matplotlib")

PROBE = """
import json, sys
from prsl.cli import run
try:
    run(sys.argv[1:])
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules]}))
"""


def run_in_fresh_interpreter(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetune", "--set", "train.lrr=1"], "train.lrr"),
        (["evaluate", "--set", "n_imagez=3"], "n_imagez"),
        (["attack", "-m", "x", "--set", "attacks.0.steps=0"], "steps must be an integer >= 1"),
        (["sweep", "--set", "gridd={}"], "gridd"),
        (["finetune", "--set", "data.options={directory: x}"], "directory"),
        (["finetune", "--set", "loss.params.k=0"], "k must be"),
        (
            ["finetune", "--set", "train.adversarial={attack: pgd, norm: l3}"],
            "norm must be one of 'linf', 'l2'",
        ),
        (["evaluate", "--set", "attacks.0.norm=l2"], "does not take 'norm'"),
    ],
)
def test_a_config_mistake_is_reported_before_the_model_stack_is_imported(args, message):
    result = run_in_fresh_interpreter(*args)
    assert result["code"] == 2, result["stderr"]
    assert "error:" in result["stderr"] and message in result["stderr"]
    assert result["imported"] == [], result["imported"]


def test_help_imports_nothing_heavy():
    result = run_in_fresh_interpreter("--help")
    assert result["code"] == 0
    assert result["imported"] == []


LOSS_WITHOUT_TORCH = """
import sys
from prsl.losses import PRSL, get_loss
from prsl.attacks import get_attack
params = PRSL(k=2, weight=0.5)
attack = get_attack("pgd", eps="8/255", steps=3)
assert "torch" not in sys.modules, "building loss and attack parameters imported torch"
import torch
logits, labels = torch.randn(2, 3, 7), torch.tensor([[1, 2, -100], [0, 6, 5]])
assert torch.equal(params(logits, labels), get_loss(params)(logits, labels))
print("ok", attack.steps)
"""


def test_loss_and_attack_parameters_build_without_torch_and_run_with_it():
    done = subprocess.run(
        [sys.executable, "-c", LOSS_WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok 3"
