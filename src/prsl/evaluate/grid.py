"""The cells of an evaluation grid: every attack at every ε, white-box and, with a surrogate,
transferred."""

from __future__ import annotations

from dataclasses import dataclass

from prsl.attacks import Attack
from prsl.core.errors import InvalidInput
from prsl.evaluate.config import AttackSpec
from prsl.provenance import ModelRef

TRANSFER_MARK = "@"
"""``bim@surrogate``: the result name of an attack crafted on the surrogate."""


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
    """Every (attack, ε) of the specs, then the same crafted on the surrogate when there is one."""
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
    seen: set[tuple[str, float]] = set()
    for cell in cells:
        if (cell.name, cell.eps) in seen:
            raise InvalidInput(
                f"two attacks are named {cell.name!r} at ε={cell.eps:.5g}: give one of them a "
                "distinct `label`"
            )
        seen.add((cell.name, cell.eps))
    return cells
