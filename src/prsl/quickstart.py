"""The embedded default, end to end: shapes data -> CE and PRSL tiny models -> attacks -> report.

Per task (captioning, VQA) it trains a CE and a PRSL model, and a third CE model from another
seed as the surrogate; then attacks both with BIM and PGD (white-box), with BIM crafted on the
surrogate (transfer) and with Square (gradient-free), so that the report's
gradient-masking checks have what they compare; and scores everything with paired-bootstrap
intervals, CE as the baseline. Everything is generated from fixed seeds (recorded in
results.json), needs no download, and runs on a laptop CPU: ``--fast`` in about a minute, the
full default in under five. The report states the measured outcome, whichever way it goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from prsl.config import DataConfig
from prsl.core.errors import Interrupted, InvalidInput
from prsl.core.lock import hold
from prsl.core.paths import check_output_dir
from prsl.data import DatasetSplit, read_dataset
from prsl.evaluate import AttackSpec, EvalConfig, WorstCaseConfig, evaluate
from prsl.provenance import check_settings, write_settings
from prsl.report import write_report
from prsl.results import RESULTS, merge_results
from prsl.train import FinetuneConfig, LossConfig, ModelConfig, TrainConfig, finetune, finished_run
from prsl.train.config import TINY

COMMAND = "quickstart"
EPSILONS = ["2/255", "4/255", "8/255"]
PRSL_PARAMS = {"k": 4, "start": 0, "weight": 1e-3}
"""The tiny word-level vocabulary has a few dozen entries, so K = 4 of them form the window;
b is raised from the paper's 1e-5 because R sums over far fewer positions per batch here."""


@dataclass(frozen=True)
class Budget:
    train_examples: int
    eval_images: int
    steps: int
    batch_size: int

    square_queries: int


FULL = Budget(train_examples=600, eval_images=48, steps=400, batch_size=16, square_queries=200)
FAST = Budget(train_examples=200, eval_images=12, steps=120, batch_size=16, square_queries=60)
SURROGATE_SEED_OFFSET = 1000
"""The surrogate is trained like the CE model from another seed (far from those ``--seeds``
uses): another model of the same kind, as a transfer attacker would have."""
ADVERSARIAL = {"attack": "pgd", "eps": 8 / 255, "steps": 2, "fraction": 0.5}
"""CE-AT: PGD-2 at the largest evaluated ε on half of each batch (on every image, one seed in
three collapsed to a single caption for every image on this data)."""
FARE = {"eps": 4 / 255, "steps": 10}
"""FARE at the paper's larger ε, 10 PGD steps."""
FARE_LR, FARE_STEP_DIVISOR = 1e-3, 2
"""FARE starts from the trained CE model: a smaller learning rate, half its steps."""
DEFENSES = ("ce-at", "fare")
EVAL_DATA_SEED = 10_000
"""The held-out shapes: the same items for every training seed, so seeds compare item by item."""
LOSSES = (("ce", {}), ("prsl", PRSL_PARAMS))


def longest_text(split: DatasetSplit) -> int:
    """Words in the longest reference caption or answer: the word-level tiny models emit one token
    per word, so generation sized to this (+1 for the end of text) never cuts an answer short."""
    texts = [t for e in split.examples for t in getattr(e, "references", None) or e.answers]
    return max(len(t.split()) for t in texts)


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch single-threaded, then restore the caller's setting.

    The quickstart's models are tiny: on 2 cores a 60-step fine-tune took 4 s with one thread and
    23 s with two when the machine was busy, and no faster with two when idle.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def quickstart(
    out: Path,
    *,
    fast: bool = False,
    seed: int = 0,
    seeds: int = 1,
    defenses: bool = False,
    progress: bool = True,
    wait: bool = False,
) -> Path:
    """Train, attack, score and report; returns the path of ``report.html``.

    ``seeds`` > 1 trains and evaluates everything again with the seeds ``seed + 1``, ...: the
    report then gives each number's spread across seeds, and its verdict counts a cell only when
    every seed agrees. It takes about ``seeds`` times as long. ``defenses`` also trains the two
    standard defenses beside CE and PRSL (:data:`DEFENSES`) and compares all with CE. The run
    holds the lock of ``out`` and each of its fine-tunes and evaluations the lock of its folder
    (:mod:`prsl.core.lock`); ``wait`` waits for another run holding one instead of refusing.
    """
    if seeds < 1:
        raise InvalidInput(f"--seeds must be at least 1, got {seeds}")
    check_output_dir(out, "--out")
    try:
        with one_intra_op_thread(), hold(out, "--out", wait=wait):
            return _quickstart(
                out,
                fast=fast,
                seed=seed,
                seeds=seeds,
                defenses=defenses,
                progress=progress,
                wait=wait,
            )
    except Interrupted as err:  # a fine-tune's own advice (--resume) is not the quickstart's
        raise Interrupted(err.kept, "run the same command again to resume", err.code) from None


def _quickstart(
    out: Path, *, fast: bool, seed: int, seeds: int, defenses: bool, progress: bool, wait: bool
) -> Path:
    budget = FAST if fast else FULL
    settings = {"fast": fast, "seed": seed} | ({"seeds": seeds} if seeds > 1 else {})
    settings |= {"defenses": True} if defenses else {}
    fix = "run it again with those options to finish it, or choose another --out"
    check_settings(out, COMMAND, settings, has_results=(out / "models").is_dir(), fix=fix)
    write_settings(out, COMMAND, settings)
    result_files, annotate = [], {}
    for run_seed in range(seed, seed + seeds):
        # the first seed keeps the single-seed layout; the others get a folder each
        models_dir = out / "models" if run_seed == seed else out / "models" / f"seed{run_seed}"
        suffix = "" if run_seed == seed else f"-seed{run_seed}"
        for task, reader in (("caption", "shapes"), ("vqa", "shapes-vqa")):
            folder = out / f"eval-{task}{suffix}"
            models = train_models(
                models_dir, task, reader, budget, run_seed, progress, defenses, wait
            )
            evaluate(
                evaluation(models, task, reader, budget, run_seed, folder),
                progress=progress,
                wait=wait,
            )
            result_files.append(folder / RESULTS)
            annotate[folder / RESULTS] = {"seed": run_seed} if seeds > 1 else {}
    merge_results(result_files, out / RESULTS, {"seed": seed, "fast": fast}, annotate)
    # one seed: each evaluation's own file (its meta whole); several: the merged file, whose
    # runs carry their seed
    shown = result_files if seeds == 1 else [out / RESULTS]
    title = "CE, PRSL, CE-AT and FARE" if defenses else "CE vs PRSL"
    paths = write_report(shown, out, title=f"prsl quickstart: {title} on shapes")
    return paths["html"]


def train_models(
    models_dir: Path,
    task: str,
    reader: str,
    budget: Budget,
    seed: int,
    progress: bool,
    defenses: bool = False,
    wait: bool = False,
) -> list[str]:
    """The CE and PRSL models of a task (and with ``defenses`` CE-AT and FARE), then its
    surrogate (CE from another seed)."""
    runs = [(f"{task}-{loss}", loss, params, seed, None, None) for loss, params in LOSSES]
    if defenses:
        runs.append((f"{task}-ce-at", "ce", {}, seed, {"adversarial": ADVERSARIAL}, None))
        # FARE fine-tunes the CE model's vision encoder, as the paper does a pretrained CLIP's
        runs.append((f"{task}-fare", "ce", {}, seed, {"fare": FARE}, f"{task}-ce"))
    runs.append((f"{task}-surrogate", "ce", {}, seed + SURROGATE_SEED_OFFSET, None, None))
    models = []
    for name, loss, params, run_seed, training, start in runs:
        model_dir = models_dir / name
        steps = budget.steps // FARE_STEP_DIVISOR if start else budget.steps
        tune = FinetuneConfig(
            model=ModelConfig(name_or_path=str(models_dir / start / "final") if start else TINY),
            data=DataConfig(name=reader, options={"n": budget.train_examples, "seed": run_seed}),
            loss=LossConfig(name=loss, params=params),
            train=TrainConfig(
                output_dir=str(model_dir),
                lr=FARE_LR if start else 3e-3,
                max_steps=steps,
                batch_size=budget.batch_size,
                warmup_steps=steps // 10,
                seed=run_seed,
                log_every=20,
                **(training or {}),
            ),
        )
        if not finished_run(tune):
            finetune(tune, resume=model_dir.exists(), progress=progress, wait=wait)
        models.append(str(model_dir / "final"))
    return models


def evaluation(
    models: list[str], task: str, reader: str, budget: Budget, seed: int, folder: Path
) -> EvalConfig:
    """White-box BIM and PGD, BIM transferred from the surrogate, and Square, on held-out data
    (the same items whatever the seed), CE as the baseline; per item and ε the worst case over
    them (the task's headline metric), the row the report's answer reads."""
    *evaluated, surrogate = models
    train_data = read_dataset(reader, n=budget.train_examples, seed=seed)
    return EvalConfig(
        models=evaluated,
        surrogate=surrogate,
        data=DataConfig(name=reader, options={"n": budget.eval_images, "seed": EVAL_DATA_SEED}),
        attacks=[
            AttackSpec(name="bim", eps=EPSILONS, steps=10, record_every_step=True),
            AttackSpec(name="pgd", eps=EPSILONS, steps=10, transfer=False),
            AttackSpec(name="square", eps=EPSILONS, queries=budget.square_queries),
        ],
        output_dir=str(folder),
        n_images=budget.eval_images,
        batch_size=budget.eval_images,
        max_new_tokens=longest_text(train_data) + 1,
        seed=seed,
        gallery=1,
        worst_case=WorstCaseConfig(),
    )
