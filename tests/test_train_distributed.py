"""Distributed for real: ``accelerate launch`` with two CPU processes (DDP over gloo) trains the
tiny model to the same weights as one process with the same global batch.

Each process takes every other sample of each global micro-batch and scales its token-mean loss
by its share of the global token count, so DDP's gradient average equals the single-process
gradient. Dropout is off: its masks would otherwise depend on how the batch is split.

Launching: see ``launching.py``. The test checks the world size the run recorded, so it cannot
pass on a single process.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from interrupting import Killed, die_after_saving
from launching import LAUNCH_TIMEOUT_S, accelerate_command, environment
from prsl.config import load_config
from prsl.provenance import TRAIN_INFO
from prsl.train import FinetuneConfig, finetune
from prsl.train.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow


def config_tree(loss: str) -> dict:
    return {
        "model": {"name_or_path": "tiny", "tiny": {"hidden": 32, "layers": 1, "dropout": 0.0}},
        "data": {"name": "shapes", "options": {"n": 16, "seed": 0}},
        "loss": {"name": loss, "params": {}},
        # global micro-batch 4 (2 per process), 2 micro-batches per step: 8 samples per step
        "train": {
            "lr": 3e-3,
            "batch_size": 4,
            "grad_accum": 2,
            "max_steps": 4,
            "warmup_steps": 1,
            "max_grad_norm": None,  # clipping would hide a wrongly scaled gradient
            "seed": 0,
            "log_every": 1,
        },
    }


def launch_two_processes(config: Path, out: Path, workdir: Path, *more: str) -> None:
    """``accelerate launch ... -m prsl.cli finetune``, as the configs document it."""
    command = accelerate_command(
        2, "finetune", "--config", str(config), "--set", f"train.output_dir={out}", *more
    )
    done = subprocess.run(
        command,
        cwd=workdir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def train_in_this_process(config: Path, overrides: list[str]) -> None:
    """The one-process run, on one thread like each launched process (same reduction order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        finetune(load_config(FinetuneConfig, config, overrides), progress=False)
    finally:
        torch.set_num_threads(threads)


def weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / name / "model.safetensors"))


def adam_moments(run: Path) -> dict[str, torch.Tensor]:
    """Adam's running gradient moments: linear (and quadratic) in the gradients, where the
    weights Adam moves are nearly blind to a gradient's scale after a few steps."""
    state = load_checkpoint(list_checkpoints(run)[-1])["optimizer"]["state"]
    return {
        f"{index}.{key}": value
        for index, slots in state.items()
        for key, value in slots.items()
        if key in ("exp_avg", "exp_avg_sq")
    }


def losses(run: Path) -> list[tuple[float, float]]:
    with (run / "train_log.csv").open(newline="") as handle:
        return [(float(r["loss"]), float(r["ce"])) for r in csv.DictReader(handle)]


def test_two_processes_reach_the_weights_of_one(tmp_path):
    """With PRSL, whose logged loss (CE plus its regulariser) differs from its CE column: both
    are global across processes. The other tests here train with CE."""
    loss = "prsl"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_tree(loss)))
    two, one = tmp_path / "two", tmp_path / "one"
    launch_two_processes(config, two, tmp_path)
    assert json.loads((two / "final" / TRAIN_INFO).read_text())["processes"] == 2

    train_in_this_process(config, [f"train.output_dir={one}"])

    start = weights(one, "base")
    assert weights(two, "base").keys() == start.keys()
    for name, tensor in weights(two, "base").items():
        assert torch.equal(tensor, start[name]), name
    single, double = weights(one, "final"), weights(two, "final")
    assert single.keys() == double.keys()
    moved = max((single[k] - start[k]).abs().max().item() for k in single)
    assert moved > 1e-3, "training did not move the weights: the comparison would prove nothing"
    for name, tensor in single.items():
        torch.testing.assert_close(double[name], tensor, rtol=1e-4, atol=2e-5, msg=name)
    # Adam's moments, each kind against its largest entry: gradients that are zero in exact
    # arithmetic (e.g. of attention key biases) hold rounding noise that differs between runs.
    expected, moments = adam_moments(one), adam_moments(two)
    assert moments.keys() == expected.keys()
    for kind in ("exp_avg", "exp_avg_sq"):
        of_kind = {name: m for name, m in expected.items() if name.endswith(f".{kind}")}
        scale = max(m.abs().max().item() for m in of_kind.values())
        for name, moment in of_kind.items():
            torch.testing.assert_close(
                moments[name], moment, rtol=1e-3, atol=1e-5 * scale, msg=name
            )
    # The logged loss of two processes is the global one, too.
    for (loss_two, ce_two), (loss_one, ce_one) in zip(losses(two), losses(one), strict=True):
        assert loss_two == pytest.approx(loss_one, rel=1e-4)
        assert ce_two == pytest.approx(ce_one, rel=1e-4)


def test_a_process_with_nothing_to_read_keeps_step_with_the_others(tmp_path):
    """A process whose share of a micro-batch is empty (3 samples in micro-batches of 2) or
    unreadable must still join the gradient all-reduce; before, the other one waited forever."""
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for name, level in (("a.png", 40), ("b.png", 220)):
        Image.new("L", (32, 32), level).save(images / name)
    (images / "c.png").write_text("not an image")
    (images / "metadata.csv").write_text(
        "file_name,text\na.png,a dark square\nb.png,a light square\nc.png,a broken one\n"
    )
    tree = config_tree("prsl")
    tree["data"] = {"name": "imagefolder", "options": {"directory": str(images)}}
    tree["loss"]["params"] = {"k": 2}
    tree["train"] |= {"batch_size": 2, "grad_accum": 1, "max_steps": 3}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    launch_two_processes(config, tmp_path / "two", tmp_path)
    record = json.loads((tmp_path / "two" / "final" / TRAIN_INFO).read_text())
    assert record["processes"] == 2 and record["steps"] == 3
    assert [s["key"] for s in record["skipped"]] == ["c.png"]
    assert all(loss == loss and ce == ce for loss, ce in losses(tmp_path / "two"))  # no NaN


def test_fare_in_two_processes_reaches_the_weights_of_one(tmp_path):
    """FARE calls the encoder outside the DDP wrapper: its gradients must still be summed over
    the processes (else each process follows its own images and the saved encoder is rank 0's
    alone). Two processes with micro-batches of 2 see what one sees with 1 and grad_accum 2, and
    their random starts follow the images, so the weights must agree."""
    tree = config_tree("ce")
    tree["train"] |= {"fare": {"eps": 8 / 255, "steps": 2}, "batch_size": 2, "grad_accum": 1}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    two, one = tmp_path / "two", tmp_path / "one"
    launch_two_processes(config, two, tmp_path)
    assert json.loads((two / "final" / TRAIN_INFO).read_text())["processes"] == 2
    train_in_this_process(
        config, [f"train.output_dir={one}", "train.batch_size=1", "train.grad_accum=2"]
    )
    start, single, double = weights(one, "base"), weights(one, "final"), weights(two, "final")
    encoder = [k for k in single if k.startswith("encoder.")]
    assert max((single[k] - start[k]).abs().max().item() for k in encoder) > 1e-3
    for name, tensor in single.items():
        if name in encoder:
            torch.testing.assert_close(double[name], tensor, rtol=1e-4, atol=2e-5, msg=name)
        else:  # FARE never touches the decoder, in any layout
            assert torch.equal(double[name], start[name]) and torch.equal(tensor, start[name])
    for (loss_two, _), (loss_one, _) in zip(losses(two), losses(one), strict=True):
        assert loss_two == pytest.approx(loss_one, rel=1e-4)


def test_adversarial_fine_tuning_in_two_processes_crafts_each_share(tmp_path):
    """CE-AT under accelerate: each process attacks its own share of the micro-batch; the
    run keeps step (no process waits on another) and trains."""
    tree = config_tree("ce")
    tree["train"]["adversarial"] = {"attack": "pgd", "eps": 8 / 255, "steps": 1, "fraction": 0.5}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    launch_two_processes(config, tmp_path / "two", tmp_path)
    record = json.loads((tmp_path / "two" / "final" / TRAIN_INFO).read_text())
    assert record["processes"] == 2 and record["steps"] == tree["train"]["max_steps"]
    assert record["adversarial"]["attack"] == "pgd"
    start, final = weights(tmp_path / "two", "base"), weights(tmp_path / "two", "final")
    assert max((final[k] - start[k]).abs().max().item() for k in final) > 1e-3
    assert all(loss == loss for loss, _ in losses(tmp_path / "two"))


def test_compute_resumed_on_another_number_of_processes_counts_each_part_at_its_own(
    tmp_path, monkeypatch
):
    """Two steps in one process (then killed), two more in two: device-seconds are the first
    part's seconds plus twice the second's, not the whole run's seconds times the last count."""
    tree = config_tree("ce")
    tree["train"] |= {"save_every": 2}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    out = tmp_path / "run"
    die_after_saving(monkeypatch)
    with pytest.raises(Killed):
        train_in_this_process(config, [f"train.output_dir={out}"])
    monkeypatch.undo()
    first = load_checkpoint(list_checkpoints(out)[-1])["position"]["seconds"]
    launch_two_processes(config, out, tmp_path, "--resume")
    compute = json.loads((out / "final" / TRAIN_INFO).read_text())["compute"]
    second = compute["seconds"] - first
    assert second > 0
    assert compute["device_seconds"] == pytest.approx(first + 2 * second, abs=2e-3)
