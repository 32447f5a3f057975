"""One run per output folder, and a fine-tune stopped by a signal keeps its finished steps.

Two runs into one folder are real processes here: the first holds the folder's lock (a real
``prsl`` command held inside its run, or a small process that only takes the lock), the second
must refuse in one line naming the first one's pid and leave the folder as it was, or wait for it
with ``--wait``. Ctrl-C and SIGTERM are real signals sent to a real ``prsl finetune``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from interrupting import Killed, die_after_saving
from launching import environment
from prsl.cli import app
from prsl.config import load_config
from prsl.core import lock
from prsl.core.lock import LOCK_FILE, FolderBusy, hold
from prsl.data import read_dataset
from prsl.evaluate import PREDICTIONS, read_predictions
from prsl.models import build_tiny_captioner
from prsl.results import RESULTS
from prsl.train import FinetuneConfig, finetune
from prsl.train.checkpoint import list_checkpoints

START_S = 120
"""Starting a process that imports torch and transformers on a busy two-core machine."""
SHAPES = [
    "data.name=shapes",
    "data.options={n: 3, seed: 2}",
    "n_images=3",
    "max_new_tokens=4",
    "metrics=[VQA-acc]",
    "attacks=[{name: fgsm, eps: [4/255]}]",
]
TUNE = [
    "data.options={n: 8, seed: 0}",
    "model.tiny={hidden: 16, layers: 1, heads: 2}",
    "loss.params={k: 2}",
    "train.max_steps=4",
    "train.batch_size=4",
    "train.log_every=1",
]
HOLDER = """
import sys, time
from pathlib import Path
from prsl.core.lock import hold
with hold(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""
HELD_RUN = """
import sys, time
from pathlib import Path
import importlib
marker, go, target, *argv = sys.argv[1:]
module_name, name = target.rsplit(".", 1)
module = importlib.import_module(module_name)
real = getattr(module, name)
def held(*args, **kwargs):
    Path(marker).write_text("inside")
    deadline = time.time() + 120
    while not Path(go).exists() and time.time() < deadline:
        time.sleep(0.05)
    return real(*args, **kwargs)
setattr(module, name, held)
from prsl.cli import run
sys.argv = ["prsl", *argv]
run()
"""
SLOW_STEPS = """
import sys, time
import prsl.train.loop as loop
real = loop.optimizer_step
def slow(*args, **kwargs):
    time.sleep(0.4)
    return real(*args, **kwargs)
loop.optimizer_step = slow
from prsl.cli import run
sys.argv = ["prsl", *sys.argv[1:]]
run()
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = START_S) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {process.stdout.read()}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def stop(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def refused_naming(result, output: str, pid: int) -> None:
    assert result.exit_code == 2, output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"pid {pid}" in output and "--wait" in output, output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    texts = [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]
    folder = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_captioner(texts, hidden=16, layers=1, seed=1).save(folder)
    return str(folder)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of a folder: (folder, pid)."""
    folder = tmp_path / "held"
    marker = tmp_path / "held.marker"
    process = start(HOLDER, str(folder), str(marker))
    try:
        wait_for(marker, process)
        yield folder, process.pid
    finally:
        stop(process)


def sweep_config(tmp_path: Path, out: Path) -> Path:
    sweep = {
        "output_dir": str(out),
        "finetune": {
            "data": {"name": "shapes", "options": {"n": 8, "seed": 0}},
            "model": {"tiny": {"hidden": 16, "layers": 1, "heads": 2}},
            "loss": {"name": "prsl", "params": {"k": 2}},
            "train": {"max_steps": 1, "batch_size": 4},
        },
        "evaluate": {
            "data": {"name": "shapes", "options": {"n": 2, "seed": 3}},
            "attacks": [{"name": "fgsm", "eps": ["4/255"]}],
            "n_images": 2,
            "max_new_tokens": 3,
            "metrics": ["VQA-acc"],
            "gallery": 0,
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep))
    return path


# ------------------------------------------------------------------ one run per folder


@pytest.mark.parametrize(
    "command", ["evaluate", "finetune", "attack", "report", "sweep", "quickstart"]
)
def test_every_writing_command_refuses_a_folder_another_process_holds(
    tmp_path, holder, tiny, command
):
    folder, pid = holder
    (folder / "kept.txt").write_text("the other run's file")
    before = snapshot(folder)
    if command == "evaluate":
        args = ["evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={folder}")]
    elif command == "finetune":
        args = ["finetune", *sets(*TUNE, f"train.output_dir={folder}")]
    elif command == "attack":
        args = ["attack", "-m", tiny, "--out", str(folder), *sets(*SHAPES)]
    elif command == "report":
        evaluated = tmp_path / "eval"
        result, output = run("evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={evaluated}"))
        assert result.exit_code == 0, output
        args = ["report", str(evaluated / RESULTS), "--out", str(folder)]
    elif command == "sweep":
        args = ["sweep", "--config", str(sweep_config(tmp_path, folder))]
    else:
        args = ["quickstart", "--fast", "--out", str(folder)]
    result, output = run(*args)
    refused_naming(result, output, pid)
    assert snapshot(folder) == before  # nothing written, nothing lost


def test_two_evaluations_into_one_folder_never_both_write_it(tmp_path, tiny):
    out = tmp_path / "eval"
    marker, go = tmp_path / "inside", tmp_path / "go"
    args = ["evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}")]
    first = start(HELD_RUN, str(marker), str(go), "prsl.evaluate.loop.run_grid", *args)
    try:
        wait_for(marker, first)  # the first run holds the folder, before it writes a row
        result, output = run(*args)
        refused_naming(result, output, first.pid)
        go.write_text("go")
        assert first.wait(timeout=START_S) == 0, first.stdout.read()
    finally:
        stop(first)
    rows = read_predictions(out / PREDICTIONS)
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3  # each item once
    assert {r["n_images"] for r in json.loads((out / RESULTS).read_text())["runs"]} == {3}
    assert not (out / LOCK_FILE).exists()


def test_a_second_fine_tune_waits_for_the_first_with_wait(tmp_path):
    out = tmp_path / "run"
    marker, go = tmp_path / "inside", tmp_path / "go"
    args = ["finetune", *sets(*TUNE, f"train.output_dir={out}")]
    first = start(HELD_RUN, str(marker), str(go), "prsl.train.loop.train_until_done", *args)
    second = None
    try:
        wait_for(marker, first)
        result, output = run(*args)
        refused_naming(result, output, first.pid)
        assert not (out / "final").exists()
        second = start("from prsl.cli import run; run()", *args, "--wait")
        for line in second.stdout:  # it waits, saying for whom
            if f"waiting for prsl run {first.pid} to finish with {out}" in line:
                break
        else:
            raise AssertionError(f"the second run did not wait: exit {second.wait()}")
        go.write_text("go")
        assert first.wait(timeout=START_S) == 0, first.stdout.read()
        assert second.wait(timeout=START_S) == 2, second.stdout.read()
        said = second.stdout.read()
        assert "holds a finished run with these settings" in " ".join(said.split()), said
    finally:
        stop(first)
        stop(second)
    log = (out / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["step", "1", "2", "3", "4"]  # one run


def test_a_killed_holder_leaves_no_stale_lock(holder):
    folder, pid = holder
    with pytest.raises(FolderBusy, match=f"pid {pid}"), hold(folder, "output_dir"):
        pass
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while True:  # the kernel drops the lock with the process
        try:
            with hold(folder, "output_dir"):
                assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
            break
        except FolderBusy:
            assert time.time() < deadline
            time.sleep(0.1)
    assert not (folder / LOCK_FILE).exists()


def test_only_a_dead_holder_is_waited_for_and_only_briefly():
    """A killed process turns zombie before its other threads have exited, and they hold its
    lock until they do: a run finding the lock held by a dead pid waits for it (up to DYING_S)
    instead of refusing in a dead run's name; a live holder is refused at once."""
    began = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
    dead = str(child.pid)
    assert lock._dying(dead, began)
    assert not lock._dying(dead, began - lock.DYING_S - 1)  # waited long enough: refuse
    assert not lock._dying(str(os.getpid()), began)  # a live holder: refuse at once
    assert not lock._dying("unknown", began)
    child.wait()
    assert lock._dying(dead, began)  # reaped: no such process


def test_the_same_process_may_hold_a_folder_twice_and_a_lock_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b"
    with hold(out, "output_dir"), hold(out / "inner", "inner"), hold(out, "output_dir"):
        assert (out / LOCK_FILE).is_file() and (out / "inner" / LOCK_FILE).is_file()
    assert not (tmp_path / "a").exists()  # made for the lock, left empty: removed


# ------------------------------------------------------------------ signals during a fine-tune


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_any_checkpoint_saves_the_finished_steps(tmp_path, signum, code):
    out, straight = tmp_path / "run", tmp_path / "straight"
    args = ["finetune", *sets(*TUNE, f"train.output_dir={out}")]  # save_every: 0
    process = start(SLOW_STEPS, *args)
    try:
        deadline = time.time() + START_S
        while (
            not (out / "train_log.csv").exists()
            or len((out / "train_log.csv").read_text().splitlines()) < 2
        ):  # the first step is logged
            assert process.poll() is None, process.stdout.read()
            assert time.time() < deadline
            time.sleep(0.05)
        process.send_signal(signum)
        assert process.wait(timeout=START_S) == code
        said = " ".join(process.stdout.read().split())
    finally:
        stop(process)
    (checkpoint,) = list_checkpoints(out)
    step = int(checkpoint.name.split("-")[1])
    assert 1 <= step < 4 and not (out / "final").exists()
    assert f"stopped at step {step} of 4; a checkpoint of it is in {out}" in said, said
    assert "--resume" in said and "Traceback" not in said

    cfg = load_config(FinetuneConfig, None, [*TUNE, f"train.output_dir={out}"])
    resumed = finetune(cfg, resume=True, progress=False)
    assert [h["step"] for h in resumed.history] == list(range(step + 1, 5))
    reference = load_config(FinetuneConfig, None, [*TUNE, f"train.output_dir={straight}"])
    finetune(reference, progress=False)
    final, expected = (load_file(str(d / "final" / "model.safetensors")) for d in (out, straight))
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-7, msg=name)


def test_ctrl_c_before_training_says_nothing_was_kept(tmp_path, monkeypatch):
    import prsl.train.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prsl.train.loop, "start_session", interrupted)
    out = tmp_path / "run"
    result, output = run("finetune", *sets(*TUNE, f"train.output_dir={out}"))
    assert result.exit_code == 130, output
    assert "nothing of this run is kept" in output and "--resume" not in output


def test_a_checkpoint_that_cannot_be_written_says_how_many_steps_are_lost(tmp_path, monkeypatch):
    import prsl.train.interrupt
    import prsl.train.loop

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    class SignalAfterStepTwo(prsl.train.interrupt.StopRequests):
        checks = 0

        def signal(self):  # checked after each step
            self.checks += 1
            return signal.SIGINT if self.checks == 2 else None

    monkeypatch.setattr(prsl.train.loop, "StopRequests", SignalAfterStepTwo)
    monkeypatch.setattr(prsl.train.loop, "save", full_disk)
    out = tmp_path / "run"
    result, output = run("finetune", *sets(*TUNE, f"train.output_dir={out}"))
    assert result.exit_code == 130, output
    assert "could not be written" in output and "the 2 step(s) of this run are lost" in output
    assert "start over" in output and "--resume" not in output


def test_a_signal_during_the_last_step_lets_the_run_end_complete(tmp_path, monkeypatch):
    """After the last step there is nothing to resume: the run writes its final model."""
    import prsl.train.interrupt
    import prsl.train.loop

    class SignalAfterEveryStep(prsl.train.interrupt.StopRequests):
        def signal(self):
            return signal.SIGINT

    monkeypatch.setattr(prsl.train.loop, "StopRequests", SignalAfterEveryStep)
    out = tmp_path / "run"
    result, output = run("finetune", *sets(*TUNE, "train.max_steps=1", f"train.output_dir={out}"))
    assert result.exit_code == 0, output
    assert (out / "final" / "model.safetensors").is_file()


# ------------------------------------------------------------------ finetune's advice


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "run"
    cfg = load_config(
        FinetuneConfig, None, [*TUNE, "train.save_every=1", f"train.output_dir={out}"]
    )
    die_after_saving(monkeypatch, step=2)
    with pytest.raises(Killed):
        finetune(cfg, progress=False)
    monkeypatch.undo()
    return out


def test_an_interrupted_run_is_called_this_run_and_resume_is_advised(interrupted_run):
    before = snapshot(interrupted_run)
    result, output = run(
        "finetune", *sets(*TUNE, "train.save_every=1", f"train.output_dir={interrupted_run}")
    )
    assert result.exit_code == 2, output
    assert "another run" not in output and "interrupted at its checkpoint of step 2" in output
    assert "pass --resume to continue it" in output and "--overwrite" in output
    assert snapshot(interrupted_run) == before


def test_a_finished_run_with_other_settings_advises_overwrite_which_works(interrupted_run):
    result, output = run(
        "finetune", "--resume", *sets(*TUNE, f"train.output_dir={interrupted_run}")
    )
    assert result.exit_code == 0, output  # save_every may change on a resume
    changed = [*TUNE, f"train.output_dir={interrupted_run}", "train.lr=1e-3"]
    for flags in ([], ["--resume"]):
        result, output = run("finetune", *flags, *sets(*changed))
        assert result.exit_code == 2, output
        assert "train.lr: 5e-05 -> 0.001" in output, output
        assert "pass --overwrite to discard it, or choose another train.output_dir" in output
        assert "--resume" not in output
    same, output = run("finetune", *sets(*TUNE, f"train.output_dir={interrupted_run}"))
    assert same.exit_code == 2 and "holds a finished run with these settings" in output
    assert "--overwrite" in output and "--resume" not in output

    result, output = run("finetune", "--overwrite", *sets(*changed))
    assert result.exit_code == 0, output
    record = json.loads((interrupted_run / "final" / "prsl_train.json").read_text())
    assert record["config"]["train"]["lr"] == 1e-3
    assert list_checkpoints(interrupted_run)[-1].name == "checkpoint-4"
    log = (interrupted_run / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["step", "1", "2", "3", "4"]

    both, output = run("finetune", "--resume", "--overwrite", *sets(*changed))
    assert both.exit_code == 2 and "pass one of them" in output


# ------------------------------------------------------------------ a ledger written twice


def test_rows_written_twice_count_once_and_a_rerun_repairs_the_results(tmp_path, tiny):
    out = tmp_path / "eval"
    args = ["evaluate", "-m", tiny, *sets(*SHAPES, f"output_dir={out}")]
    assert run(*args)[0].exit_code == 0
    rows = (out / PREDICTIONS).read_text()
    (out / PREDICTIONS).write_text(rows + rows)  # what two runs into one folder used to leave
    result, output = run(*args)
    assert result.exit_code == 0, output
    assert {r["n_images"] for r in json.loads((out / RESULTS).read_text())["runs"]} == {3}
