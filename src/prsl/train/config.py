"""What a fine-tuning run is configured with: the model, the data, the loss and the loop.

Loss parameters are validated into the loss's own typed object (``prsl.losses.PRSL`` ...) when
the config is loaded, so a wrong value fails before any work and ``cfg.loss.params`` is what
will run. In YAML they stay a mapping under the loss's name::

    loss: {name: prsl, params: {k: 10, start: 0, weight: 1e-5}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from prsl.attacks import Attack, Eps, Steps, StepSize, parse_attack
from prsl.config import DataConfig, Strict
from prsl.core.errors import InvalidInput
from prsl.losses import Loss, build_loss

TINY = "tiny"
"""``model.name_or_path`` that builds the from-scratch captioner."""
DEFAULT_LOSS = "prsl"


class TinyModelConfig(Strict):
    """Architecture of the from-scratch captioner used by the embedded default and the tests."""

    image_size: int = Field(32, ge=8)
    """Input images are resized to this many pixels a side."""
    patch_size: int = Field(8, ge=1)
    """The ViT encoder's patch size in pixels."""
    hidden: int = Field(64, ge=1)
    """Width of the encoder and the decoder (a multiple of ``heads``)."""
    layers: int = Field(2, ge=1)
    """Transformer layers of the encoder, and as many of the decoder."""
    heads: int = Field(2, ge=1)
    """Attention heads per layer."""
    dropout: float | None = None
    """Every dropout probability of the model; None keeps the architectures' defaults (GPT-2
    0.1, ViT 0.0). 0 makes training independent of the random state, e.g. of the process count."""

    @field_validator("dropout")
    @classmethod
    def _probability(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError("must be in [0, 1)")
        return value


class ModelConfig(Strict):
    """Which model to fine-tune.

    ``name_or_path`` is a hub id or a local directory (loaded through ``from_pretrained``), or
    ``tiny`` to build the small from-scratch captioner from the training texts.
    """

    name_or_path: str = TINY
    """A hub id, a local model folder (``from_pretrained``), or ``tiny`` to build the
    small from-scratch captioner from the training texts."""
    family: str | None = None
    """The adapter family (``vision-encoder-decoder``, ``blip2``, ``image-text-to-text``);
    None: detected from the model's ``config.json`` (``model_type``)."""
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    """The architecture of ``name_or_path: tiny`` (ignored for other models)."""
    blip2_trainable: Literal["qformer", "lora"] = "qformer"
    """For BLIP-2: ``qformer`` trains the Q-Former and the projection with the language
    model frozen (the paper's setting); ``lora`` trains LoRA on the language model instead."""
    vlm_trainable: Literal["lora", "lora+projector", "full"] = "lora"
    """For an image-text-to-text VLM: LoRA on its language model, the projector too, or the
    language model and projector whole; the vision tower is frozen in every mode."""
    lora_r: int = Field(8, ge=1)
    """LoRA rank, for ``vlm_trainable: lora`` / ``lora+projector`` and ``blip2_trainable:
    lora`` (on the language model's attention projections)."""
    lora_alpha: int = Field(16, ge=1)
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more time)."""
    caption_prompt: str | None = None
    """The captioning instruction of a chat VLM (None: its architecture's default); saved with
    the model, so evaluation asks the same."""
    trust_remote_code: bool = False
    """Let ``from_pretrained`` run the model repository's own code (only for models
    that need it, and only from a source you trust)."""
    vision_tower: str | None = None
    """A separately saved vision tower whose weights replace the model's own before training
    (a Hugging Face CLIPVisionModel / SiglipVisionModel folder, or an open_clip state dict:
    ``.safetensors``, ``.pt``, ``.bin``); position embeddings are resized when its resolution
    differs. The saved model holds it. None: the model's own."""

    def prompts(self) -> dict[str, str]:
        """The prompts the model trains with, read without its weights: its own (saved with it,
        else its architecture's defaults), with ``caption_prompt`` instead where set."""
        from prsl.models import model_prompts

        prompts = model_prompts(self.name_or_path, self.family, self.trust_remote_code)
        if self.caption_prompt is not None and "caption_prompt" in prompts:
            prompts["caption_prompt"] = self.caption_prompt
        return prompts

    @model_validator(mode="after")
    def _family_fits(self) -> ModelConfig:
        if self.vision_tower is not None and self.name_or_path == TINY:
            raise ValueError(
                "vision_tower swaps the CLIP / SigLIP tower of an image-text-to-text VLM; the "
                "tiny captioner has none: set model.name_or_path or drop vision_tower"
            )
        if self.family is None:
            return self
        from prsl.models import VisionEncoderDecoderAdapter, adapter_class

        try:
            adapter_class(self.family)
        except InvalidInput as err:
            raise ValueError(str(err)) from None
        if self.name_or_path == TINY and self.family != VisionEncoderDecoderAdapter.family:
            raise ValueError(
                f"model.family={self.family!r} does not fit model.name_or_path='tiny', which is "
                f"a {VisionEncoderDecoderAdapter.family!r} model; leave family unset"
            )
        return self


class LossConfig(Strict):
    """A registered loss by name and its parameters, validated into the loss object."""

    name: str = DEFAULT_LOSS
    """The registered loss: ``ce``, ``prsl``, ``drsl`` or ``ls`` (label smoothing)."""
    params: Loss = Field(default_factory=lambda: build_loss(DEFAULT_LOSS))
    """The loss's parameters, a mapping (``{k: 10, weight: 1e-5}``) validated into the
    loss's typed object; unset ones take the loss's defaults."""

    @model_validator(mode="before")
    @classmethod
    def _build(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("name", DEFAULT_LOSS)
        params = data.get("params", {})
        if isinstance(params, Loss):
            if params.name != name:
                raise ValueError(f"params are those of loss {params.name!r}, not of {name!r}")
            return data
        if not isinstance(params, dict):
            raise ValueError(f"params must be a mapping of the loss's parameters, got {params!r}")
        if not isinstance(name, str):
            raise ValueError(f"name must be a loss name, got {name!r}")
        try:
            built = build_loss(name, **params)
        except InvalidInput as err:
            raise ValueError(str(err)) from None
        return {**data, "params": built}

    @field_serializer("params")
    def _as_given(self, params: Loss) -> dict[str, Any]:
        return params.given()


class AdversarialConfig(Strict):
    """Adversarial fine-tuning (Madry-style): examples crafted on the fly against the model as it
    is at that step, untargeted on their ground-truth text, by any registered attack.

    Flat, as an evaluation's attack: ``{attack: pgd, eps: 4/255, steps: 2, fraction: 1.0}``;
    everything but ``attack`` and ``fraction`` is the attack's own parameters, validated into
    its typed object (``built``) when the config is loaded. ``fraction`` of each micro-batch
    (rounded, chosen at random from the run's seed and the step) is replaced by its adversarial
    images; the rest stays clean. Any loss trains on the mix, so CE-AT, PRSL-AT and PRSL alone
    are one config apart.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    attack: str = "pgd"
    """The registered gradient attack that crafts the examples (fgsm, bim, pgd, mifgsm,
    apgd); its own parameters sit beside it (``eps``, ``steps``, ...)."""
    fraction: float = Field(1.0, ge=0.0, le=1.0)
    """The share of each micro-batch replaced by its adversarial images (0: plain
    fine-tuning, bit for bit)."""
    built: Attack
    """The attack as validated from the keys beside ``attack`` (not written in a config)."""

    @model_validator(mode="before")
    @classmethod
    def _build(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "built" in data:
            return data
        default = cls.model_fields["attack"].default
        built = parse_attack(data, name_key="attack", default=default, reserved=("fraction",))
        name = built.name
        if getattr(built, "record_every_step", False):
            raise ValueError(
                "record_every_step is for evaluations: training keeps the final images"
            )
        if not built.uses_gradients or built.uses_success:
            raise ValueError(
                f"attack {name!r} cannot craft training examples on the fly: use a "
                "gradient attack without a success criterion (fgsm, bim, pgd, mifgsm, apgd)"
            )
        return {"attack": name, "fraction": data.get("fraction", 1.0), "built": built}

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        """As a config file says it, with every attack parameter as it runs."""
        return {"attack": self.attack, "fraction": self.fraction, **self.built.recorded()}


FARE_PARAMETERS = ("eps", "steps", "alpha")
FARE_EPS = "L∞ radius of the PGD perturbation, in pixel units (``4/255``)."


class FareConfig(Strict):
    """FARE (Schlarmann et al. 2024): unsupervised adversarial fine-tuning of the vision encoder.

    The objective is ``||φ(x + δ) − φ₀(x)||²`` (summed over features, averaged over the
    encoder's output tokens) with φ₀ the encoder as it was before fine-tuning, frozen, and δ the
    L∞ PGD perturbation (``eps``, ``steps``, ``alpha``; random start) that maximises it against
    the current encoder. Only the encoder trains; every other weight stays bit-identical, and
    the saved model is the whole model, so every command evaluates it unchanged. The
    configured ``loss`` is not used (the record says ``fare``). The paper uses ε = 2/255 or
    4/255 and 10 steps.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    eps: Eps = Field(4 / 255, description=FARE_EPS)
    steps: Steps = Field(10, description="PGD steps per batch.")
    alpha: StepSize = Field(None, description="PGD step size in pixel units (None: ε/4).")
    built: Attack
    """The PGD attack as validated from ``eps``, ``steps``, ``alpha`` (not written in a
    config)."""

    @model_validator(mode="before")
    @classmethod
    def _build(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "built" in data:
            return data
        unknown = sorted(set(data) - set(FARE_PARAMETERS))
        if unknown:
            raise ValueError(f"takes eps, steps and alpha, not {', '.join(unknown)}")
        # unset ones take this section's defaults (ε 4/255, not the attack's 8/255); the
        # section's own path names it: errors name the field alone (train.fare: eps ...)
        defaults = {key: cls.model_fields[key].default for key in FARE_PARAMETERS}
        built = parse_attack(defaults | data, default="pgd", fixed={"norm": "linf"}, owner="")
        return {**data, "built": built}

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        attack = self.built.recorded()
        return {key: attack[key] for key in FARE_PARAMETERS}


class TrainConfig(Strict):
    """The fine-tuning loop: optimiser, schedule, batch, precision, checkpoints and logs;
    ``adversarial`` turns it into adversarial fine-tuning (:class:`AdversarialConfig`), ``fare``
    into FARE on the vision encoder (:class:`FareConfig`)."""

    output_dir: str = "runs/finetune"
    """Where checkpoints, logs and the final model (``final/``) are written."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW's decoupled weight decay."""
    epochs: int = Field(2, ge=1)
    """Full passes over the training data (unless ``max_steps`` stops earlier)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (None: ``epochs`` full passes)."""
    max_device_seconds: float | None = Field(None, gt=0)
    """Also stop once the model's device-seconds reach this budget: this run's wall seconds of
    optimizer steps x processes, plus those of the prsl-trained model it started from. Defenses
    of different cost given one budget are compared at equal compute. The step that reaches
    the budget finishes, so a run overshoots it by less than one of its own steps. The LR
    schedule still spans ``max_steps`` / ``epochs`` (``scheduler: constant`` suits a budget);
    the record says how many steps were taken."""
    batch_size: int = Field(8, ge=1)
    """The global micro-batch, split across processes."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up from 0 to ``lr``."""
    scheduler: Literal["linear", "constant", "cosine"] = "linear"
    """Learning-rate schedule after the warm-up (transformers' ``get_scheduler``)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision of the forward and backward passes (accelerate); the
    weights stay fp32."""
    seed: int = Field(0, ge=0)
    """Seed of the initialisation, the data order, dropout and adversarial examples."""
    save_every: int = Field(0, ge=0)
    """Write a checkpoint every this many steps (0: only at the end)."""
    log_every: int = Field(10, ge=1)
    """Log the loss (and its CE and regulariser parts) every this many steps."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient's global norm to this (None: no clipping)."""
    tensorboard: bool = False
    """Also write TensorBoard scalars (needs the ``tensorboard`` package)."""
    adversarial: AdversarialConfig | None = None
    """Adversarial fine-tuning: the attack that crafts training examples (None: clean
    fine-tuning)."""
    fare: FareConfig | None = None
    """FARE: fine-tune only the vision encoder against its own adversarial embeddings
    (None: off)."""

    @model_validator(mode="after")
    def _one_kind_of_adversarial_training(self) -> TrainConfig:
        if self.adversarial is not None and self.fare is not None:
            raise ValueError(
                "adversarial (supervised, the whole model) and fare (unsupervised, the vision "
                "encoder) are two trainings: give one"
            )
        return self


RESUMABLE_CHANGES = ("train.save_every", "train.log_every", "train.tensorboard")
"""Fields a ``--resume`` may change: they decide what is written down, not what is learnt."""


class FinetuneConfig(Strict):
    """What `prsl finetune` is configured with: the model, the data, the loss and the loop."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The model to fine-tune."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The training data."""
    loss: LossConfig = Field(default_factory=LossConfig)
    """The training loss and its parameters."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """The training loop."""

    def settings(self) -> dict[str, Any]:
        """What the weights depend on, for the output folder's record: every field but where
        the run is written, with the loss as it runs."""
        tree = self.model_dump()
        tree["train"].pop("output_dir")
        tree["loss"]["params"] = self.loss.params.recorded()
        if self.model.name_or_path != TINY:  # the prompts trained on, defaults included
            tree["model"]["prompts"] = self.model.prompts()
        if self.model.vision_tower is not None:  # a tower rewritten in place is another start
            from prsl.provenance.models import tower_fingerprint

            tree["model"]["vision_tower_fingerprint"] = tower_fingerprint(self.model.vision_tower)
        return tree
