"""Square Attack (Andriushchenko et al. 2020), Linf: random search with only loss queries.

No gradients, so it cannot be fooled by gradient masking (a model whose gradients are useless
but whose decisions are not robust): if it succeeds where PGD fails, the PGD numbers are not to
be trusted. The search, per the paper:

- start at the vertical stripes x0 + ε·s, s ∈ {−1, +1} drawn per (channel, column);
- at query i, pick a square of side round(√(p_i·H·W)) at a random position (per example) and set
  δ there to ±ε, one random sign per channel, keeping the proposal only where it raises the
  example's loss;
- p_i = p_init halved at the paper's iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
  of 10 000, rescaled to the ``queries`` budget.
"""

from __future__ import annotations

import bisect
import math
from typing import ClassVar

from prsl.attacks._checks import Eps, Fraction, Quantize, Queries
from prsl.attacks.base import DEFAULT_EPS, Attack
from prsl.attacks.constraint import BallConstraint, evaluate_losses, expand
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10 000 iterations
_RESAMPLES = 4  # bounded retries when a proposal would not change the image


def square_fraction(query: int, queries: int, p_init: float) -> float:
    """The fraction p of the image a square covers at ``query`` of ``queries``."""
    progress = int(query / queries * 10_000)
    return p_init / 2 ** bisect.bisect_left(_HALVINGS, progress)


def _side(fraction: float, height: int, width: int) -> int:
    side = round(math.sqrt(fraction * height * width))
    return max(1, min(side, height, width))


def _signs(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor):
    draw = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * draw - 1).to(like.dtype)


def _square_masks(
    batch: int, side: int, height: int, width: int, generator: torch.Generator | None, device
) -> torch.Tensor:
    """One random side×side square per example, as a boolean mask (B, 1, H, W)."""
    top = torch.randint(0, height - side + 1, (batch, 1), generator=generator, device=device)
    left = torch.randint(0, width - side + 1, (batch, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    return (in_rows[:, None, :, None] & in_cols[:, None, None, :]).contiguous()


class Square(Attack):
    """Score-based L∞ attack using ``queries`` loss evaluations (the stripe start counts)."""

    name: ClassVar[str] = "square"
    uses_gradients: ClassVar[bool] = False

    eps: Eps = DEFAULT_EPS
    queries: Queries = 1000
    p_init: Fraction = 0.05
    quantize: Quantize = None

    @property
    def iterations(self) -> int:
        return self.queries

    def run(self, images, loss_fn, generator):
        origin = images.detach()
        batch, channels, height, width = origin.shape
        constraint = BallConstraint(origin, self.eps, "linf", self.quantize)
        with torch.no_grad():
            best = constraint.project(
                origin + self.eps * _signs((batch, channels, 1, width), generator, origin)
            )
            best_loss = evaluate_losses(loss_fn, best)
            for query in range(1, self.queries):
                side = _side(square_fraction(query, self.queries, self.p_init), height, width)
                window = _square_masks(batch, side, height, width, generator, origin.device)
                proposal = best
                changed = torch.zeros(batch, dtype=torch.bool, device=origin.device)
                for _ in range(_RESAMPLES):
                    values = self.eps * _signs((batch, channels, 1, 1), generator, origin)
                    fresh = constraint.project(torch.where(window, origin + values, best))
                    proposal = torch.where(expand(changed, best), proposal, fresh)
                    changed = (proposal != best).flatten(1).any(dim=1)
                    if changed.all():
                        break
                losses = evaluate_losses(loss_fn, proposal)
                better = losses > best_loss
                best = torch.where(expand(better, best), proposal, best)
                best_loss = torch.where(better, losses, best_loss)
        return best


def square(images, loss_fn, *, generator=None, **params):
    """:class:`Square` as a function: ``square(images, loss_fn, eps=8/255, queries=1000)``."""
    return Square(**params)(images, loss_fn, generator=generator)
