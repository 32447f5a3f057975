"""What the Hugging Face adapters share: pixel normalisation, token layout, loading and saving.

Both families lay a training example out the same way: ``prefix + prompt + text + [end]``,
where the prefix is what the model needs before any text (a decoder-start token, or BLIP-2's
image placeholders and BOS). Only the tokens of ``text`` and the end token carry labels, so a
VQA question is context, never a target. Padding is built here by hand rather than by the
tokenizer, because the pad id of a checkpoint is often a real token (GPT-2 pads with its EOS):
padded positions get the attention mask 0 and the label ``IGNORE_INDEX`` (-100), whatever id
fills them.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedModel

from prsl.core.errors import InvalidInput
from prsl.core.labels import IGNORE_INDEX
from prsl.core.paths import ADAPTER_INFO
from prsl.core.pixels import Normalisation
from prsl.models.base import VLMAdapter
from prsl.models.geometry import InputGeometry, check_pixels, image_geometry
from prsl.models.lora import has_lora, lora_merged_state_dict

"""Written beside the Hugging Face files by ``save``: the family and the VQA prompt template."""


def pad_batch(
    rows: Sequence[Sequence[int]], value: int, *, left: bool, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token rows of different lengths into (ids, attention mask), both (B, T) long, T the
    longest row (or ``width`` when that is longer).

    Generation pads on the left so every row's last real token sits at the end, where the next
    token is appended; teacher forcing pads on the right so positions start at 0 everywhere.
    """
    width = max(max(len(row) for row in rows), width or 0)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


TOKEN_CACHE_BATCHES = 8
"""Batches of texts whose token ids an adapter keeps (the texts of the batches being attacked)."""


@dataclass(frozen=True)
class TeacherForcing:
    """A teacher-forcing batch on the model's device: ids, attention mask, labels (B, T), and
    any extra text-side inputs of the architecture."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    extras: dict[str, torch.Tensor]


@dataclass(frozen=True)
class LabelPadding:
    """How teacher-forcing batches pad their labels (training only).

    The default gives padded positions ``IGNORE_INDEX``: they are not counted. ``eos=True`` is
    the authors' ViT-GPT2 recipe: every position after the text's end is labelled with the end
    token and counted (in CE and in PRSL's R), with no attention mask, and ``length`` pads
    every batch to that many positions, cutting longer rows there as their tokenizer did (they
    used 128: about 90 % of the positions of their COCO batches were padding).
    """

    eos: bool = False
    length: int | None = None


def teacher_forcing_batch(
    prefixes: Sequence[list[int]],
    texts: Sequence[list[int]],
    end_id: int,
    pad_id: int,
    padding: LabelPadding = LabelPadding(),  # noqa: B008 (frozen: a shared default is safe)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, labels) for ``prefix + text + [end]``, right-padded.

    ``labels[b, t]`` is the token that ``input[b, t]`` must predict when it belongs to the text
    or is the end token, and ``IGNORE_INDEX`` otherwise (prefix, prompt, and padding unless
    ``padding.eos``).
    """
    rows, targets = [], []
    for prefix, text in zip(prefixes, texts, strict=True):
        rows.append(prefix + text)
        targets.append([IGNORE_INDEX] * (len(prefix) - 1) + text + [end_id])
    if padding.length is not None:  # the recipe's tokenizer cut at the same length
        rows = [row[: padding.length] for row in rows]
        targets = [target[: padding.length] for target in targets]
    ids, mask = pad_batch(rows, pad_id, left=False, width=padding.length)
    label_pad = end_id if padding.eos else IGNORE_INDEX
    labels, _ = pad_batch(targets, label_pad, left=False, width=padding.length)
    if padding.eos:
        mask = torch.ones_like(mask)
    return ids, mask, labels


class HFAdapter(VLMAdapter):
    """An adapter over a Hugging Face model, its tokenizer and its image processor."""

    model_class: ClassVar[type[PreTrainedModel]]
    default_vqa_template: ClassVar[str]
    default_hub_id: ClassVar[str]  # the paper's checkpoint of the family
    pad_token_id: int  # fills padded positions; they are masked and never a label

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        image_processor: Any,
        *,
        vqa_template: str | None = None,
        pad_token_id: int | None = None,
        geometry: InputGeometry | None = None,
    ) -> None:
        """``pad_token_id``: the checkpoint's own pad id (None: it has none, and the end token
        fills padded positions); ``geometry``: the pixels the model takes, when they are not
        simply what ``image_processor`` says (a pixel pipeline's fixed size)."""
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        mean, std, self._pixel_size = (
            image_geometry(image_processor) if geometry is None else geometry
        )
        self.normalisation = Normalisation(mean, std)
        self.image_mean, self.image_std = self.normalisation.mean, self.normalisation.std
        self.vqa_template = self.default_vqa_template if vqa_template is None else vqa_template
        self._token_cache: dict[tuple, list[tuple[int, ...]]] = {}
        self._batch_cache: dict[tuple, TeacherForcing] = {}
        self.label_padding = LabelPadding()
        """How training batches pad labels; set by ``prsl finetune`` from ``data.pad_labels``."""
        if "{question}" not in self.vqa_template:
            raise InvalidInput(
                f"vqa_template must contain '{{question}}', got {self.vqa_template!r}"
            )
        self.end_token_id, self.stop_token_ids = self._end_tokens()
        self.pad_token_id = self.end_token_id if pad_token_id is None else int(pad_token_id)

    # ----------------------------------------------------------------- pixels and tokens
    @property
    def pixel_size(self) -> tuple[int, int]:
        return self._pixel_size

    @property
    @abstractmethod
    def vision_dtype(self) -> torch.dtype:
        """The dtype the vision tower computes in (normalised pixels are cast to it)."""

    def vision_encoder(self) -> nn.Module:
        """The separable vision encoder (what FARE fine-tunes); families without one refuse."""
        raise InvalidInput(
            f"FARE fine-tunes a separable vision encoder; prsl does not expose one for the "
            f"{self.family} family yet (supported: vision-encoder-decoder, blip2, "
            "image-text-to-text)"
        )

    def image_features(
        self, pixels: torch.Tensor, encoder: nn.Module | None = None
    ) -> torch.Tensor:
        """The vision encoder's output tokens for ``pixels`` (B, N, D), differentiable in the
        pixels; ``encoder`` another module of the same architecture (FARE's frozen original)."""
        module = self.vision_encoder() if encoder is None else encoder
        return module(pixel_values=self.normalise(pixels)).last_hidden_state

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(pixels - mean) / std in fp32, then cast to the vision dtype; differentiable."""
        check_pixels(pixels, self.pixel_size)
        return self.normalisation(pixels).to(self.vision_dtype)

    def _end_tokens(self) -> tuple[int, frozenset[int]]:
        """The token that ends a training target, and every token that stops generation.

        Taken from the generation config first: BLIP-2-OPT ends answers with "\\n", not with
        the tokenizer's EOS, and training must teach the same stop that ``generate`` uses.
        """
        eos = self.model.generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids and self.tokenizer.eos_token_id is not None:
            ids = [self.tokenizer.eos_token_id]
        if not ids:
            raise InvalidInput("neither the generation config nor the tokenizer defines an EOS id")
        return ids[0], frozenset(ids)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text. The last few batches are remembered: an attack asks for the
        same texts at every step, and tokenising them again each time is pure waste."""
        key = (id(self.tokenizer), tuple(texts))
        cache = self._token_cache
        if key not in cache:
            if len(cache) >= TOKEN_CACHE_BATCHES:
                cache.pop(next(iter(cache)))
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            cache[key] = [tuple(ids) for ids in encoded]
        return [list(ids) for ids in cache[key]]

    def _teacher_forcing(
        self,
        prefixes: list[list[int]],
        texts: list[list[int]],
        device: torch.device,
        extra: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    ) -> TeacherForcing:
        """:func:`teacher_forcing_batch` (and ``extra`` inputs made from its ids) on ``device``.

        The last few batches are kept there: an attack asks for the same batch at every step,
        and building it and copying it over again each time is a host round trip per step.
        The tensors are shared between calls: read them, never write into them.
        """
        key = (
            tuple(map(tuple, prefixes)),
            tuple(map(tuple, texts)),
            self.label_padding,
            self.end_token_id,
            self.pad_token_id,
            device,
        )
        cache = self._batch_cache
        if key not in cache:
            if len(cache) >= TOKEN_CACHE_BATCHES:
                cache.pop(next(iter(cache)))
            ids, mask, labels = teacher_forcing_batch(
                prefixes, texts, self.end_token_id, self.pad_token_id, self.label_padding
            )
            extras = extra(ids) if extra is not None else {}
            cache[key] = TeacherForcing(
                ids.to(device),
                mask.to(device),
                labels.to(device),
                {name: value.to(device) for name, value in extras.items()},
            )
        return cache[key]

    def _prompt_ids(self, prompts: list[str] | None, batch: int) -> list[list[int]]:
        if prompts is None:
            return [[] for _ in range(batch)]
        if len(prompts) != batch:
            raise ValueError(f"got {len(prompts)} prompts for {batch} images; give one per image")
        return self._token_ids([p.rstrip() for p in prompts])

    def _text_ids(self, texts: list[str], prompts: list[str] | None, batch: int) -> list[list[int]]:
        """Tokens of the targets; after a prompt a text starts with a space, as in running text."""
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} texts for {batch} images; give one per image")
        spaced = [
            " " + t.strip() if prompts is not None and prompts[i].strip() else t.strip()
            for i, t in enumerate(texts)
        ]
        return self._token_ids(spaced)

    def _check_length(self, length: int, what: str) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise InvalidInput(f"{what} needs {length} positions but the model holds {limit}")

    @property
    @abstractmethod
    def max_positions(self) -> int | None:
        """How many token positions the language model can attend over (None: unbounded)."""

    def _decode(self, new_tokens: torch.Tensor) -> list[str]:
        """Strings of generated tokens, cut at the first stop token, special tokens dropped."""
        texts = []
        for row in new_tokens.tolist():
            cut = next((i for i, t in enumerate(row) if t in self.stop_token_ids), len(row))
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts

    def _generation_kwargs(self, max_new_tokens: int, overrides: dict[str, Any]) -> dict[str, Any]:
        if max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": self.pad_token_id,
            **overrides,
        }

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        self._save_processing(directory)
        info = {"family": self.family, **self.options()}
        (directory / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")

    def options(self) -> dict[str, Any]:
        """What ``load_adapter`` passes back to ``from_pretrained`` from a saved directory."""
        return {"vqa_template": self.vqa_template}

    def _save_processing(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    def _save_model(self, directory: Path) -> None:
        """LoRA weights are merged into the saved copy, so it loads as a plain model."""
        if has_lora(self.model):
            self.model.save_pretrained(directory, state_dict=lora_merged_state_dict(self.model))
        else:
            self.model.save_pretrained(directory)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        device_map: str | None = None,
        **adapter_options: Any,
    ) -> HFAdapter:
        """Model and processing (tokenizer and image processor, or a processor) of a hub id or a
        local directory; ``adapter_options`` go to the adapter (``vqa_template``, ...).

        Without ``name_or_path``, the family's paper checkpoint (``default_hub_id``).
        """
        source = cls.default_hub_id if name_or_path is None else str(name_or_path)
        options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        placement = {"device_map": device_map} if device_map is not None else {}
        model = cls.model_class.from_pretrained(
            source, **options, **placement, **({} if dtype is None else {"dtype": dtype})
        )
        parts = cls._load_processing(source, **options)
        if device is not None and device_map is None:
            model.to(device)
        model.eval()
        return cls(model, *parts, **adapter_options)

    @classmethod
    def _load_processing(cls, source: str, **options: Any) -> tuple[Any, ...]:
        """What the constructor takes after the model: here a tokenizer and an image processor."""
        return (
            AutoTokenizer.from_pretrained(source, **options),
            AutoImageProcessor.from_pretrained(source, **options),
        )
