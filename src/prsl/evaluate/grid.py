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
    transfer: bool = False

    @property
    def key(self) -> str:
        """Names the cell in the run's settings record (the exact ε, not a rounding)."""
        return f"{self.name} eps={self.eps!r}"

    def recorded(self) -> dict:
        """What the results depend on: the attack's name and every parameter as it runs."""
        return {"attack": self.attack.name, "transfer": self.transfer, **self.attack.recorded()}


def grid_cells(specs: list[AttackSpec], surrogate: ModelRef | None) -> list[Cell]:
    """Every (attack, ε) of the specs, then the same crafted on the surrogate when there is one.

    Names are unique: the config refuses two specs of one name and labels holding the
    transfer mark."""
    cells = [
        Cell(spec.result_name, eps, attack)
        for spec in specs
        for eps, attack in zip(spec.eps, spec.attacks, strict=True)
    ]
    if surrogate is not None:
        cells += [
            Cell(f"{c.name}{TRANSFER_MARK}{surrogate.name}", c.eps, c.attack, transfer=True)
            for c in list(cells)
        ]
    return cells
