"""Checkpoints: pickle-free round trip, atomic writes, pruning."""

from __future__ import annotations

import random

import numpy as np
import torch

from prsl.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, set_rng_state


def _trained(seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=9)
    for _ in range(steps):
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def _save(tmp_path, model, opt, sched, step):
    return save_checkpoint(
        tmp_path,
        step,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        scheduler_state=sched.state_dict(),
        position={"step": step, "epoch": 0, "in_epoch": step},
    )


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _trained()
    path = _save(tmp_path, model, opt, sched, 3)
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "optimizer.safetensors"}
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin"))
    expected_draws = (torch.rand(3), np.random.rand(), random.random())

    state = load_checkpoint(path)
    clone, clone_opt, clone_sched = _trained(seed=1, steps=0)  # fresh: nothing to agree by luck
    assert not torch.equal(clone[0].weight, model[0].weight) and not clone_opt.state
    clone.load_state_dict(state["model"])
    clone_opt.load_state_dict(state["optimizer"])
    clone_sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert (np.random.rand(), random.random()) == expected_draws[1:]
    assert state["position"] == {"step": 3, "epoch": 0, "in_epoch": 3}
    # The restored optimiser and scheduler continue exactly like the originals.
    x = torch.randn(5, 4)
    for net, optim, sch in ((model, opt, sched), (clone, clone_opt, clone_sched)):
        net(x).square().sum().backward()
        optim.step()
        sch.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_partial_write_is_never_listed_and_old_ones_are_pruned(tmp_path):
    model, opt, sched = _trained()
    for step in (1, 2, 3):
        _save(tmp_path, model, opt, sched, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    # A run killed while writing checkpoint 4 leaves only a partial folder behind.
    (tmp_path / ".checkpoint-4.partial").mkdir()
    (tmp_path / ".checkpoint-4.partial" / "model.safetensors").write_bytes(b"trunc")
    latest = list_checkpoints(tmp_path)[-1]
    assert latest.name == "checkpoint-3"
    assert load_checkpoint(latest)["position"]["step"] == 3
