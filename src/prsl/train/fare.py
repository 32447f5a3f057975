"""FARE: unsupervised adversarial fine-tuning of a VLM's vision encoder (Schlarmann et al. 2024).

The robust encoder should map an attacked image where the original encoder mapped the clean
one: minimise ``||φ(x + δ) − φ₀(x)||²`` over the encoder φ, with φ₀ a frozen copy of the encoder
as fine-tuning found it and δ the L∞ PGD perturbation that maximises the same distance against
the current φ. No text, no labels: the rest of the model (language model, projector, Q-Former)
never changes, so the fine-tuned encoder plugs back into it as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prsl.attacks import attack_mode
from prsl.core.errors import InvalidInput
from prsl.models import HFAdapter
from prsl.train.config import FareConfig

FARE = "fare"
"""The loss a FARE-trained model's record names (its ``loss_params``: ε, steps, α)."""


def prepare_fare(adapter: HFAdapter, processes: int) -> nn.Module:
    """Train only the vision encoder; returns the frozen original it is pulled towards."""
    if processes > 1:
        raise InvalidInput(
            "train.fare runs in one process in this version: launch it without accelerate "
            "launch (or with --num_processes 1)"
        )
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


def fare_loss(
    adapter: HFAdapter,
    reference: nn.Module,
    pixels: torch.Tensor,
    cfg: FareConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The batch's FARE objective at its worst-case δ (a scalar with a graph to the encoder)."""
    with torch.no_grad():
        target = adapter.image_features(pixels, encoder=reference)

    def distance(images: torch.Tensor) -> torch.Tensor:
        return embedding_distance(adapter.image_features(images), target)

    with attack_mode(adapter):  # eval mode and frozen weights while δ is searched
        attacked = cfg.built(pixels.detach(), distance, generator=generator)
    return distance(attacked.detach()).mean()
