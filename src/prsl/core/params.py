"""The base of every typed parameter object: each loss and each attack is one of these.

A parameter object is the only place its parameters are declared: names, types, defaults, ranges
and the rules between fields all live on the class and are checked once, when it is built.
After that it is frozen, so what was validated is what runs and what is recorded.

- Unknown names are refused with the list of accepted ones (a typo never falls back to a
  default).
- Numbers are strict: ``True`` is not a number, ``3.0`` is not an integer; an integer is a valid
  float. Floats may also be written as text, ``"1e-5"`` or a fraction ``"8/255"`` (configs and
  command lines give text), through :func:`parse_number`.
- Every failure is one :class:`InvalidInput` line naming the owner, the field and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo

from prsl.core.errors import InvalidInput


def parse_number(value: Any, *, name: str = "value") -> float:
    """A finite float from a number, a numeric string (``"1e-5"``) or a fraction (``"8/255"``).

    Fractions are parsed, never evaluated, so a config file cannot run code. Booleans and other
    types are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{name} must be a number or a fraction like '8/255'; got {value!r}")
    if isinstance(value, str):
        numerator, slash, denominator = value.strip().partition("/")
        try:
            number = float(numerator) / float(denominator) if slash else float(numerator)
        except (ValueError, ZeroDivisionError):
            raise InvalidInput(
                f"{name} must be a number or a fraction like '8/255'; got {value!r}"
            ) from None
    else:
        number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number; got {value!r}")
    return number


def _interval(low: float | None, high: float | None, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {low:g}"
    if high is not None:
        return f"{'<' if open_high else '<='} {high:g}"
    return ""


@dataclass(frozen=True)
class Domain:
    """The values a :func:`real`, :func:`integer` or :func:`choice` field accepts, as words
    (``>= 0``, ``in [0, 1)``): kept in the field's metadata for the configuration reference."""

    interval: str


def real(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
    optional: bool = False,
    hint: str = "",
) -> Any:
    """A finite float field in an interval, also accepted as text (``"1e-5"``, ``"8/255"``).

    ``real(0)`` is >= 0, ``real(0, open_low=True)`` > 0, ``real(0, 1, open_high=True)`` [0, 1).
    The message names the field, the interval and ``hint`` (its unit or meaning).
    """
    interval = _interval(low, high, open_low, open_high)
    wanted = f"a finite number {interval}".rstrip() + (" or None" if optional else "")

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None and optional:
            return None
        name = info.field_name or "value"
        try:
            number = parse_number(value, name=name)
        except InvalidInput:
            number = math.nan
        inside = (
            math.isfinite(number)
            and (low is None or (number > low if open_low else number >= low))
            and (high is None or (number < high if open_high else number <= high))
        )
        if not inside:
            raise ValueError(f"{name} must be {wanted}{hint}; got {value!r}")
        return number

    kind = float | None if optional else float
    return Annotated[kind, BeforeValidator(check), Domain(interval)]


def integer(
    low: int | None = None, high: int | None = None, *, optional: bool = False, hint: str = ""
) -> Any:
    """An int field in [low, high]; ``True`` and ``3.0`` are refused (see :func:`real`)."""
    interval = _interval(low, high, False, False)
    wanted = f"an integer {interval}".rstrip() + (" or None" if optional else "")

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None and optional:
            return None
        inside = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (low is None or value >= low)
            and (high is None or value <= high)
        )
        if not inside:
            raise ValueError(f"{info.field_name} must be {wanted}{hint}; got {value!r}")
        return value

    kind = int | None if optional else int
    return Annotated[kind, BeforeValidator(check), Domain(interval)]


def choice(*choices: str, optional: bool = False, hint: str = "") -> Any:
    """One of a few strings (or None when ``optional``), with the valid ones in the message."""
    valid = ", ".join(repr(c) for c in choices) + (" or None" if optional else "")
    if len(choices) > 1:
        valid = f"one of {valid}"

    def check(value: Any, info: ValidationInfo) -> Any:
        if value in choices or (optional and value is None):
            return value
        raise ValueError(f"{info.field_name} must be {valid}{hint}; got {value!r}")

    kind = Literal[choices]  # type: ignore[valid-type]
    return Annotated[kind | None if optional else kind, BeforeValidator(check)]


def describe_errors(
    err: ValidationError, owner: str | None = None, accepted: list[str] | None = None
) -> str:
    """One clause for every problem of a failed validation, each naming its field.

    With ``owner`` (``attack 'pgd'``) the clauses are about that object's parameters, and an
    unknown one lists the ``accepted`` names; without, they are about a config's fields, named
    by their dotted path.
    """
    problems = []
    for error in err.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        where = ".".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if owner is not None and error["type"] == "extra_forbidden":
            names = ", ".join(accepted or [])
            problems.append(f"{owner} does not take {where!r}; its parameters are: {names}")
            continue
        if error["type"] in ("value_error", "assertion_error"):
            named = not loc or message.startswith(f"{loc[-1]} ")  # "eps must be ..."
            clause = message if named else f"{where}: {message}"
        else:
            clause = f"{where}: {message} (got {error.get('input')!r})"
        problems.append(clause if owner is None else f"{owner}: {clause}")
    return "; ".join(problems)


P = TypeVar("P", bound="Params")


class Params(BaseModel):
    """Frozen, strict, closed: a validated set of parameters (see the module docstring).

    Subclasses set ``kind`` ("loss", "attack") and ``name`` (the registry name), which make the
    error messages read ``attack 'pgd': eps must be ...``.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_default=True,
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
    )
    kind: ClassVar[str] = "parameters"
    name: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        self._validate(data, type(self).owner())

    def _validate(self, data: dict[str, Any], owner: str) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise InvalidInput(
                describe_errors(err, owner or None, type(self).parameter_names())
            ) from None

    @classmethod
    def build(cls: type[P], data: Mapping[str, Any], *, owner: str | None = None) -> P:
        """``cls(**data)``, its failure naming ``owner``: by default the object
        (``attack 'pgd': eps must be ...``); ``""`` names only the field (``eps must be
        ...``), for a config section whose own path already says what the object is."""
        built = cls.__new__(cls)
        built._validate(dict(data), cls.owner() if owner is None else owner)
        return built

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Params:  # type: ignore[override]
        """As building it: a failure is one InvalidInput line."""
        if isinstance(obj, dict) and not kwargs:
            return cls(**obj)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def owner(cls) -> str:
        return f"{cls.kind} {cls.name!r}" if cls.name else cls.__name__

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every field, those a class declares itself before those it inherits."""
        mine = [
            name
            for klass in cls.__mro__
            for name in getattr(klass, "__annotations__", {})
            if name in cls.model_fields
        ]
        return list(dict.fromkeys(mine))

    def given(self) -> dict[str, Any]:
        """The parameters set explicitly, as given: what a config file would say."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    def recorded(self) -> dict[str, Any]:
        """Every parameter as it runs, defaults resolved: what results record."""
        return self.model_dump()

    def replace(self, **changes: Any) -> Params:
        """A validated copy with ``changes`` applied (``model_copy`` would skip validation)."""
        return type(self)(**{**self.given(), **changes})
