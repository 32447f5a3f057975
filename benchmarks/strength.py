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
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from blob_classifier import accuracy, trained_classifier  # noqa: E402  the suite's model
from prsl.attacks import pgd
from prsl.attacks._ascent import ascend, steepest_step
from prsl.attacks.constraint import BallConstraint


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
    model, images, labels = trained_classifier()

    def loss_fn(x):
        return torch.nn.functional.cross_entropy(model(x), labels, reduction="none")

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
