"""Loading a model's processor: its PIL-backend image processor, and the workarounds
transformers 5 needs without torchvision.

Where torchvision is installed, transformers picks an image processor's torchvision ("fast")
class by default, whose resize differs from Pillow's by a few grey levels; prsl's pixel
pipelines reproduce the PIL-backend class's numbers. So the image processor is always loaded
with ``backend="pil"`` (:func:`pil_image_processor`) and handed to the processor, which then
loads only its other parts: what prsl attacks is what the model's processor gives, on every
machine. (``backend`` is not passed to ``AutoProcessor`` itself: transformers 5.25 hands it to
the tokenizer too, which keeps it as its own ``backend`` and saves it, and to the video
processor, which has no PIL class and fails.) A model type whose only image processor needs
torchvision (Llama 4, ...) keeps the class transformers falls back to, with a warning.

Qwen2-VL's, Qwen2.5-VL's, Qwen3-VL's, InternVL's and LLaVA-OneVision's processors list a video
processor among their parts, and that video processor needs torchvision, which prsl does not
depend on: building, saving or loading the processor then fails even for images alone
(huggingface/transformers#48558). Images never use the video processor, so where torchvision is
missing it is left out of those processors' parts. SmolVLM's processor cannot be built at all
without torchvision (and ``num2words``); its images are laid out exactly as by
``Idefics3Processor``, which is built from the same tokenizer, image processor and chat template
instead. Pixtral's processor (Mistral 3's) is declared to need torchvision only because its
module imports one function, the output size of a resize, from the torchvision image
processor's module; the PIL image processor's module defines the same function, and where
torchvision is missing it stands in for that import.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, ProcessorMixin

_IMAGE_ONLY = (
    "Qwen2VLProcessor",
    "Qwen2_5_VLProcessor",
    "Qwen3VLProcessor",
    "InternVLProcessor",
    "LlavaOnevisionProcessor",
)
_PIXTRAL_SIZES = "transformers.models.pixtral.image_processing_pixtral"
log = logging.getLogger(__name__)


def _without_video(cls: type) -> None:
    original = ProcessorMixin.get_attributes.__func__

    def get_attributes(klass):
        return [name for name in original(klass) if name != "video_processor"]

    cls.get_attributes = classmethod(get_attributes)


def image_only_processors() -> None:
    """Make the processors above work on images without torchvision (idempotent)."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return
    import transformers

    for name in _IMAGE_ONLY:
        cls = getattr(transformers, name, None)
        if cls is not None and "get_attributes" not in cls.__dict__:
            _without_video(cls)


def pixtral_processor() -> type:
    """``PixtralProcessor``, importable where torchvision is missing too (module docstring)."""
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and _PIXTRAL_SIZES not in sys.modules:
        from transformers.models.pixtral import image_processing_pil_pixtral as pil

        stand_in = types.ModuleType(_PIXTRAL_SIZES)
        stand_in.get_resize_output_image_size = pil.get_resize_output_image_size
        sys.modules[_PIXTRAL_SIZES] = stand_in
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    return PixtralProcessor


def _processor_settings(source: str, **options: Any) -> dict[str, Any]:
    from transformers.utils import cached_file

    path = cached_file(source, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(path).read_text()) if path else {}


def _chat_template(source: str, settings: dict, tokenizer: Any, **options: Any) -> str | None:
    from transformers.utils import cached_file

    path = cached_file(source, "chat_template.jinja", _raise_exceptions_for_missing_entries=False)
    if path:
        return Path(path).read_text()
    return settings.get("chat_template") or getattr(tokenizer, "chat_template", None)


def pil_image_processor(source: str, **options: Any) -> Any:
    """The image processor saved at ``source``, its PIL-backend class (module docstring); where
    its model type has none, the class transformers falls back to, with a warning."""
    from transformers import AutoImageProcessor

    images = AutoImageProcessor.from_pretrained(source, backend="pil", **options)
    backend = getattr(images, "backend", "pil")  # an older remote-code class has none: numpy
    if backend != "pil":
        log.warning(
            "%s has no PIL-backend class, so %s keeps this %s one: prsl's pixel pipelines "
            "reproduce the PIL image processors, and its resize can differ from Pillow's by a "
            "few grey levels",
            type(images).__name__,
            source,
            backend,
        )
    return images


def load_processor(source: str, **options: Any) -> Any:
    """``AutoProcessor.from_pretrained`` with the PIL-backend image processor, where torchvision
    is missing too (module docstring)."""
    image_only_processors()
    images = pil_image_processor(source, **options)
    try:
        return AutoProcessor.from_pretrained(source, image_processor=images, **options)
    except (ImportError, OSError, AttributeError) as err:
        settings = _processor_settings(source, **options)
        if settings.get("processor_class") == "PixtralProcessor":
            return pixtral_processor().from_pretrained(source, image_processor=images, **options)
        if settings.get("processor_class") != "SmolVLMProcessor":
            raise
        from transformers import AutoTokenizer, Idefics3Processor

        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        seq_len = settings.get("image_seq_len")
        if seq_len is None:
            raise err
        return Idefics3Processor(
            image_processor=images,
            tokenizer=tokenizer,
            image_seq_len=int(seq_len),
            chat_template=_chat_template(source, settings, tokenizer, **options),
        )
