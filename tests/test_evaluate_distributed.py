"""``prsl evaluate`` under ``accelerate launch`` with two CPU processes (gloo): the same
``results.json`` as one process, and a run killed midway resumes with another number of
processes without redoing what is finished.

Each process takes every other batch and appends to its own predictions shard; the first scores
them all. Batches keep their composition whatever the number of processes, so every item's
outputs, hence every number, are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import prsl.evaluate.loop as evaluate_loop
from launching import LAUNCH_TIMEOUT_S, accelerate_command, environment, kill_tree
from prsl.config import load_config
from prsl.core.errors import InvalidInput
from prsl.data import read_dataset
from prsl.evaluate import EvalConfig, evaluate, read_predictions
from prsl.evaluate.attack_images import METADATA, attack_to_files
from prsl.evaluate.ledger import shard_paths
from prsl.metrics import Scorer
from prsl.models import build_tiny_captioner
from prsl.results import RESULTS

pytestmark = pytest.mark.slow

ITEMS, BATCH = 8, 2
CELLS = 2  # fgsm and bim at one ε


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distributed")
    texts = [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]
    model = root / "tiny"
    build_tiny_captioner(texts, hidden=16, layers=1, seed=2).save(model)
    config = root / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [str(model)],
                "data": {"name": "shapes", "options": {"n": ITEMS, "seed": 4}},
                "attacks": [
                    {"name": "fgsm", "eps": ["8/255"]},
                    {"name": "bim", "eps": ["8/255"], "steps": 3},
                ],
                "n_images": ITEMS,
                "batch_size": BATCH,
                "max_new_tokens": 5,
                "metrics": ["BLEU-1", "CIDEr"],
                "gallery": 1,
            }
        )
    )
    return config, root


def one_process(config: Path, out: Path, scorer: Scorer) -> dict:
    cfg = load_config(EvalConfig, config, [f"output_dir={out}"])
    return evaluate(cfg, progress=False, scorer=scorer)


def launch(processes: int, config: Path, out: Path, *, wait: bool = True):
    command = accelerate_command(
        processes, "evaluate", "--config", str(config), "--set", f"output_dir={out}"
    )
    child = subprocess.Popen(
        command,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return child
    output, _ = child.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert child.returncode == 0, output[-4000:]
    return json.loads((out / RESULTS).read_text())


def all_rows(out: Path) -> list[dict]:
    return [row for path in shard_paths(out) for row in read_predictions(path)]


def kill_midway(child: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while time.monotonic() < deadline and child.poll() is None:
        if len(all_rows(out)) >= CELLS * BATCH:  # a batch or two done, far from all
            break
        time.sleep(0.05)
    kill_tree(child.pid)
    child.wait()


@pytest.fixture(scope="module")
def reference(setup, scorer) -> dict:
    config, root = setup
    return one_process(config, root / "one", scorer)


def test_a_two_process_run_killed_midway_resumes_with_one(setup, reference, scorer, monkeypatch):
    config, root = setup
    out = root / "two-then-one"
    kill_midway(launch(2, config, out, wait=False), out)
    before = all_rows(out)
    assert 0 < len(before) < CELLS * ITEMS, "the run should be killed midway"
    crafted = []
    real = evaluate_loop.craft
    monkeypatch.setattr(
        evaluate_loop, "craft", lambda cell, *a, **k: crafted.append(cell) or real(cell, *a, **k)
    )
    resumed = one_process(config, out, scorer)
    assert resumed["runs"] == reference["runs"]
    finished = {(r["attack"], r["key"]) for r in before}
    assert len(crafted) <= CELLS * ITEMS / BATCH - len(finished) // BATCH  # no finished batch again
    after = all_rows(out)
    assert len(after) == len({(r["attack"], r["key"]) for r in after}) == CELLS * ITEMS


def test_a_one_process_run_killed_midway_resumes_with_two_like_one(setup, reference):
    config, root = setup
    out = root / "one-then-two"
    script = (
        "import sys; from prsl.config import load_config; from prsl.evaluate import EvalConfig, "
        "evaluate; evaluate(load_config(EvalConfig, sys.argv[1], [f'output_dir={sys.argv[2]}']),"
        " progress=False)"
    )
    child = subprocess.Popen(
        [os.sys.executable, "-c", script, str(config), str(out)],
        env=environment(),
    )
    kill_midway(child, out)
    before = read_predictions(out / "predictions.jsonl")
    assert 0 < len(before) < CELLS * ITEMS, "the run should be killed midway"
    resumed = launch(2, config, out)
    # two processes give the results of one, each writing its own shard of the rows it adds
    assert resumed["meta"]["processes"] == 2 and reference["meta"]["processes"] == 1
    assert resumed["runs"] == reference["runs"]
    assert read_predictions(out / "predictions.jsonl")[: len(before)] == before  # kept as they were
    assert len(list(shard_paths(out))) == 2
    after = all_rows(out)
    assert len(after) == len({(r["attack"], r["key"]) for r in after}) == CELLS * ITEMS


def test_two_processes_attack_like_one(setup):
    """``prsl attack`` under two processes: the same images and the same ``metadata.csv``."""
    config, root = setup
    model = root / "tiny"
    cfg = load_config(EvalConfig, config)
    assert attack_to_files(cfg, str(model), root / "attack-one") == ITEMS
    out = root / "attack-two"
    command = accelerate_command(
        2, "attack", "-c", str(config), "-m", str(model), "--out", str(out)
    )
    done = subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    said = " ".join((done.stdout + done.stderr).split())
    assert said.count(f"wrote {ITEMS} adversarial image(s)") == 1  # by the first process only
    one = (root / "attack-one" / METADATA).read_text()
    assert (out / METADATA).read_text() == one and one.count("\n") == ITEMS + 1
    for name in sorted(p.name for p in (root / "attack-one").glob("*.png")):
        assert (out / name).read_bytes() == (root / "attack-one" / name).read_bytes(), name
    assert len(list(out.glob("captions*.jsonl"))) == 2


def test_device_map_auto_gives_the_results_of_one_device(setup, reference, scorer):
    """``device_map="auto"`` (one model over every visible device; here the CPU) changes where
    the weights live, not a number."""
    config, root = setup
    cfg = load_config(EvalConfig, config, [f"output_dir={root / 'mapped'}", "device_map=auto"])
    assert evaluate(cfg, progress=False, scorer=scorer)["runs"] == reference["runs"]


def test_device_map_is_refused_under_several_processes(setup, monkeypatch):
    config, root = setup
    monkeypatch.setattr(evaluate_loop, "processes", lambda: SimpleNamespace(num_processes=2))
    cfg = load_config(EvalConfig, config, [f"output_dir={root / 'refused'}", "device_map=auto"])
    with pytest.raises(
        InvalidInput, match="device_map='auto' spreads one model .* without accelerate"
    ):
        evaluate(cfg, progress=False)
