"""Adversarial attacks on images in [0, 1] against any per-example loss to maximise.

Each attack is a typed parameter object that runs when called (``PGD(eps=8/255)(images,
loss_fn)``, or ``get_attack("pgd", eps=...)``), with a functional form beside it (``fgsm``,
``bim``, ``pgd``, ``mifgsm``, ``apgd``, ``cw_l2``, ``square``), and task wrappers that build the
loss from a captioning / VQA adapter. Configs write an attack flat (``{name: pgd, eps: 8/255}``)
and build it through one parser, ``parse_attack`` / ``parse_attacks``. Nothing here knows about
models, losses or data: the only contract is ``loss_fn(images (B, 3, H, W)) -> losses (B,)``.
Every attack returns images inside its ε-ball and [0, 1]; with ``record_every_step=True`` an
``AttackResult(final, steps)``.
"""

from prsl.attacks._checks import Eps, Steps, StepSize
from prsl.attacks.apgd import APGD, apgd, apgd_checkpoints
from prsl.attacks.base import DEFAULT_EPS, Attack, AttackResult, LossFn
from prsl.attacks.bim import BIM, bim
from prsl.attacks.constraint import BallConstraint, jpeg_roundtrip
from prsl.attacks.cw import CW, cw_l2
from prsl.attacks.fgsm import FGSM, fgsm
from prsl.attacks.mifgsm import MIFGSM, mifgsm
from prsl.attacks.pgd import PGD, pgd
from prsl.attacks.presets import CLIP_STD, PAPER_PRESETS, VIT_GPT2_STD, parse_eps
from prsl.attacks.registry import (
    ATTACKS,
    attack_class,
    attack_parameters,
    get_attack,
    paper_attack,
    parse_attack,
    parse_attacks,
)
from prsl.attacks.square import Square, square, square_fraction
from prsl.attacks.tasks import (
    SupportsLoss,
    attack_mode,
    craft_on_surrogate,
    targeted_loss,
    targeted_success,
    untargeted_loss,
    untargeted_success,
)

__all__ = [
    "APGD",
    "ATTACKS",
    "BIM",
    "CLIP_STD",
    "CW",
    "DEFAULT_EPS",
    "Eps",
    "FGSM",
    "MIFGSM",
    "PAPER_PRESETS",
    "PGD",
    "VIT_GPT2_STD",
    "Attack",
    "AttackResult",
    "BallConstraint",
    "LossFn",
    "Square",
    "StepSize",
    "Steps",
    "SupportsLoss",
    "apgd",
    "apgd_checkpoints",
    "attack_class",
    "attack_mode",
    "attack_parameters",
    "bim",
    "craft_on_surrogate",
    "cw_l2",
    "fgsm",
    "get_attack",
    "jpeg_roundtrip",
    "mifgsm",
    "paper_attack",
    "parse_attack",
    "parse_attacks",
    "parse_eps",
    "pgd",
    "square",
    "square_fraction",
    "targeted_loss",
    "targeted_success",
    "untargeted_loss",
    "untargeted_success",
]
