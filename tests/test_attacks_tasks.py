"""Task wrappers: loss functions from an adapter, model-state discipline, transfer crafting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prsl.attacks import (
    AttackResult,
    attack_mode,
    bim,
    craft_on_surrogate,
    get_attack,
    pgd,
    targeted_loss,
    untargeted_loss,
)

WORDS = ["a", "red", "blue", "circle", "square", "yes", "no"]
SIDE = 4


class FakeCaptioner(nn.Module):
    """Stands in for a VLM adapter: mean token CE of a text under a linear pixel->word model.

    The prompt (the VQA question) shifts the logits so it demonstrably reaches the loss. Every
    call records the model state the loss saw.
    """

    def __init__(self, seed: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = nn.Linear(3 * SIDE * SIDE, len(WORDS))
        self.dropout = nn.Dropout(dropout)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.encoder.parameters():
                param.copy_(torch.randn(param.shape, generator=gen))
        self.seen: list[tuple[bool, bool, list[str] | None]] = []

    def logits(self, pixels: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        logits = self.encoder(self.dropout(pixels.flatten(1)))
        if prompts is not None:
            logits = logits + torch.tensor([[float(len(p))] for p in prompts]) * 0.1
        return logits

    def loss(self, pixels, texts, prompts=None):
        self.seen.append((self.training, any(p.requires_grad for p in self.parameters()), prompts))
        logits = self.logits(pixels, prompts)
        return torch.stack([token_ce(row, text) for row, text in zip(logits, texts, strict=True)])


def token_ce(row: torch.Tensor, text: str) -> torch.Tensor:
    ids = torch.tensor([WORDS.index(word) for word in text.split()])
    return nn.functional.cross_entropy(row.expand(len(ids), -1), ids)


class Adapter:
    """An adapter that is not itself a module but holds one, like ``prsl.models`` adapters."""

    def __init__(self, model: FakeCaptioner) -> None:
        self.model = model

    def loss(self, pixels, texts, prompts=None):
        return self.model.loss(pixels, texts, prompts)


TEXTS = ["a red circle", "a blue square"]


def images(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def expected_ce(model: FakeCaptioner, pixels, texts, prompts=None) -> torch.Tensor:
    """The eval-mode loss, computed independently of the wrapper (no dropout)."""
    with torch.no_grad():
        logits = model.encoder(pixels.flatten(1))
        if prompts is not None:
            logits = logits + torch.tensor([[float(len(p))] for p in prompts]) * 0.1
        return torch.stack([token_ce(row, text) for row, text in zip(logits, texts, strict=True)])


def test_untargeted_loss_is_the_eval_mode_ce_of_the_texts():
    model = FakeCaptioner().train()
    pixels = images()
    loss_fn = untargeted_loss(model, TEXTS)
    losses = loss_fn(pixels)
    assert torch.allclose(losses, expected_ce(model, pixels, TEXTS))
    assert not losses.requires_grad  # no graph through the frozen weights
    assert loss_fn(pixels.clone().requires_grad_(True)).requires_grad  # only through the pixels


def test_targeted_loss_is_minus_the_ce_of_the_target():
    model = FakeCaptioner()
    pixels = images()
    targets = ["no", "a blue circle"]
    assert torch.allclose(
        targeted_loss(model, targets)(pixels), -expected_ce(model, pixels, targets)
    )


def test_vqa_prompts_are_passed_to_the_adapter():
    model = FakeCaptioner()
    prompts = ["what colour is it?", "is there a square?"]
    losses = untargeted_loss(model, ["red", "yes"], prompts)(images())
    assert model.seen[-1][2] == prompts
    assert torch.allclose(losses, expected_ce(model, images(), ["red", "yes"], prompts))


@pytest.mark.parametrize("wrap", [lambda m: m, Adapter], ids=["module", "adapter-with-model"])
def test_loss_runs_in_eval_mode_with_frozen_parameters_then_restores_both(wrap):
    model = FakeCaptioner().train()
    model.dropout.eval()  # a mixed state must come back exactly
    model.encoder.bias.requires_grad_(False)
    untargeted_loss(wrap(model), TEXTS)(images())
    training, any_requires_grad, _ = model.seen[-1]
    assert not training and not any_requires_grad
    assert model.training and model.encoder.training and not model.dropout.training
    assert model.encoder.weight.requires_grad and not model.encoder.bias.requires_grad


def test_state_is_restored_when_the_loss_raises():
    model = FakeCaptioner().train()
    with pytest.raises(ValueError, match="'green' is not in list"):
        untargeted_loss(model, ["a green circle", "a red circle"])(images())
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_attack_mode_leaves_an_adapter_without_a_module_alone():
    class Plain:
        def loss(self, pixels, texts, prompts=None):
            return pixels.flatten(1).mean(dim=1)

    with attack_mode(Plain()):
        pass
    adv = bim(images(), untargeted_loss(Plain(), TEXTS), eps=0.1, alpha=0.05, steps=2)
    assert torch.allclose(adv, (images() + 0.1).clamp(max=1))  # mean pixel: every pixel goes up


def test_a_full_attack_keeps_the_model_state_and_writes_no_parameter_gradient():
    model = FakeCaptioner().train()
    pixels = images()
    adv = pgd(
        pixels,
        untargeted_loss(model, TEXTS),
        eps=0.1,
        alpha=0.03,
        steps=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert all(not training for training, _, _ in model.seen)  # dropout never fired
    assert (expected_ce(model, adv, TEXTS) > expected_ce(model, pixels, TEXTS)).all()


@pytest.mark.parametrize(
    ("texts", "prompts", "message"),
    [
        ([], None, "texts must hold one text per image; got none"),
        (TEXTS, ["one prompt"], "prompts must hold one prompt per text: got 1 prompts, 2 texts"),
    ],
)
def test_mismatched_texts_and_prompts_are_rejected_when_the_loss_is_built(texts, prompts, message):
    with pytest.raises(ValueError, match=message):
        untargeted_loss(FakeCaptioner(), texts, prompts)


def test_a_batch_that_does_not_match_the_texts_is_rejected():
    loss_fn = untargeted_loss(FakeCaptioner(), TEXTS)
    with pytest.raises(ValueError, match="the attack passed 3 images but the loss has 2 texts"):
        loss_fn(torch.rand(3, 3, SIDE, SIDE))


def test_craft_on_surrogate_is_the_attack_on_the_surrogate_loss():
    surrogate, target = FakeCaptioner(seed=1), FakeCaptioner(seed=2)
    attack = get_attack("bim", eps=0.1, alpha=0.02, steps=3)
    crafted = craft_on_surrogate(attack, images(), surrogate, TEXTS)
    assert torch.equal(crafted, attack(images(), untargeted_loss(surrogate, TEXTS)))
    assert not torch.equal(crafted, attack(images(), untargeted_loss(target, TEXTS)))


def test_craft_on_surrogate_keeps_the_steps_when_they_are_recorded():
    surrogate = FakeCaptioner(seed=1)
    recording = get_attack("bim", eps=0.1, alpha=0.02, steps=3, record_every_step=True)
    plain = get_attack("bim", eps=0.1, alpha=0.02, steps=3)
    crafted = craft_on_surrogate(recording, images(), surrogate, ["no", "yes"], targeted=True)
    assert isinstance(crafted, AttackResult) and len(crafted.steps) == 3
    expected = plain(images(), targeted_loss(surrogate, ["no", "yes"]))
    assert torch.equal(crafted.final, expected) and torch.equal(crafted.steps[-1], expected)


class MaskedCaptioner(FakeCaptioner):
    """The surrogate's weights behind a rounding of the pixels: zero gradients everywhere.

    A toy of gradient masking: white-box attacks see no signal, yet the model is no more robust.
    """

    def logits(self, pixels, prompts):
        return super().logits(torch.round(pixels * 4) / 4, prompts)


def test_transfer_exposes_a_model_whose_gradients_are_masked():
    surrogate = FakeCaptioner(seed=2, dropout=0.0)
    target = MaskedCaptioner(seed=2, dropout=0.0)
    pixels = images(3)
    attack = get_attack("bim", eps=0.3, alpha=0.1, steps=5)
    white_box = attack(pixels, untargeted_loss(target, TEXTS))
    assert torch.equal(white_box, pixels)  # no gradient, no step: looks perfectly robust
    transferred = craft_on_surrogate(attack, pixels, surrogate, TEXTS)
    assert (transferred - pixels).abs().max() <= 0.3 + 1e-6
    with torch.no_grad():
        clean_loss = target.loss(pixels, TEXTS)
        assert target.loss(transferred, TEXTS).mean() > clean_loss.mean() + 1.0


def test_attack_mode_is_entered_once_for_a_whole_attack():
    """Nested entries cost nothing and restore nothing early; the outer one restores all."""
    from prsl.attacks import attack_mode

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.1))
    model.train()
    model[0].weight.requires_grad_(False)
    with attack_mode(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        with attack_mode(model):
            pass
        assert not model.training  # the inner exit left the attack state in place
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and model[1].training
    assert [p.requires_grad for p in model.parameters()] == [False, True]
    assert not hasattr(model, "_prsl_in_attack_mode")
