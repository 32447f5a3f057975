"""Attack strength of PGD-L2's random start: uniform in the ball vs radius ε·U.

Run: ``python benchmarks/strength.py`` (CPU, about 15 s). The classifier and data are the
end-to-end suite's (``tests/test_attacks_classifier.py``): four classes of 8x8 RGB blobs, a
192-64-4 MLP trained 200 Adam steps, 200 test images, clean accuracy 100 %. PGD-L2 at each
``--eps`` with α = ε/4 runs ``--steps`` steps from each start over ``--seeds`` generator seeds
(0..7); the figure is robust accuracy (the share of images still classified correctly), mean and
range over the seeds. Both starts draw the same numbers from the same seed: only the radius
differs (ε·U^(1/192), uniform in the ball, against ε·U). The "eps_u" rows are checked to be
exactly what ``prsl.attacks.pgd`` returns.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics

import torch
from torch import nn

from prsl.attacks import pgd
from prsl.attacks._ascent import ascend, steepest_step
from prsl.attacks.constraint import BallConstraint

CLASSES = 4
SHAPE = (3, 8, 8)


def blobs(prototypes: torch.Tensor, n: int, gen: torch.Generator):
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    noise = 0.15 * torch.randn(n, *SHAPE, generator=gen)
    return (prototypes[labels] + noise).clamp(0, 1), labels


def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The suite's classifier, trained exactly as its ``trained`` fixture trains it."""
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


def pgd_from(start: str, images, loss_fn, eps: float, steps: int, seed: int) -> torch.Tensor:
    """PGD-L2 (α = ε/4, one start) from the ``start`` of :meth:`BallConstraint.random_start`."""
    constraint = BallConstraint(images, eps, "l2")
    begin = constraint.random_start(torch.Generator().manual_seed(seed), l2_radius=start)
    final, _ = ascend(
        begin, loss_fn, constraint, steps=steps, step=steepest_step(eps / 4, "l2"), record=False
    )
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, nargs="+", default=[0.3, 0.4, 0.5, 1.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, images, labels = trained()

    def loss_fn(x):
        return nn.functional.cross_entropy(model(x), labels, reduction="none")

    clean = accuracy(model, images, labels)
    for eps, steps in itertools.product(args.eps, args.steps):
        for start in ("ball", "eps_u"):
            robust = []
            for seed in range(args.seeds):
                adv = pgd_from(start, images, loss_fn, eps, steps, seed)
                if start == "eps_u":  # the library's PGD is this very start
                    same = pgd(
                        images,
                        loss_fn,
                        eps=eps,
                        steps=steps,
                        norm="l2",
                        generator=torch.Generator().manual_seed(seed),
                    )
                    assert torch.equal(adv, same)
                robust.append(accuracy(model, adv, labels))
            print(
                json.dumps(
                    {
                        "start": start,
                        "eps": eps,
                        "steps": steps,
                        "seeds": args.seeds,
                        "clean": round(clean, 4),
                        "robust_mean": round(statistics.fmean(robust), 4),
                        "robust_min": round(min(robust), 4),
                        "robust_max": round(max(robust), 4),
                        "torch": torch.__version__,
                        "machine": platform.machine(),
                    }
                )
            )


if __name__ == "__main__":
    main()
