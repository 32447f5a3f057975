"""Captioning / VQA loss functions for the attacks, built from any model adapter.

Attacks only see ``loss_fn(images) -> (B,)``. These wrappers build it from anything with a
``loss(pixels, texts, prompts=None)`` method (a ``prsl.models`` adapter, or a test double),
and own the model-state discipline: during every call the model is in eval mode (no dropout:
the loss the attack climbs is the loss that will be evaluated) and its parameters do not require
gradients (no graph through the weights, no parameter memory); both are restored afterwards,
module by module and parameter by parameter, even when the call fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from prsl.attacks.base import Attack, AttackResult, LossFn
from prsl.attacks.cw import SuccessFn
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())


class SupportsLoss(Protocol):
    """What the wrappers need from a model: per-example mean token CE of ``texts`` (B,); and,
    for attacks that judge success (C&W), whether its most likely tokens are ``texts`` (B,)."""

    def loss(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> torch.Tensor: ...

    def tokens_match(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _module_of(adapter: object) -> torch.nn.Module | None:
    if isinstance(adapter, torch.nn.Module):
        return adapter
    model = getattr(adapter, "model", None)
    return model if isinstance(model, torch.nn.Module) else None


_IN_ATTACK_MODE = "_prsl_in_attack_mode"
"""Set on a model while :func:`attack_mode` holds it, so that entering again costs nothing."""


@contextmanager
def attack_mode(adapter: object) -> Iterator[None]:
    """Eval mode and frozen parameters for the adapter's model (``adapter.model`` or itself).

    Restores each submodule's own train/eval flag (a partly frozen model such as BLIP-2 with an
    eval-mode LLM stays that way) and each parameter's ``requires_grad``. An adapter without an
    ``torch.nn.Module`` has no state to manage and is left alone.
    """
    module = _module_of(adapter)
    if module is None or getattr(module, _IN_ATTACK_MODE, False):
        # nothing to manage, or already entered around the whole attack: the loss function
        # enters it on every call, which costs a walk over every module and parameter (about
        # 4 ms per call on the ViT-GPT2 architecture on CPU), so an attack enters it once
        yield
        return
    modes = [(sub, sub.training) for sub in module.modules()]
    flags = [(param, param.requires_grad) for param in module.parameters()]
    module.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    setattr(module, _IN_ATTACK_MODE, True)
    try:
        yield
    finally:
        delattr(module, _IN_ATTACK_MODE)
        for sub, training in modes:
            sub.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


def _text_loss(
    adapter: SupportsLoss, texts: Sequence[str], prompts: Sequence[str] | None, sign: float
) -> LossFn:
    texts = list(texts)
    prompts = None if prompts is None else list(prompts)
    if not texts:
        raise ValueError("texts must hold one text per image; got none")
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(
            f"prompts must hold one prompt per text: got {len(prompts)} prompts, {len(texts)} texts"
        )

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != len(texts):
            raise ValueError(
                f"the attack passed {images.shape[0]} images but the loss has {len(texts)} texts"
            )
        with attack_mode(adapter):
            return sign * adapter.loss(images, texts, prompts)

    return loss_fn


def untargeted_loss(
    adapter: SupportsLoss, texts: Sequence[str], prompts: Sequence[str] | None = None
) -> LossFn:
    """Loss to maximise: the CE of ``texts`` (the model's clean output, or the ground truth).

    For VQA, ``prompts`` carry the questions and the adapter counts the answer tokens only.
    """
    return _text_loss(adapter, texts, prompts, 1.0)


def targeted_loss(
    adapter: SupportsLoss, target_texts: Sequence[str], prompts: Sequence[str] | None = None
) -> LossFn:
    """Loss to maximise: minus the CE of ``target_texts`` (drives the model toward them)."""
    return _text_loss(adapter, target_texts, prompts, -1.0)


def _matches(adapter: SupportsLoss, images, texts, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    with attack_mode(adapter), torch.no_grad():
        whole, begun = adapter.tokens_match(images, texts, prompts)
        return whole.bool(), begun.bool()


def untargeted_success(
    adapter: SupportsLoss,
    texts: Sequence[str],
    prompts: Sequence[str] | None,
    clean_images: torch.Tensor,
) -> SuccessFn:
    """Success of an untargeted attack: the model's most likely tokens no longer spell
    ``texts``. For its own greedy output (the default target) that is "the output changed".
    An output that generation cut at ``max_new_tokens`` never ended, so for it the end token is
    left out of the match ("decoding no longer begins with it"). An example whose clean image
    reproduces ``texts`` neither way (the ground truth, usually) never counts as a success:
    its attack keeps its highest-loss iterate."""
    texts, prompts = list(texts), None if prompts is None else list(prompts)
    whole, begun = _matches(adapter, clean_images, texts, prompts)
    cut = begun & ~whole  # judged without the end token

    def success(images: torch.Tensor) -> torch.Tensor:
        now_whole, now_begun = _matches(adapter, images, texts, prompts)
        return (whole & ~now_whole) | (cut & ~now_begun)

    return success


def targeted_success(
    adapter: SupportsLoss, target_texts: Sequence[str], prompts: Sequence[str] | None
) -> SuccessFn:
    """Success of a targeted attack: the model's most likely tokens spell the target."""
    texts, prompts = list(target_texts), None if prompts is None else list(prompts)
    return lambda images: _matches(adapter, images, texts, prompts)[0]


def craft_on_surrogate(
    attack: Attack,
    images: torch.Tensor,
    surrogate: SupportsLoss,
    texts: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor | AttackResult:
    """Adversarial images crafted on ``surrogate``, to be scored on another (target) model.

    Why: a training change can make a model *look* robust by breaking its gradients (gradient
    masking) rather than its vulnerability. Images crafted on an independent surrogate do not
    rely on the target's gradients, so if they fool the target more than white-box ones do, the
    white-box numbers are masked. ``texts`` are the surrogate's targets (its clean output or the
    ground truth; with ``targeted=True`` the texts to steer toward). ``start``: where the attack
    begins (attacks that take one; see :meth:`Attack.__call__`). Returns what the attack
    returns (an :class:`AttackResult` with ``record_every_step``).
    """
    make = targeted_loss if targeted else untargeted_loss
    judged = {}
    if attack.uses_success:  # success is the surrogate's too: it is the one being attacked
        judged["success_fn"] = (
            targeted_success(surrogate, texts, prompts)
            if targeted
            else untargeted_success(surrogate, texts, prompts, images)
        )
    # never the target's gradients: the loss is the surrogate's; the model's state is set once
    # for the whole attack, not on every loss call
    if start is not None:
        judged["start"] = start
    with attack_mode(surrogate):
        return attack(images, make(surrogate, texts, prompts), generator=generator, **judged)
