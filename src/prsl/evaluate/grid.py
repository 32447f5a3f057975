"""The cells of an evaluation grid: every attack at every ε, white-box and, with a surrogate,
transferred."""

from __future__ import annotations

from dataclasses import dataclass

from prsl.attacks import Attack
from prsl.evaluate.config import TRANSFER_MARK, AttackSpec
from prsl.provenance import ModelRef


@dataclass(frozen=True)
class Cell:
    """One attack at one ε, crafted on the evaluated model itself or on the surrogate."""

    name: str
    eps: float
    attack: Attack
    white_box: str | None = None
    """For a transferred cell, the name of the same attack crafted on the evaluated model."""

    @property
    def transfer(self) -> bool:
        """Crafted on the surrogate (and scored on the evaluated model)."""
        return self.white_box is not None

    @property
    def key(self) -> str:
        """Names the cell in the run's settings record (the exact ε, not a rounding)."""
        return f"{self.name} eps={self.eps!r}"

    def recorded(self) -> dict:
        """What the results depend on: the attack's name and every parameter as it runs."""
        return {"attack": self.attack.name, "transfer": self.transfer, **self.attack.recorded()}


def grid_cells(specs: list[AttackSpec], surrogate: ModelRef | None) -> list[Cell]:
    """Every (attack, ε) of the specs, then the gradient-based ones crafted on the surrogate
    when there is one (but for specs with ``transfer: false``).

    Names are unique: the config refuses two specs of one name and labels holding the
    transfer mark."""
    pairs = [
        (spec, eps, attack)
        for spec in specs
        for eps, attack in zip(spec.eps, spec.attacks, strict=True)
    ]
    cells = [Cell(spec.result_name, eps, attack) for spec, eps, attack in pairs]
    if surrogate is not None:
        cells += [
            Cell(
                f"{spec.result_name}{TRANSFER_MARK}{surrogate.name}", eps, attack, spec.result_name
            )
            for spec, eps, attack in pairs
            if spec.transfer and attack.uses_gradients
        ]
    return cells
