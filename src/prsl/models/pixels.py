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

A processor that takes an image of any size and lays its inputs out from that size (native
resolution, tiles) gets a fixed *canvas* instead (:class:`CanvasPipeline`): ``prepare`` is then
a plain resize to it, and ``model_inputs`` all of the processor's work from there.

Adding an architecture means one subclass, registered for its ``config.model_type`` with
:func:`register`, with at most one method, ``model_inputs`` (none where the model takes the
normalised pixels alone; a canvas pipeline adds its ``default_canvas`` and ``check_canvas``; a
tiling one writes ``layout`` and ``pack`` instead of ``model_inputs``: :mod:`prsl.models.tiling`).
A model type without one is refused, naming the supported types.
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
from prsl.models.geometry import InputGeometry, Size, check_pixels, fixed_size, size_field

_PIPELINES: dict[str, type[PixelPipeline]] = {}
LMMS_EVAL_CAPTION = "Provide a one-sentence caption for the provided image."
"""The captioning prompt of lmms-eval's COCO, Flickr30k and NoCaps tasks, for every model."""
LMMS_EVAL_VQA = "{question}\nAnswer the question using a single word or phrase."
"""LLaVA-1.5's short-answer VQA prompt, which lmms-eval's VQAv2 task gives every model."""
LANGUAGE_MODEL = r".*\.(language_model|text_model)\..*"
"""Where the language model sits in every supported architecture (a regex on module paths)."""
PIL_PROCESSOR = "PIL processor"
"""The revision of a pipeline whose :meth:`PixelPipeline.prepare` is the processor's own resize:
where torchvision is installed it was the torchvision class's before prsl loaded the PIL-backend
class on every machine (:mod:`prsl.models.processors`)."""


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
    caption_prompt: ClassVar[str] = LMMS_EVAL_CAPTION
    vqa_template: ClassVar[str] = LMMS_EVAL_VQA
    answer_space: ClassVar[bool] = True
    projector: ClassVar[str] = "multi_modal_projector"
    vision_tower: ClassVar[str] = "vision_tower"
    separable_vision: ClassVar[bool] = True
    """Whether the vision tower stops where the projector starts (what FARE fine-tunes)."""
    foreign_tower: ClassVar[str | None] = None
    """What the vision tower is where it is not a CLIP / SigLIP ViT (no saved tower swaps in:
    :mod:`prsl.models.towers`); None for a CLIP / SigLIP tower."""
    processor_options: ClassVar[dict[str, Any]] = {}
    """Keyword arguments every processor call gets (Idefics3: splitting on or off)."""
    image_token_types: ClassVar[str | None] = None
    """The text-side input that marks the image tokens (1) among the others (0), where the
    model reads one: Qwen-VL's M-RoPE, Gemma 3's bidirectional attention over an image."""
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
        """The model's image inputs from pixels (B, 3, H, W) in [0, 1]; differentiable. By
        default the processor's rescale and normalise alone, as ``pixel_values`` (LLaVA-1.5,
        PaliGemma, Gemma 3: ``prepare`` did the rest)."""
        return {"pixel_values": self.normalised(pixels)}

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
            images,
            do_rescale=False,
            do_normalize=False,
            return_tensors="pt",
            **self.processor_options,
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
        """Extra text-side inputs of a teacher-forcing batch (PaliGemma's token types; the
        image tokens marked, where ``image_token_types`` names the input)."""
        return self.generation_inputs(ids)

    def generation_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra text-side inputs of a generation batch."""
        if self.image_token_types is None:
            return {}
        return {self.image_token_types: (ids == int(self.config.image_token_id)).long()}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the projector reads from the vision tower (B, N, D) for these ``model_inputs``
        (FARE pulls these together); by default the tower's last hidden state (SigLIP)."""
        return tower(pixel_values=inputs["pixel_values"]).last_hidden_state


@register("llava")
class Llava(PixelPipeline):
    """LLaVA-1.5: CLIP's shortest-edge resize and centre crop to a fixed square, normalised."""

    revision = PIL_PROCESSOR

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The CLIP layer(s) the projector reads (``vision_feature_layer``, the penultimate in
        LLaVA-1.5), without the CLS token under the ``default`` select strategy."""
        hidden = tower(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        chosen = feature_layers(hidden, self.config.vision_feature_layer)
        if self.config.vision_feature_select_strategy == "default":
            chosen = [h[:, 1:] for h in chosen]
        return torch.cat(chosen, dim=-1)


def feature_layers(hidden: tuple[torch.Tensor, ...], layers: int | list[int]) -> list[torch.Tensor]:
    """The hidden states a projector reads: ``vision_feature_layer``, one index or several."""
    return [hidden[i] for i in ([layers] if isinstance(layers, int) else layers)]


@register("paligemma")
class PaliGemma(PixelPipeline):
    """PaliGemma: SigLIP's plain resize to a fixed square, rescaled to [-1, 1]; prompts in the
    model's own task format (``caption en``), the prefix attended both ways (token types 0),
    the answer causally (token types 1)."""

    chat = False
    caption_prompt = "caption en"
    vqa_template = "answer en {question}"
    answer_space = False  # the processor ends every prefix with "\n"
    revision = PIL_PROCESSOR

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


@register("gemma3")
class Gemma3(PixelPipeline):
    """Gemma 3: SigLIP's plain resize to a fixed square, rescaled to [-1, 1]. The image tokens
    attend to each other both ways (token types 1 on them, in training and generation alike).
    Pan-and-scan (extra crops of a long image) stays off, as in the processor's default."""

    answer_space = False  # the model turn starts on a new line
    processor_options: ClassVar[dict[str, Any]] = {"do_pan_and_scan": False}
    image_token_types = "token_type_ids"
    revision = PIL_PROCESSOR


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


class CanvasPipeline(PixelPipeline):
    """A model whose processor takes an image of any size and lays its inputs out (patches,
    tiles, image tokens) from that size: Qwen-VL and Pixtral at native resolution, the tiling
    processors (:mod:`prsl.models.tiling`). prsl fixes one size, the *canvas*, so every image
    takes the same layout: each image is stretched to it once, outside the gradient, with the
    processor's own filter (:meth:`prepare`); what the processor does from there on is
    :meth:`model_inputs`. A family writes :meth:`default_canvas` and refuses in
    :meth:`check_canvas` a size its processor would change or cannot take."""

    def default_canvas(self) -> Size:
        """The canvas when ``image_size`` is not given."""
        raise NotImplementedError

    def check_canvas(self, canvas: Size) -> None:
        """Refuse a canvas the processor cannot produce (one line, with the fix)."""
        if len(canvas) != 2 or min(canvas) < 1:
            raise InvalidInput(f"image_size {canvas} must be positive: (height, width), both >= 1")

    def input_size(self, requested: Size | None) -> Size:
        canvas = self.default_canvas() if requested is None else tuple(int(v) for v in requested)
        self.check_canvas(canvas)
        return canvas

    @property
    def resample(self) -> int:
        """The processor's Pillow filter, as Pillow's number for it."""
        value = self.image_processor.resample
        return int(getattr(value, "value", value))

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        """Each image resized to the canvas with the processor's filter (stretched where its
        aspect ratio differs), as pixels in [0, 1]."""
        height, width = self.size
        arrays = []
        for image in images:
            image = image.convert("RGB")
            if image.size != (width, height):
                image = image.resize((width, height), self.resample)
            arrays.append(np.asarray(image, dtype=np.uint8))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)

    def image_sizes(self, batch: int, device: torch.device) -> torch.Tensor:
        """The canvas (height, width) once per image (B, 2), as a processor's ``image_sizes``."""
        return torch.tensor([list(self.size)] * batch, device=device)


@register("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
class QwenVL(CanvasPipeline):
    """Qwen2-VL and Qwen2.5-VL: native-resolution patches, here at one fixed size.

    The size is a multiple of ``patch_size * merge_size`` within the processor's pixel budget,
    so its ``smart_resize`` leaves it alone; each image is repeated ``temporal_patch_size``
    times (a still frame) and flattened into ``(grid_h * grid_w, C * T * p * p)`` rows, merge
    blocks of ``merge_size x merge_size`` patches consecutive, with ``image_grid_thw`` per
    image. Every version preprocesses alike (2.5 and 3 differ inside the model only: Qwen3-VL
    adds the tower's DeepStack features to the first language layers; its processor differs
    in patch size, 16, and mean / std, 0.5, both read from the image processor).
    """

    answer_space = False  # the assistant turn starts on a new line
    image_token_types = "mm_token_type_ids"  # where M-RoPE gives image tokens 2-D positions
    projector = "visual.merger"
    vision_tower = "visual"
    separable_vision = False  # the merger (projector) sits inside the vision tower

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        images = processor.image_processor
        self.patch, self.merge = int(images.patch_size), int(images.merge_size)
        self.budget = _pixel_budget(images)
        super().__init__(processor, config, image_size)

    def default_canvas(self) -> Size:
        factor, (low, high) = self.patch * self.merge, self.budget
        side = max(factor, min(QWEN_DEFAULT_SIDE, int(high**0.5)) // factor * factor)
        while side * side < low:
            side += factor
        return side, side

    def check_canvas(self, canvas: Size) -> None:
        super().check_canvas(canvas)
        (height, width), factor, (low, high) = canvas, self.patch * self.merge, self.budget
        if height % factor or width % factor or not low <= height * width <= high:
            raise InvalidInput(
                f"image_size {canvas} cannot be produced by this {self.config.model_type} "
                f"processor: it needs multiples of {factor} (patch {self.patch} x merge "
                f"{self.merge}) with {low} <= height*width <= {high}"
            )

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        patch, merge = self.patch, self.merge
        frames = int(self.image_processor.temporal_patch_size)
        x = self.normalised(pixels)
        batch, channels, height, width = x.shape
        grid_h, grid_w = height // patch, width // patch
        x = x.reshape(batch, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
        x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # B, H/m, W/m, m, m, C, p, p
        x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, frames, -1, -1)  # the still frame, T x
        flat = x.reshape(batch * grid_h * grid_w, channels * frames * patch * patch)
        grid = torch.tensor([[1, grid_h, grid_w]] * batch, device=pixels.device)
        return {"pixel_values": flat, "image_grid_thw": grid}


PIXTRAL_DEFAULT_SIDE = 448
"""The fixed side of a Mistral 3 input when none is given: 16 x 16 merged tokens at patch 14."""


@register("mistral3")
class Pixtral(CanvasPipeline):
    """Mistral 3 (Pixtral's vision): variable resolution, here at one fixed size.

    The processor scales an image down to fit within ``longest_edge`` and rounds each side up
    to a multiple of ``patch_size * spatial_merge_size``; a size that is such a multiple within
    ``longest_edge`` it leaves alone. The pixels are normalised as they are, with their
    ``image_sizes``; the vision tower packs the images of a batch into one sequence, attended
    block by block, and the projector merges ``spatial_merge_size``-square blocks of patches.
    The VQA prompt is the one Mistral's own evaluation (mistral-evals) gives for VQAv2.
    """

    vqa_template = (
        "{question}\n"
        "- Answer the question using a single word, number, or short phrase. Use as few words "
        "as possible.\n"
        "- If the answer is a number, report it as a number, i.e. 2, not Two, and only include "
        "the number without any unit.\n"
        "- If the question is Yes/No, answer with Yes/No, and nothing else (no likely, unknown, "
        "etc.).\n"
        "- You cannot answer that the question is unanswerable. You must answer."
    )
    answer_space = False  # the answer follows [/INST] directly
    foreign_tower = "Pixtral's ViT (PixtralVisionModel: 2-D rotary positions, RMS norms)"

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        size = processor.image_processor.size
        self.longest = int(size_field(size, "longest_edge") or min(fixed_size(size) or (0, 0)))
        if not self.longest:
            raise InvalidInput(f"cannot read longest_edge from this mistral3 processor ({size!r})")
        self.patch, self.merge = int(processor.patch_size), int(processor.spatial_merge_size)
        super().__init__(processor, config, image_size)

    def default_canvas(self) -> Size:
        factor = self.patch * self.merge
        side = max(factor, min(PIXTRAL_DEFAULT_SIDE, self.longest) // factor * factor)
        return side, side

    def check_canvas(self, canvas: Size) -> None:
        super().check_canvas(canvas)
        factor = self.patch * self.merge
        if canvas[0] % factor or canvas[1] % factor or max(canvas) > self.longest:
            raise InvalidInput(
                f"image_size {canvas} cannot be produced by this mistral3 processor: it needs "
                f"multiples of {factor} (patch {self.patch} x merge {self.merge}) no longer "
                f"than {self.longest}"
            )

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        values = self.normalised(pixels)
        return {"pixel_values": values, "image_sizes": self.image_sizes(len(pixels), pixels.device)}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Pixtral layer(s) the projector reads (``vision_feature_layer``), one row per image
        (the tower packs a batch into one sequence; every image has the same size here)."""
        out = tower(
            inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=True
        )
        chosen = torch.cat(feature_layers(out.hidden_states, self.config.vision_feature_layer), -1)
        return chosen.reshape(inputs["pixel_values"].shape[0], -1, chosen.shape[-1])
