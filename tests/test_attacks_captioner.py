"""BIM against a real (tiny, trained) captioner: it changes captions, within the threat model.

A tiny ViT + GPT-2 captioner is trained on shapes for a few hundred Adam steps (the session's
``trained_captioner``, shared with ``test_models_training``), then attacked with BIM-10 at
ε = 8/255, α = 2/255, untargeted on its own clean captions of held-out images. A model trained
for seconds is a draw: another seed or another CPU's kernels give another model. Thresholds were
measured with ``tests/calibration.py captioner`` over 12 draws (model seeds 0-5 natively with
AVX-512 and one thread, seeds 0-2 with two threads, with AVX2 only and with no SIMD), and set
with margin:

- distinct clean captions of 32: 8-25 (asserted >= 4: not one template caption);
- captions changed: 94-100 % (asserted >= 75 %); random ±ε sign noise changed 9-22 % (<= 40 %);
- corpus BLEU-2 of the adversarial captions against the clean ones: 0.32-0.60 (<= 0.75);
  for the noise: 0.92-0.98 (>= 0.85);
- mean CE of the clean captions attacked over clean: 1.66-2.20 (asserted >= 1.4), and higher
  for every image (>= 90 %);
- mean |δ| is 0.73-0.81 ε (>= 0.5 ε): the attack uses its budget;
- C&W changed 8 of 8 captions in every draw (>= 50 %);
- rows whose greedy decisions are all clearer than ``near_ties.MARGIN``: 94-100 % (>= 85 %).

The noise baseline shows that the attack, not the ε-ball alone, moves the captions.
"""

from __future__ import annotations

import math

import pytest
import torch

from near_ties import MARGIN, agree_where_decisive, decision_margins, decisive
from prsl.attacks import CW, bim, craft_on_surrogate, untargeted_loss, untargeted_success
from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from shapes_training import corpus_bleu

HELD_OUT = 32
EPS = 8 / 255
ALPHA = EPS / 4
STEPS = 10
MAX_NEW_TOKENS = 16


def bleu2(candidates: list[str], references: list[str]) -> float:
    """Corpus BLEU-2 with one reference per candidate."""
    return corpus_bleu(candidates, [(ref,) for ref in references])


def test_bleu2_on_hand_computed_cases():
    assert bleu2(["a red circle", "a blue square"], ["a red circle", "a blue square"]) == 1.0
    assert bleu2(["blue"], ["a red circle"]) == 0.0
    # unigrams 2/3, bigrams 1/2, same length: sqrt(1/3)
    assert bleu2(["a red square"], ["a red circle"]) == pytest.approx(math.sqrt(1 / 3))
    # a perfect but short candidate pays the brevity penalty exp(1 - 3/2)
    assert bleu2(["a red"], ["a red circle"]) == pytest.approx(math.exp(-0.5))


@pytest.fixture(scope="module")
def captioner(trained_captioner):
    """(adapter, held-out pixels, clean captions) of the captioner trained on shapes."""
    held_out = make_shapes_captions(HELD_OUT, seed=1000).examples
    adapter = trained_captioner
    pixels = to_pixels([ex.image for ex in held_out], adapter.pixel_size)
    clean = adapter.generate(pixels, max_new_tokens=MAX_NEW_TOKENS)
    return adapter, pixels, clean


@pytest.fixture(scope="module")
def attacked(captioner):
    """Run BIM once with the model left in train mode, recording what every forward saw."""
    adapter, pixels, clean = captioner
    model = adapter.model
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()  # as a training loop would leave it: the attack must not depend on that
    model.decoder.eval()  # a mixed state, to check that it comes back module by module
    modes_before = {name: sub.training for name, sub in model.named_modules()}
    seen: list[tuple[bool, bool]] = []

    def record(module, args, kwargs):
        seen.append((module.training, any(p.requires_grad for p in module.parameters())))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        adversarial = bim(
            pixels, untargeted_loss(adapter, clean), eps=EPS, alpha=ALPHA, steps=STEPS
        )
    finally:
        handle.remove()
    modes_after = {name: sub.training for name, sub in model.named_modules()}
    model.eval()
    return {
        "adversarial": adversarial,
        "captions": adapter.generate(adversarial, max_new_tokens=MAX_NEW_TOKENS),
        "seen": seen,
        "modes_before": modes_before,
        "modes_after": modes_after,
        "weights": weights,
    }


@pytest.fixture(scope="module")
def noise_captions(captioner):
    """Captions of the images under random ±ε sign noise: the same budget, no gradient."""
    adapter, pixels, _ = captioner
    gen = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, pixels.shape, generator=gen).float() * 2 - 1
    noisy = (pixels + EPS * signs).clamp(0, 1)
    return adapter.generate(noisy, max_new_tokens=MAX_NEW_TOKENS)


def changed_fraction(captions: list[str], clean: list[str]) -> float:
    return sum(a != c for a, c in zip(captions, clean, strict=True)) / len(clean)


def test_the_clean_captions_are_varied(captioner):
    """A model writing one template caption would make "changed" meaningless."""
    _, _, clean = captioner
    assert len(set(clean)) >= HELD_OUT // 8, clean  # measured 8-25 distinct of 32
    assert all(clean), clean


def test_bim_changes_most_captions_and_noise_does_not(captioner, attacked, noise_captions):
    _, _, clean = captioner
    changed = changed_fraction(attacked["captions"], clean)
    noise_changed = changed_fraction(noise_captions, clean)
    assert changed >= 0.75, list(zip(clean, attacked["captions"], strict=True))
    assert noise_changed <= 0.4, list(zip(clean, noise_captions, strict=True))


def test_bim_lowers_similarity_to_the_clean_caption(captioner, attacked, noise_captions):
    _, _, clean = captioner
    assert bleu2(clean, clean) == 1.0
    attacked_bleu = bleu2(attacked["captions"], clean)
    noise_bleu = bleu2(noise_captions, clean)
    assert attacked_bleu <= 0.75, attacked_bleu
    assert noise_bleu >= 0.85, noise_bleu


def test_bim_raises_the_loss_it_climbs(captioner, attacked):
    adapter, pixels, clean = captioner
    loss_fn = untargeted_loss(adapter, clean)
    with torch.no_grad():
        before, after = loss_fn(pixels), loss_fn(attacked["adversarial"])
    assert after.mean() >= 1.4 * before.mean(), (before.mean(), after.mean())
    assert (after > before).float().mean() >= 0.9


def test_adversarial_images_stay_in_the_eps_ball_and_unit_range(captioner, attacked):
    _, pixels, _ = captioner
    adversarial = attacked["adversarial"]
    assert adversarial.shape == pixels.shape and adversarial.dtype == pixels.dtype
    assert not adversarial.requires_grad
    delta = (adversarial - pixels).abs()
    assert delta.max() <= EPS + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    # and the budget is actually used: ten steps of ε/4 push most pixels to the boundary
    assert delta.mean() >= EPS / 2, delta.mean()


def test_the_attack_leaves_the_model_as_it_found_it(captioner, attacked):
    adapter, _, _ = captioner
    model = adapter.model
    assert len(attacked["seen"]) == STEPS  # one forward per step
    # every forward ran in eval mode (no dropout) with frozen parameters ...
    assert all(seen == (False, False) for seen in attacked["seen"]), attacked["seen"]
    # ... and afterwards each module's mode is what it was, not just the root's
    assert attacked["modes_after"] == attacked["modes_before"]
    assert attacked["modes_before"][""] and not attacked["modes_before"]["decoder"]
    for name, param in model.named_parameters():
        assert param.requires_grad, name
        assert param.grad is None, name
    for name, value in model.state_dict().items():
        assert torch.equal(value, attacked["weights"][name]), name


def test_tokens_match_is_whether_greedy_decoding_still_gives_the_text(captioner, attacked):
    """C&W's success on a captioner: one forward pass says what generation would say (on the
    rows where no greedy choice is a near tie, which two float computations may break apart)."""
    adapter, pixels, clean = captioner
    for images in (pixels, attacked["adversarial"]):
        generated = adapter.generate(images, max_new_tokens=MAX_NEW_TOKENS)
        same = [g == c for g, c in zip(generated, clean, strict=True)]
        clear = decisive(adapter, images, clean)
        agree_where_decisive(adapter.tokens_match(images, clean)[0].tolist(), same, clear)
    assert adapter.tokens_match(pixels, clean)[0].all()


def test_cw_with_its_search_over_c_changes_captions_within_its_budget(captioner):
    adapter, pixels, clean = captioner
    attack = CW(eps=1.0, steps=10, search_steps=3, lr=0.05, c=1.0)
    adversarial = craft_on_surrogate(attack, pixels[:8], adapter, clean[:8])
    captions = adapter.generate(adversarial, max_new_tokens=MAX_NEW_TOKENS)
    assert changed_fraction(captions, clean[:8]) >= 0.5
    assert (adversarial - pixels[:8]).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5


def test_success_of_outputs_cut_short_is_judged_without_their_end(captioner, attacked):
    """A clean output that generation cut at max_new_tokens never ended: its success is "decoding
    no longer begins with it", what generating as many tokens again says. One that ended within
    the limit keeps its end: it succeeds when decoding no longer stops there, what generating one
    token more says."""
    adapter, pixels, _ = captioner
    short = adapter.generate(pixels, max_new_tokens=3)
    whole, begun = adapter.tokens_match(pixels, short)
    assert not whole.all()  # with the end token: only the outputs that ended within 3 tokens
    assert begun.all()
    success = untargeted_success(adapter, short, None, pixels)
    assert not success(pixels).any()
    adversarial = attacked["adversarial"]
    again = adapter.generate(adversarial, max_new_tokens=3)
    longer = adapter.generate(adversarial, max_new_tokens=4)
    ended = whole.tolist()
    expected = [
        (more if end else same) != s
        for more, same, s, end in zip(longer, again, short, ended, strict=True)
    ]
    with_end = decision_margins(adapter, adversarial, short)
    without_end = decision_margins(adapter, adversarial, short, with_end=False)
    clear = (torch.where(whole, with_end, without_end) > MARGIN).tolist()
    agree_where_decisive(success(adversarial).tolist(), expected, clear)
    assert any(expected)
