"""A small classifier that attacks can really fool, trained in a second: four classes of 8x8 RGB
Gaussian blobs around grey, a 192-64-4 MLP trained 200 Adam steps. Shared by
``test_attacks_classifier`` and ``benchmarks/strength.py`` (which puts this folder on its path),
so the benchmark measures exactly the suite's model."""

from __future__ import annotations

import math

import torch
from torch import nn

CLASSES = 4
SHAPE = (3, 8, 8)


def blobs(prototypes: torch.Tensor, n: int, gen: torch.Generator):
    """``n`` images around the class prototypes (pixel noise of std 0.15) and their labels."""
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    noise = 0.15 * torch.randn(n, *SHAPE, generator=gen)
    return (prototypes[labels] + noise).clamp(0, 1), labels


def trained_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode, 200 test images, their labels); deterministic, global RNG untouched."""
    gen = torch.Generator().manual_seed(0)
    signs = 2 * torch.randint(0, 2, (CLASSES, *SHAPE), generator=gen) - 1
    prototypes = 0.5 + 0.05 * signs
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(SHAPE), 64), nn.ReLU(), nn.Linear(64, CLASSES)
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        images, labels = blobs(prototypes, 64, gen)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels = blobs(prototypes, 200, torch.Generator().manual_seed(1))
    return model, images, labels


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()
