"""FARE: unsupervised adversarial fine-tuning of a VLM's vision encoder (Schlarmann et al. 2024).

The robust encoder should map an attacked image where the original encoder mapped the clean
one: minimise ``||φ(x + δ) − φ₀(x)||²`` over the encoder φ, with φ₀ a frozen copy of the encoder
as fine-tuning found it and δ the L∞ PGD perturbation that maximises the same distance against
the current φ. No text, no labels: the rest of the model (language model, projector, Q-Former)
never changes, so the fine-tuned encoder plugs back into it as it is.

Under ``accelerate launch`` (DDP: several GPUs, or CPU processes) each process attacks its share
of a step's images. The encoder is called directly, never through the DDP wrapper of the whole
model, so DDP's gradient hooks stay idle and :func:`sum_gradients` all-reduces the encoder's
gradients instead, each process's share already divided by the step's images on every process.
The random starts follow the images (:func:`fare_seed`), not the process layout.
"""

from __future__ import annotations

import copy

import torch
from accelerate.utils import DistributedType
from torch import nn

from prsl.attacks import attack_mode
from prsl.core.errors import InvalidInput
from prsl.models import HFAdapter, check_vision_encoder
from prsl.train.adversarial import mixing_seed
from prsl.train.config import TINY, FareConfig, ModelConfig

FARE = "fare"
"""The loss a FARE-trained model's record names (its ``loss_params``: ε, steps, α)."""


DATA_PARALLEL = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
"""The launches FARE runs under: one process, or DDP over CPU processes or GPUs."""


def check_fare(cfg: ModelConfig, distributed: DistributedType) -> None:
    """Refuse a FARE run that cannot work before anything is loaded or written: a sharded
    launch, or a model whose vision encoder prsl cannot separate."""
    if distributed not in DATA_PARALLEL:
        raise InvalidInput(
            f"train.fare runs in one process or data-parallel (accelerate launch --multi_gpu), "
            f"not under {distributed.value}: its encoder is small enough to hold on every device"
        )
    if cfg.name_or_path != TINY:
        check_vision_encoder(cfg.name_or_path, cfg.family, cfg.trust_remote_code)


def prepare_fare(adapter: HFAdapter) -> nn.Module:
    """Train only the vision encoder (the launch passed :func:`check_fare`); returns the
    frozen original it is pulled towards."""
    encoder = adapter.vision_encoder()
    reference = copy.deepcopy(encoder).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    for param in adapter.model.parameters():
        param.requires_grad_(False)
    for param in encoder.parameters():
        param.requires_grad_(True)
    return reference


def embedding_distance(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: squared L2 distance summed over features, averaged over tokens (B,)."""
    return (features.float() - target.float()).pow(2).sum(dim=-1).flatten(1).mean(dim=1)


def fare_seed(seed: int, step: int, first_item: int) -> int:
    """The seed of a micro-batch share's random starts, from the run's seed, the step and the
    index of the first sample it attacks: two processes with micro-batches of 2 draw what one
    process draws with micro-batches of 1 and ``grad_accum`` 2."""
    return mixing_seed(seed, step, first_item, 0)


def fare_distances(
    adapter: HFAdapter,
    reference: nn.Module,
    pixels: torch.Tensor,
    cfg: FareConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Each image's FARE objective at its worst-case δ, (B,) with a graph to the encoder."""
    with torch.no_grad():
        target = adapter.image_features(pixels, encoder=reference)

    def distance(images: torch.Tensor) -> torch.Tensor:
        return embedding_distance(adapter.image_features(images), target)

    with attack_mode(adapter):  # eval mode and frozen weights while δ is searched
        attacked = cfg.built(pixels.detach(), distance, generator=generator)
    return distance(attacked.detach())


def sum_gradients(params: list[nn.Parameter]) -> None:
    """Sum the gradients over the processes, in one all-reduce per dtype (see the module
    docstring). Every process has the same parameters with a gradient: one graph, one encoder."""
    with_grad = [p for p in params if p.grad is not None]
    for dtype in {p.grad.dtype for p in with_grad}:
        grads = [p.grad for p in with_grad if p.grad.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(part.view_as(grad))
