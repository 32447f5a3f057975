"""The per-item worst case over an evaluation's attacks, the cascade, and attacks that start at
the worst case so far: checked against independent computations from the run's own files."""

from __future__ import annotations

import copy
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import prsl.evaluate.loop as evaluate_module
from prsl.attacks import get_attack, untargeted_loss
from prsl.config import DataConfig
from prsl.core.errors import RunConflict
from prsl.evaluate import PREDICTIONS, AttackSpec, EvalConfig, evaluate, read_predictions
from prsl.evaluate.config import WORST_CASE
from prsl.evaluate.crafting import computing_in
from prsl.evaluate.grid import grid_cells
from prsl.evaluate.uncertainty import ITEM_SCORES
from prsl.provenance import model_refs
from prsl.report.caveats import cascade_line
from prsl.results import RunRecord, validate_results

METRICS = ["BLEU-4", "ROUGE-L", "CIDEr"]
N = 8


@pytest.fixture(scope="module")
def captioners(trained_captioner, tmp_path_factory) -> tuple[str, str]:
    """The session's trained captioner saved twice: an evaluated model and a surrogate."""
    root = tmp_path_factory.mktemp("worst")
    trained_captioner.save(root / "captioner")
    shutil.copytree(root / "captioner", root / "surrogate")
    return str(root / "captioner"), str(root / "surrogate")


def config(model: str, out: Path, **overrides) -> EvalConfig:
    fields = {
        "models": [model],
        "data": DataConfig(name="shapes", options={"n": N, "seed": 5}),
        "attacks": [
            AttackSpec(name="fgsm", eps=["2/255", "8/255"]),
            AttackSpec(name="bim", eps=["2/255", "8/255"], steps=3),
            AttackSpec(name="pgd", eps=["8/255"], steps=3),
        ],
        "output_dir": str(out),
        "n_images": N,
        "batch_size": 4,
        "max_new_tokens": 8,
        "metrics": METRICS,
        "gallery": 0,
        "bootstrap": {"resamples": 100},
    }
    return EvalConfig(**(fields | overrides))


def item_scores(out: Path) -> dict[tuple, dict[str, dict]]:
    """(attack, eps, reference) -> item -> its row of item_scores.jsonl."""
    found: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for line in (out / ITEM_SCORES).read_text().splitlines():
        row = json.loads(line)
        found[(row["attack"], row["eps"], row["reference"])][row["key"]] = row
    return found


def test_the_worst_case_is_the_per_item_minimum_over_every_attack(captioners, tmp_path, scorer):
    model, surrogate = captioners
    cfg = config(model, tmp_path, surrogate=surrogate, worst_case={"metric": "CIDEr"})
    results = evaluate(cfg, progress=False, scorer=scorer)
    validate_results(results)
    scores = item_scores(tmp_path)
    predictions = {
        (r["attack"], r["eps"], r["key"]): r for r in read_predictions(tmp_path / PREDICTIONS)
    }
    worst_runs = [r for r in results["runs"] if r["attack"] == WORST_CASE]
    assert len(worst_runs) == 2 * 2  # two ε, two references
    grid = grid_cells(cfg.attacks, model_refs([surrogate])[0])
    for run in worst_runs:
        eps, reference = run["eps"], run["reference"]
        attacks = {a for (a, e, ref) in scores if e == eps and ref == reference} - {WORST_CASE}
        assert "fgsm@surrogate" in attacks  # a transferred attack is an attack too
        assert len(attacks) == (6 if eps == 8 / 255 else 4)
        chosen = scores[(WORST_CASE, eps, reference)]
        assert len(chosen) == run["n_images"] == N
        outputs, refs = [], []
        for key, row in chosen.items():
            each = {a: scores[(a, eps, reference)][key]["adversarial"]["CIDEr"] for a in attacks}
            assert row["adversarial"]["CIDEr"] == min(each.values())  # exactly, not nearly
            assert all(row["adversarial"]["CIDEr"] <= v for v in each.values())
            source = predictions[(row["worst_of"], eps, key)]
            # the lowest, and on a tie the first of them in the grid's order
            tied = [c.name for c in grid if c.eps == eps and each.get(c.name) == min(each.values())]
            assert row["worst_of"] == tied[0]
            outputs.append(source["adversarial"])
            refs.append(source["references"] if reference == "ground_truth" else [source["clean"]])
        # every metric of the row is the corpus score of the chosen outputs, scored afresh
        fresh = scorer.score(outputs, refs, METRICS)
        assert run["adversarial"] == pytest.approx(fresh, abs=1e-9)
        assert set(run["intervals"]) == {"clean", "adversarial", "degradation"}
        assert run["adversarial"]["CIDEr"] <= min(
            r["adversarial"]["CIDEr"]
            for r in results["runs"]
            if r["eps"] == eps and r["reference"] == reference and r["attack"] in attacks
        )


def test_a_cascade_skips_items_at_or_below_the_threshold_and_says_so(
    captioners, tmp_path, scorer, monkeypatch
):
    model, _ = captioners
    crafted: list[int] = []
    real_craft = evaluate_module.craft
    monkeypatch.setattr(
        evaluate_module,
        "craft",
        lambda cell, pixels, *a, **k: (
            crafted.append(pixels.shape[0]) or real_craft(cell, pixels, *a, **k)
        ),
    )
    full = evaluate(config(model, tmp_path / "full", worst_case={}), progress=False, scorer=scorer)
    every = sum(crafted)
    threshold = sorted(
        r["adversarial"]["CIDEr"]
        for r in item_scores(tmp_path / "full")[("fgsm", 8 / 255, "ground_truth")].values()
    )[N // 2]
    crafted.clear()
    cfg = config(model, tmp_path / "cascade", worst_case={"stop_below": threshold})
    results = evaluate(cfg, progress=False, scorer=scorer)
    validate_results(results)
    rows = read_predictions(tmp_path / "cascade" / PREDICTIONS)
    skipped = [r for r in rows if r.get("skipped_after")]
    assert skipped and sum(crafted) == every - len(skipped) < every  # fewer items attacked
    scores = item_scores(tmp_path / "cascade")
    for row in skipped:  # skipped after an attack that brought it at or below the threshold
        before = scores[(row["skipped_after"], row["eps"], "ground_truth")][row["key"]]
        assert before["adversarial"]["CIDEr"] <= threshold
        assert row["key"] not in scores[(row["attack"], row["eps"], "ground_truth")]
    counts = {
        (c["attack"], c["eps"]): c["skipped"] for c in results["meta"]["worst_case"]["skipped"]
    }
    for run in results["runs"]:
        if run["attack"] == WORST_CASE:
            assert run["n_images"] == N
            continue
        n = counts[(run["attack"], run["eps"])]
        assert (
            run["n_images"] + run.get("cascade_skipped", 0) == N
            and run.get("cascade_skipped", 0) == n
        )
        assert len(scores[(run["attack"], run["eps"], run["reference"])]) == run["n_images"]
    assert counts[("fgsm", 8 / 255)] == 0 and sum(counts.values()) == len(skipped)
    # the report says it (comparisons: the next test, with two models)
    lead = cascade_line([RunRecord.model_validate(r) for r in results["runs"]])
    assert lead is not None and f"A cascade skipped {len(skipped)} item-attacks" in lead
    # the first attack ran on every item, as it did without the cascade: the same outputs
    first = {(r["key"]): r["adversarial"] for r in rows if r["attack"] == "fgsm"}
    assert first == {
        r["key"]: r["adversarial"]
        for r in read_predictions(tmp_path / "full" / PREDICTIONS)
        if r["attack"] == "fgsm"
    }
    # a rerun with another threshold is refused, naming it
    with pytest.raises(RunConflict, match="cascade.stop_below"):
        evaluate(
            config(model, tmp_path / "cascade", worst_case={"stop_below": threshold / 2}),
            progress=False,
            scorer=scorer,
        )
    assert full["runs"]


def test_an_interrupted_cascade_resumes_to_the_same_results(captioners, tmp_path, scorer):
    model, _ = captioners
    attacks = [
        AttackSpec(name="fgsm", eps=["8/255"]),
        AttackSpec(name="bim", eps=["8/255"], steps=3),
        AttackSpec(
            name="bim",
            label="bim-fp32",
            eps=["8/255"],
            steps=2,
            start="worst_case",
            dtype="float32",
        ),
    ]
    wc = {"stop_below": 0.5}
    whole = evaluate(
        config(model, tmp_path / "whole", attacks=attacks, worst_case=wc),
        progress=False,
        scorer=scorer,
    )
    cut = tmp_path / "cut"
    cfg = config(model, cut, attacks=attacks, worst_case=wc)
    evaluate(cfg, progress=False, scorer=scorer)
    lines = (cut / PREDICTIONS).read_text().splitlines()
    kept = lines[: len(lines) // 2 + 1]  # killed here: the second batch left to do
    (cut / PREDICTIONS).write_text("\n".join(kept) + "\n")
    lost = [json.loads(line) for line in lines[len(kept) :]]
    assert any(r["attack"] == "bim-fp32" and not r.get("skipped_after") for r in lost)
    assert any(r.get("skipped_after") for r in lost)
    resumed = evaluate(cfg, progress=False, scorer=scorer)
    assert resumed["runs"] == whole["runs"]
    assert resumed["meta"]["worst_case"] == whole["meta"]["worst_case"]
    after = read_predictions(cut / PREDICTIONS)
    assert sorted(map(json.dumps, after)) == sorted(
        map(json.dumps, read_predictions(tmp_path / "whole" / PREDICTIONS))
    )
    for row in after:
        assert row["linf"] <= row["eps"] + 1e-6


def test_a_start_inside_the_ball_stays_centred_on_the_clean_images(trained_captioner):
    torch.manual_seed(0)
    clean = torch.rand(3, 3, *trained_captioner.pixel_size)
    texts = ["a red circle"] * 3
    loss = untargeted_loss(trained_captioner, texts)
    eps = 4 / 255
    far = (clean + 0.5 * torch.randn_like(clean)).clamp(0, 1)  # mostly outside the ball
    for name in ("fgsm", "bim", "pgd", "mifgsm", "apgd"):
        attack = get_attack(name, eps=eps) if name == "fgsm" else get_attack(name, eps=eps, steps=2)
        adv = attack(clean, loss, start=far, generator=torch.Generator().manual_seed(0))
        assert (adv - clean).abs().max() <= eps + 1e-6, name
    # APGD keeps its best iterate, the start among them: never below the start's loss
    inside = clean + eps * torch.sign(torch.randn_like(clean))
    inside = inside.clamp(0, 1)
    adv = get_attack("apgd", eps=eps, steps=3)(clean, loss, start=inside)
    with torch.no_grad():
        assert (loss(adv) >= loss(inside) - 1e-6).all()
    # BIM from a start takes its steps from there, not from the clean images
    one = get_attack("bim", eps=eps, steps=1)
    assert not torch.equal(one(clean, loss, start=inside), one(clean, loss))
    with pytest.raises(ValueError, match="takes no start"):
        get_attack("square", eps=eps, queries=2)(clean, loss, start=inside)


def test_a_float32_pass_crafts_in_float32_and_leaves_the_bfloat16_weights_as_they_were(
    trained_captioner,
):
    adapter = copy.deepcopy(trained_captioner)
    adapter.model.to(torch.bfloat16)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    seen = []
    real = adapter.loss

    def spying(pixels, texts, prompts=None):
        seen.append(adapter.vision_dtype)
        return real(pixels, texts, prompts)

    adapter.loss = spying
    clean = torch.rand(2, 3, *adapter.pixel_size)
    attack = get_attack("bim", eps=4 / 255, steps=2)
    with computing_in(adapter, "float32"):
        attack(clean, untargeted_loss(adapter, ["a red circle"] * 2))
    attack(clean, untargeted_loss(adapter, ["a red circle"] * 2))
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * 2
    after = adapter.model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_cells_a_cascade_cut_short_are_not_compared_between_models(captioners, tmp_path, scorer):
    """Each model's cascade keeps other items in a cut cell: its comparison would be over a
    selection, so only the cells every model ran on every item (and the worst case) compare."""
    model, other = captioners
    cfg = config(
        model,
        tmp_path / "two",
        models=[model, other],
        baseline=model,
        worst_case={"stop_below": 1.0},  # some items stop after the first attack, some go on
    )
    results = evaluate(cfg, progress=False, scorer=scorer)
    cut = {(r["attack"], r["eps"]) for r in results["runs"] if r.get("cascade_skipped")}
    compared = {(c["attack"], c["eps"]) for c in results["comparisons"]}
    assert cut and compared  # both kinds of cell exist, so the rule is put to the test
    assert not cut & compared
    assert (WORST_CASE, 8 / 255) in compared and ("fgsm", 8 / 255) in compared
