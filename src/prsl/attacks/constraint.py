"""The threat model every attack projects onto: an ε-ball around the clean images, inside [0, 1].

One object owns the invariant "every returned image is a valid adversarial example", so the
attacks only have to call :meth:`BallConstraint.project` after each step. Optional extras,
applied inside the projection so that no attack can forget them:

- ``quantize="uint8"``: every iterate is an image an 8-bit file can hold (values k/255). Plain
  rounding can leave the ball (round(x0 + 8.4/255) is 8/255 away for eps = 8.2/255, fine, but
  round(x0 + 0.6/255) is 1/255 away for eps = 0.6/255, outside). So rounding is restricted to
  grid points inside the ball: for Linf the grey level is clamped to k0 ± floor(255·eps); for L2
  nearest rounding is kept when the rounded δ still fits, otherwise every δ is rounded toward
  zero, which can only shrink its norm. Both need the clean images on the grid.
- ``jpeg_quality``: the authors saved and reloaded a JPEG after every step. JPEG can move pixels
  outside the ball, so the decoded image is projected again.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from prsl.attacks._checks import LossFn, check_losses
from prsl.core.errors import InvalidInput
from prsl.core.lazy import lazy_import
from prsl.core.pixels import LEVELS, to_uint8

torch = lazy_import("torch", globals())

_GRID_TOLERANCE = 1e-3  # in grey levels: float32 k/255 is within 1e-5 of the grid
_EPS_TOLERANCE = 1e-4  # in grey levels: eps = 8/255 must allow 8 levels despite rounding


def per_example_norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example of a batch, shape (B,)."""
    return tensor.flatten(1).norm(dim=1)


def expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-example values (B,) against a batch of images (B, C, H, W)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def keep_better(
    best: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
    new: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Of two restarts, each ``(final images, their loss (B,), recorded iterates)``, per example
    the one with the higher loss (ties keep ``best``): how PGD and APGD merge their restarts."""
    (images, loss, history), (new_images, new_loss, new_history) = best, new
    better = new_loss > loss
    keep = expand(better, new_images)
    return (
        torch.where(keep, new_images, images),
        torch.where(better, new_loss, loss),
        [torch.where(keep, n, o) for n, o in zip(new_history, history, strict=True)],
    )


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as an in-memory JPEG of ``quality`` and decode it (the authors' loop)."""
    decoded = []
    for image in images.detach():
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as reloaded:
            pixels = np.array(reloaded.convert("RGB"))
        decoded.append(torch.from_numpy(pixels).permute(2, 0, 1))
    return torch.stack(decoded).to(device=images.device, dtype=images.dtype) / LEVELS


class BallConstraint:
    """Projection onto {x : ||x - origin|| <= eps} ∩ [0, 1] (∩ the 8-bit grid when quantized).

    Linf: exact projection (a clamp per pixel). L2: δ is scaled into the ball, then clipped to
    [0, 1]; clipping moves every pixel toward its clean value (which is in [0, 1]), so the norm
    never grows and the result stays inside both sets.
    """

    def __init__(
        self,
        origin: torch.Tensor,
        eps: float,
        norm: str = "linf",
        quantize: str | None = None,
        jpeg_quality: int | None = None,
    ) -> None:
        self.origin = origin.detach()
        self.eps = float(eps)
        self.norm = norm
        self.quantize = quantize
        self.jpeg_quality = jpeg_quality
        self._levels: torch.Tensor | None = None
        if quantize is not None:
            scaled = self.origin * LEVELS
            if (scaled - scaled.round()).abs().max().item() > _GRID_TOLERANCE:
                raise InvalidInput(
                    "quantize='uint8' needs images already on the 8-bit grid (values k/255), "
                    "e.g. images = (images * 255).round() / 255"
                )
            self._levels = scaled.round()

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The point of the threat model that stands for ``images`` (detached)."""
        projected = self._into_ball(images.detach())
        if self.jpeg_quality is not None:
            projected = self._into_ball(jpeg_roundtrip(projected, self.jpeg_quality))
        if self._levels is not None:
            projected = self._snap(projected)
        return projected

    def random_start(
        self, generator: torch.Generator | None, *, l2_radius: str = "ball"
    ) -> torch.Tensor:
        """A random point of the ball (then projected like any iterate).

        Linf: uniform in the cube. L2: a uniformly random direction at a random radius, drawn
        with ``l2_radius="ball"`` as ε·U^(1/d), which makes the point uniform in the
        d-dimensional ball (so nearly on its surface when d is large), or with
        ``l2_radius="eps_u"`` as ε·U (the start of torchattacks and most PGD-L2 code: the mean
        radius is ε/2 whatever d). Both draw the same numbers from ``generator``.
        """
        if l2_radius not in ("ball", "eps_u"):
            raise ValueError(f"l2_radius must be 'ball' or 'eps_u'; got {l2_radius!r}")
        origin = self.origin
        if self.norm == "linf":
            unit = torch.rand(
                origin.shape, generator=generator, device=origin.device, dtype=origin.dtype
            )
            delta = (2 * unit - 1) * self.eps
        else:
            direction = torch.randn(
                origin.shape, generator=generator, device=origin.device, dtype=origin.dtype
            )
            direction = direction / expand(per_example_norm(direction).clamp_min(1e-12), origin)
            uniform = torch.rand(
                origin.shape[0], generator=generator, device=origin.device, dtype=origin.dtype
            )
            if l2_radius == "ball":
                radius = self.eps * uniform.pow(1.0 / origin[0].numel())
            else:
                radius = self.eps * uniform
            delta = direction * expand(radius, origin)
        return self.project(origin + delta)

    def _into_ball(self, images: torch.Tensor) -> torch.Tensor:
        origin = self.origin
        if self.norm == "linf":
            inside = torch.minimum(torch.maximum(images, origin - self.eps), origin + self.eps)
        else:
            delta = images - origin
            scale = (self.eps / per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            inside = origin + delta * expand(scale, delta)
        return inside.clamp(0.0, 1.0)

    def _snap(self, images: torch.Tensor) -> torch.Tensor:
        assert self._levels is not None
        levels0 = self._levels
        scaled = images * LEVELS
        if self.norm == "linf":
            reach = math.floor(self.eps * LEVELS + _EPS_TOLERANCE)
            low = (levels0 - reach).clamp(min=0)
            high = (levels0 + reach).clamp(max=LEVELS)
            levels = scaled.round().clamp(low, high)
        else:
            nearest = scaled.round()
            fits = per_example_norm(nearest - levels0) <= self.eps * LEVELS + _EPS_TOLERANCE
            toward_zero = levels0 + (scaled - levels0).trunc()
            levels = torch.where(expand(fits, nearest), nearest, toward_zero)
        return levels / LEVELS


def loss_and_grad(loss_fn: LossFn, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses at ``images`` and their gradient w.r.t. the pixels only.

    ``torch.autograd.grad`` (not ``.backward()``) so no parameter ``.grad`` is ever written,
    whatever the model's ``requires_grad`` flags are.
    """
    pixels = images.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = check_losses(loss_fn(pixels), pixels.shape[0])
        if not losses.requires_grad:
            raise ValueError(
                "loss_fn(images) is not differentiable w.r.t. images (was it computed under "
                "torch.no_grad()?); use the gradient-free 'square' attack for such models"
            )
        (grad,) = torch.autograd.grad(losses.sum(), pixels, allow_unused=True)
    if grad is None:
        raise ValueError("loss_fn(images) does not depend on images: there is nothing to attack")
    return losses.detach(), grad.detach()


def evaluate_losses(loss_fn: LossFn, images: torch.Tensor) -> torch.Tensor:
    """Per-example losses without building a graph (for picking the best iterate)."""
    with torch.no_grad():
        return check_losses(loss_fn(images), images.shape[0]).detach()
