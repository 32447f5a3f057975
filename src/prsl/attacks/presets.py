"""ε parsing and the paper's attack settings, converted to pixel units.

The paper states ε and α in the model's normalised input units, (x − mean)/std. This package
attacks pixels in [0, 1] (the adapter normalises), so a normalised-unit budget β corresponds to
β·std in pixel units:

- ViT-GPT2 normalises with std 0.5: α = 0.01 → 0.005, ε = 0.5 → 0.25.
- BLIP-2 uses the CLIP std (0.26862954, 0.26130258, 0.27577711), different per channel; one
  pixel-unit value needs one std, and the mean of the three (0.26857) is used: α = 0.3 →
  0.0806, ε = 1 → 0.2686. Per-channel values would differ from it by at most 2.7 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from prsl.core.errors import InvalidInput
from prsl.core.params import parse_number

VIT_GPT2_STD = 0.5
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_STD_MEAN = sum(CLIP_STD) / len(CLIP_STD)

PAPER_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "vit-gpt2": MappingProxyType(
            {"attack": "bim", "steps": 10, "alpha": 0.01 * VIT_GPT2_STD, "eps": 0.5 * VIT_GPT2_STD}
        ),
        "blip2": MappingProxyType(
            {"attack": "bim", "steps": 10, "alpha": 0.3 * CLIP_STD_MEAN, "eps": 1 * CLIP_STD_MEAN}
        ),
    }
)


def parse_eps(value: float | int | str, *, name: str = "eps") -> float:
    """``"8/255"`` -> 0.0314..., ``"0.03"`` -> 0.03, numbers pass through; must be finite, >= 0.

    Fractions are parsed, never evaluated, so a config file cannot run code.
    """
    number = parse_number(value, name=name)
    if number < 0:
        raise InvalidInput(f"{name} must be a finite number >= 0 (pixel units); got {value!r}")
    return number
