"""The cells of an evaluation grid: every attack at every ε, white-box and, with a surrogate,
transferred."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prsl.attacks import Attack
from prsl.evaluate.config import START_CLEAN, START_WORST, TRANSFER_MARK, AttackSpec, Start
from prsl.provenance import ModelRef


@dataclass(frozen=True)
class Cell:
    """One attack at one ε, crafted on the evaluated model itself or on the surrogate."""

    name: str
    eps: float
    attack: Attack
    white_box: str | None = None
    """For a transferred cell, the name of the same attack crafted on the evaluated model."""
    reference: str | None = None
    """The spec's ``reference`` (None: the evaluation's ``attack_target``)."""
    targets: tuple[str, ...] = ()
    """The spec's target texts (empty: untargeted)."""
    keywords: tuple[str, ...] = ()
    """The spec's ``keywords`` (empty: the evaluation's)."""
    start: Start = START_CLEAN
    """Where its attack starts (``AttackSpec.start``)."""
    dtype: str | None = None
    """The dtype the crafting model computes in (None: the evaluation's)."""
    follows: tuple[str, ...] = ()
    """For ``start: worst_case``, the cells before it at its ε whose images it may start from."""

    @property
    def transfer(self) -> bool:
        """Crafted on the surrogate (and scored on the evaluated model)."""
        return self.white_box is not None

    @property
    def key(self) -> str:
        """Names the cell in the run's settings record (the exact ε, not a rounding)."""
        return f"{self.name} eps={self.eps!r}"

    @property
    def targeted(self) -> bool:
        return bool(self.targets)

    @property
    def group(self) -> tuple[float, str]:
        """The cells one worst case is taken over: the same ε and ball norm."""
        return (self.eps, self.attack.ball_norm)

    def crafting(self) -> dict:
        """How it is crafted beyond the attack's parameters, as given (empty by default)."""
        start = {"start": self.start} if self.start != START_CLEAN else {}
        dtype = {"dtype": self.dtype} if self.dtype is not None else {}
        return start | dtype

    def recorded(self) -> dict:
        """What the predictions depend on: the attack's name, every parameter as it runs, what
        it aims at when the spec says (absent otherwise, so older records still match), and
        where it starts: after which cells, for a start at the worst case so far. Keywords are
        not: they only change how the results read the predictions."""
        aims = {"reference": self.reference} if self.reference is not None else {}
        aims |= {"targets": list(self.targets)} if self.targets else {}
        follows = {"follows": list(self.follows)} if self.start == START_WORST else {}
        return {
            "attack": self.attack.name,
            "transfer": self.transfer,
            **aims,
            **self.attack.recorded(),
            **self.crafting(),
            **follows,
        }


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
    cells = [
        Cell(
            spec.result_name,
            eps,
            attack,
            None,
            *spec_aims(spec),
            start=spec.start,
            dtype=spec.dtype,
        )
        for spec, eps, attack in pairs
    ]
    if surrogate is not None:
        cells += [
            Cell(
                f"{spec.result_name}{TRANSFER_MARK}{surrogate.name}",
                eps,
                attack,
                spec.result_name,
                *spec_aims(spec),
                start=spec.start,
                dtype=spec.dtype,
            )
            for spec, eps, attack in pairs
            if spec.transfer and attack.uses_gradients
        ]
    return [
        replace(cell, follows=tuple(c.name for c in cells[:i] if c.group == cell.group))
        if cell.start == START_WORST
        else cell
        for i, cell in enumerate(cells)
    ]


def spec_aims(spec: AttackSpec) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """A spec's reference, targets and keywords as a :class:`Cell` holds them."""
    return spec.reference, tuple(spec.targets or ()), tuple(spec.keywords or ())
