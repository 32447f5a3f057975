"""Differentiable pixel pipelines: each architecture's image preprocessing, written in torch.

An attack moves pixels in [0, 1]; a Hugging Face processor takes a PIL image and returns
``pixel_values`` (and, for some architectures, auxiliary tensors) with no gradient. A pipeline
splits the processor's work in two:

- :meth:`PixelPipeline.prepare`, the geometric part (resize, crop) to the model's fixed input
  size, done once per image and outside the gradient, by the processor itself, so what reaches
  the model is exactly what its processor would give;
- :meth:`PixelPipeline.model_inputs`, the rest (rescale, normalise, patchify, auxiliary
  tensors) from (B, 3, H, W) pixels in [0, 1], differentiable, equal to the processor's output
  within float rounding.

Adding an architecture means one subclass with one method, ``model_inputs``, registered for its
``config.model_type`` with :func:`register`. A model type without one is refused, naming the
supported types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from prsl.core.errors import InvalidInput
from prsl.core.pixels import Normalisation
from prsl.models.geometry import InputGeometry, check_pixels, fixed_size, size_field

_PIPELINES: dict[str, type[PixelPipeline]] = {}
LANGUAGE_MODEL = r".*\.(language_model|text_model)\..*"
"""Where the language model sits in every supported architecture (a regex on module paths)."""


def register(*model_types: str) -> Callable[[type[PixelPipeline]], type[PixelPipeline]]:
    """Class decorator: the pipeline for these ``config.model_type`` values."""

    def add(cls: type[PixelPipeline]) -> type[PixelPipeline]:
        for model_type in model_types:
            _PIPELINES[model_type] = cls
        cls.model_types = model_types
        return cls

    return add


def supported_model_types() -> list[str]:
    return sorted(_PIPELINES)


def pipeline_for(model_type: str) -> type[PixelPipeline]:
    """The registered pipeline class, or an error naming the supported types and the fix."""
    if model_type not in _PIPELINES:
        raise InvalidInput(
            f"no pixel pipeline for model type {model_type!r}; supported: "
            f"{', '.join(supported_model_types())}. To add one, subclass "
            "prsl.models.pixels.PixelPipeline, write its model_inputs(pixels) and register it "
            f"with @register({model_type!r}) (see the README, 'Bring your own VLM')"
        )
    return _PIPELINES[model_type]


def check_separable_vision(model_type: str) -> None:
    """Refuse FARE on an architecture whose projector sits inside its vision tower."""
    if not pipeline_for(model_type).separable_vision:
        separable = [t for t in supported_model_types() if _PIPELINES[t].separable_vision]
        raise InvalidInput(
            f"FARE fine-tunes a vision encoder apart from its projector, and {model_type}'s "
            f"projector sits inside its vision tower; chat VLMs FARE supports: "
            f"{', '.join(separable)}"
        )


class PixelPipeline:
    """How one architecture's processor turns images into model inputs (module docstring).

    Class attributes say how its prompts look: ``chat`` (through the processor's chat template,
    one user turn with the image and the text) or the model's own format; the default
    captioning instruction and VQA template; whether an answer follows its prompt after a
    space; and which modules besides LoRA a ``lora+projector`` fine-tune trains.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    chat: ClassVar[bool] = True
    caption_prompt: ClassVar[str] = "Describe the image in one short sentence."
    vqa_template: ClassVar[str] = "{question} Answer with one word."
    answer_space: ClassVar[bool] = True
    projector: ClassVar[str] = "multi_modal_projector"
    vision_tower: ClassVar[str] = "vision_tower"
    separable_vision: ClassVar[bool] = True
    """Whether the vision tower stops where the projector starts (what FARE fine-tunes)."""
    processor_options: ClassVar[dict[str, Any]] = {}
    """Keyword arguments every processor call gets (Idefics3: splitting on or off)."""
    revision: ClassVar[str | None] = None
    """What changed in this architecture's preprocessing since prsl first recorded results
    for it (None: nothing). Results record it, so a folder holding results computed before the
    change is refused, not resumed."""

    def __init__(self, processor: Any, config: Any, image_size: tuple[int, int] | None = None):
        self.processor = processor
        self.config = config
        self.image_processor = processor.image_processor
        self.normalisation = Normalisation(
            list(self.image_processor.image_mean), list(self.image_processor.image_std)
        )
        self.mean, self.std = self.normalisation.mean, self.normalisation.std
        self.size = self.input_size(image_size)

    @property
    def geometry(self) -> InputGeometry:
        """The pixels the model takes through this pipeline: what its adapter normalises with."""
        return InputGeometry(self.mean.tolist(), self.std.tolist(), self.size)

    # ------------------------------------------------------------------ what subclasses write
    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's image inputs from pixels (B, 3, H, W) in [0, 1]; differentiable."""
        raise NotImplementedError

    def input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The fixed (H, W) every image is brought to; by default the processor's own."""
        processor = self.image_processor
        size = (
            fixed_size(getattr(processor, "crop_size", None))
            if getattr(processor, "do_center_crop", False)
            else fixed_size(getattr(processor, "size", None))
        )
        if size is None:
            raise InvalidInput(
                f"cannot read a fixed input size from the {type(processor).__name__} of this "
                f"{self.config.model_type!r} model (size={getattr(processor, 'size', None)!r})"
            )
        if requested is not None and tuple(requested) != size:
            raise InvalidInput(
                f"a {self.config.model_type!r} model takes {size[0]}x{size[1]} images; "
                f"image_size {requested} cannot be produced by its processor"
            )
        return size

    # ------------------------------------------------------------------ shared steps
    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        """The processor's own resize / crop to the input size, as pixels in [0, 1] (no grad)."""
        out = self.image_processor(
            images, do_rescale=False, do_normalize=False, return_tensors="pt"
        )["pixel_values"]
        return out.float().div(255.0).clamp(0.0, 1.0).contiguous()

    def normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        """(pixels - mean) / std in fp32, the processor's rescale + normalise."""
        check_pixels(pixels, self.size)
        return self.normalisation(pixels)

    def placeholder(self) -> Image.Image:
        """A blank image at the input size, for laying out a prompt's image tokens."""
        height, width = self.size
        return Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))

    def own_format(self, prompt: str) -> str:
        """A prompt in the model's own format, for a model without a chat template."""
        return prompt

    def text_inputs(self, ids: torch.Tensor, prefix_lengths: list[int]) -> dict[str, torch.Tensor]:
        """Extra text-side inputs of a teacher-forcing batch (PaliGemma's token types)."""
        return {}

    def generation_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra text-side inputs of a generation batch."""
        return {}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the projector reads from the vision tower (B, N, D) for these ``model_inputs``
        (FARE pulls these together); by default the tower's last hidden state (SigLIP)."""
        return tower(pixel_values=inputs["pixel_values"]).last_hidden_state


@register("llava")
class Llava(PixelPipeline):
    """LLaVA-1.5: CLIP's shortest-edge resize and centre crop to a fixed square, normalised."""

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.normalised(pixels)}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The CLIP layer(s) the projector reads (``vision_feature_layer``, the penultimate in
        LLaVA-1.5), without the CLS token under the ``default`` select strategy."""
        hidden = tower(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        layers = self.config.vision_feature_layer
        chosen = [hidden[i] for i in ([layers] if isinstance(layers, int) else layers)]
        if self.config.vision_feature_select_strategy == "default":
            chosen = [h[:, 1:] for h in chosen]
        return torch.cat(chosen, dim=-1)


@register("paligemma")
class PaliGemma(PixelPipeline):
    """PaliGemma: SigLIP's plain resize to a fixed square, rescaled to [-1, 1]; prompts in the
    model's own task format (``caption en``), the prefix attended both ways (token types 0),
    the answer causally (token types 1)."""

    chat = False
    caption_prompt = "caption en"
    vqa_template = "answer en {question}"
    answer_space = False  # the processor ends every prefix with "\n"

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.normalised(pixels)}

    def own_format(self, prompt: str) -> str:
        """``<image>caption en``: the processor expands the image token and adds BOS and "\\n"."""
        return self.processor.image_token + prompt

    def text_inputs(self, ids: torch.Tensor, prefix_lengths: list[int]) -> dict[str, torch.Tensor]:
        # Without token types Gemma attends everywhere, later tokens included: never omit them.
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        lengths = torch.tensor(prefix_lengths).unsqueeze(1)
        return {"token_type_ids": (positions >= lengths).long()}

    def generation_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"token_type_ids": torch.zeros_like(ids)}


def _pixel_budget(processor: Any) -> tuple[int, int]:
    """(min, max) pixels per image of a Qwen2-VL image processor; transformers 5 keeps them in
    ``size`` as ``shortest_edge`` / ``longest_edge`` (pixel counts, despite the names)."""

    def read(*names: str) -> int | None:
        for owner in (processor, processor.size):
            for name in names:
                value = size_field(owner, name)
                if value is not None:
                    return int(value)
        return None

    low = read("min_pixels", "shortest_edge")
    high = read("max_pixels", "longest_edge")
    return low or 0, high or 1 << 62


QWEN_DEFAULT_SIDE = 448
"""The fixed side of a Qwen2-VL input when none is given: 16 x 16 merged tokens, 256 in all."""


@register("qwen2_vl", "qwen2_5_vl")
class QwenVL(PixelPipeline):
    """Qwen2-VL and Qwen2.5-VL: native-resolution patches, here at one fixed size.

    The size is a multiple of ``patch_size * merge_size`` within the processor's pixel budget,
    so its ``smart_resize`` leaves it alone; each image is repeated ``temporal_patch_size``
    times (a still frame) and flattened into ``(grid_h * grid_w, C * T * p * p)`` rows, merge
    blocks of ``merge_size x merge_size`` patches consecutive, with ``image_grid_thw`` per
    image. Both versions preprocess alike (2.5 differs inside its vision tower only).
    """

    caption_prompt = "Describe the image in one short sentence."
    answer_space = False  # the assistant turn starts on a new line
    projector = "visual.merger"
    vision_tower = "visual"
    separable_vision = False  # the merger (projector) sits inside the vision tower

    def input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        processor = self.image_processor
        patch, merge = int(processor.patch_size), int(processor.merge_size)
        factor = patch * merge
        low, high = _pixel_budget(processor)
        if requested is None:
            side = max(factor, min(QWEN_DEFAULT_SIDE, int(high**0.5)) // factor * factor)
            while side * side < low:
                side += factor
            requested = (side, side)
        height, width = (int(v) for v in requested)
        if height % factor or width % factor or not low <= height * width <= high:
            raise InvalidInput(
                f"image_size {requested} cannot be produced by this {self.config.model_type} "
                f"processor: it needs multiples of {factor} (patch {patch} x merge {merge}) with "
                f"{low} <= height*width <= {high}"
            )
        return height, width

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        """A bicubic resize to the fixed size (where the processor's own resize is a no-op)."""
        height, width = self.size
        arrays = [
            np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)
            if image.size != (width, height)
            else np.asarray(image, dtype=np.uint8)
            for image in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        processor = self.image_processor
        patch, merge = int(processor.patch_size), int(processor.merge_size)
        frames = int(processor.temporal_patch_size)
        x = self.normalised(pixels)
        batch, channels, height, width = x.shape
        grid_h, grid_w = height // patch, width // patch
        x = x.reshape(batch, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
        x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # B, H/m, W/m, m, m, C, p, p
        x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, frames, -1, -1)  # the still frame, T x
        flat = x.reshape(batch * grid_h * grid_w, channels * frames * patch * patch)
        grid = torch.tensor([[1, grid_h, grid_w]] * batch, device=pixels.device)
        return {"pixel_values": flat, "image_grid_thw": grid}

    def _image_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == int(self.config.image_token_id)).long()

    def text_inputs(self, ids: torch.Tensor, prefix_lengths: list[int]) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": self._image_tokens(ids)}

    def generation_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": self._image_tokens(ids)}
