"""On a GPU: an attack step never waits for the device (no host synchronisation per step), so
the steps of a batch run back to back. Skipped, visibly, without CUDA; ``benchmarks/gpu.sh`` runs
it. ``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising call (``.item()``, a
device-to-host copy, ``nonzero``) into an error while the steps run."""

from __future__ import annotations

import pytest
import torch

from prsl.attacks import attack_mode, untargeted_loss
from prsl.attacks._ascent import ascend, sign_step
from prsl.attacks.constraint import BallConstraint
from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.models import build_tiny_captioner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bim_steps_never_synchronise_with_the_host(dtype):
    examples = make_shapes_captions(8, seed=0).examples
    adapter = build_tiny_captioner([r for ex in examples for r in ex.references], seed=0)
    adapter.model.to(device="cuda", dtype=dtype)
    pixels = to_pixels([ex.image for ex in examples], adapter.pixel_size).cuda()
    texts = [ex.references[0] for ex in examples]
    loss = untargeted_loss(adapter, texts)
    constraint = BallConstraint(pixels, 8 / 255)
    with attack_mode(adapter):
        loss(pixels)  # the first call builds the batch on the device
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            final, _ = ascend(
                pixels, loss, constraint, steps=10, step=sign_step(1 / 255), record=False
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert (final - pixels).abs().max().item() <= 8 / 255 + 1e-6
