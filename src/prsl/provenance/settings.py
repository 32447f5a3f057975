"""The settings an output folder's results were computed with, and the check every rerun makes.

Every command that writes results (``finetune``, ``evaluate``, ``attack``) records in its output
folder, as ``prsl_run.json``, the settings those results depend on. A rerun into that folder
compares its own settings with the record before any work:

- equal: the rerun resumes, reusing what is finished;
- different in a field the results depend on: refused with a :class:`RunConflict` in one short
  line naming the first fields that differ, their recorded and new values (shortened; an ε as
  ``8/255``), and how many more differ;
- different only where a command allows it: ``may_change`` fields (how often to log, say) are
  ignored, and in a ``may_grow`` section (the attacks of an evaluation, its models) entries may
  be added or left out, but an entry present in both must be equal.

A folder whose record exists but that holds no result yet (the first run failed before
producing any) is not protected: the caller passes ``has_results=False`` and the record is
replaced.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prsl.core.errors import RunConflict
from prsl.core.pixels import levels_text

SETTINGS = "prsl_run.json"
_ABSENT = object()
_SHOWN = 24  # characters of a value shown in a message
_LISTED = 3  # differences a refusal names; the rest are counted
_PIXEL_FIELDS = ("eps", "alpha", "step_size")
"""Fields holding a pixel distance, shown as grey levels (``8/255``) like every ε prsl prints."""
_EPS_IN_NAME = re.compile(r"eps=([-+0-9.eE]+)")


@dataclass(frozen=True)
class Difference:
    """One field whose recorded value differs from the value given now."""

    path: str
    recorded: Any
    given: Any

    def __str__(self) -> str:
        field = re.split(r"[.\[]", self.path)[-1].strip('"]')
        old, new = _show(self.recorded, field), _show(self.given, field)
        if old == new:  # shortened alike: show them whole, or the message says "x -> x"
            old, new = _show(self.recorded, field, None), _show(self.given, field, None)
        return f"{_readable(self.path)}: {old} -> {new}"


def _show(value: Any, field: str = "", limit: int | None = _SHOWN) -> str:
    if value is _ABSENT:
        return "(not set)"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and field in _PIXEL_FIELDS and limit is not None:
        return levels_text(value)
    text = json.dumps(value, default=str)
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _readable(path: str) -> str:
    """A setting's path with the ε in a cell's name as grey levels (``pgd eps=8/255``)."""

    def levels(match: re.Match) -> str:
        try:
            return "eps=" + levels_text(float(match.group(1)))
        except ValueError:
            return match.group(0)

    return _EPS_IN_NAME.sub(levels, path)


def _section(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def describe_differences(found: list[Difference], listed: int = _LISTED) -> str:
    """What changed, in one short line: a difference per section (``items``, ``data``, a
    cell...), the sections with fewest differences first (one changed field says more than a
    hundred item digests), "+N more in <sections>" for the rest."""
    sections: dict[str, list[Difference]] = {}
    for difference in found:
        sections.setdefault(_section(difference.path), []).append(difference)
    ordered = sorted(sections.items(), key=lambda item: len(item[1]))
    parts = []
    for section, within in ordered[:listed]:
        others = f" (+{len(within) - 1} more in {section})" if len(within) > 1 else ""
        parts.append(f"{within[0]}{others}")
    rest = ordered[listed:]
    if rest:
        more = sum(len(within) for _, within in rest)
        named = ", ".join(section for section, _ in rest[:listed])
        parts.append(f"+{more} more in {named}" + (", ..." if len(rest) > listed else ""))
    return "; ".join(parts)


def _child(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _walk(recorded: Any, given: Any, path: str, may_grow: Collection[str]) -> Iterator[Difference]:
    if isinstance(recorded, dict) and isinstance(given, dict):
        growing = path in may_grow
        for key in dict.fromkeys([*recorded, *given]):
            old, new = recorded.get(key, _ABSENT), given.get(key, _ABSENT)
            if growing and (old is _ABSENT or new is _ABSENT):
                continue
            if old is _ABSENT or new is _ABSENT:
                yield Difference(_child(path, key), old, new)
            else:
                yield from _walk(old, new, _child(path, key), may_grow)
    elif recorded != given:
        yield Difference(path, recorded, given)


def as_recorded(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from the record (JSON types: lists, str keys)."""
    return json.loads(json.dumps(settings, default=str))


def differences(
    recorded: dict[str, Any],
    given: dict[str, Any],
    *,
    may_change: Collection[str] = (),
    may_grow: Collection[str] = (),
) -> list[Difference]:
    """The fields (dotted paths) whose values differ, less those allowed to."""
    found = _walk(as_recorded(recorded), as_recorded(given), "", may_grow)
    return [d for d in found if not any(_within(d.path, allowed) for allowed in may_change)]


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def read_settings(folder: Path) -> dict[str, Any] | None:
    """The record in ``folder``: ``{"command": ..., "settings": {...}}``, or None."""
    path = Path(folder) / SETTINGS
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # torn by a kill while written: nothing trustworthy is recorded
    return record if isinstance(record, dict) else None


def check_owner(folder: Path, command: str) -> None:
    """Refuse a folder whose record is another command's: its files are not this command's to
    resume, overwrite or discard, whatever this command's own files there say."""
    _refuse_another_owner(folder, read_settings(folder), command)


def _refuse_another_owner(folder: Path, record: dict[str, Any] | None, command: str) -> None:
    if record is not None and record.get("command") not in (None, command):
        raise RunConflict(
            f"{folder} holds the output of `prsl {record['command']}`, not of `prsl {command}`",
            "choose another output folder (--overwrite discards only this command's own output)",
        )


def check_settings(
    folder: Path,
    command: str,
    settings: dict[str, Any],
    *,
    has_results: bool,
    fix: str,
    may_change: Collection[str] = (),
    may_grow: Collection[str] = (),
) -> bool:
    """Refuse to reuse ``folder`` when its results were computed with other settings.

    Returns True when the folder holds results computed with these settings (a resume), False
    when there is nothing to reuse. ``fix`` ends the message: what the user can do instead.
    """
    record = read_settings(folder)
    _refuse_another_owner(folder, record, command)
    if record is None or not has_results:
        return False
    found = differences(
        record.get("settings", {}), settings, may_change=may_change, may_grow=may_grow
    )
    if found:
        raise RunConflict(
            f"{folder} holds results computed with other settings ({describe_differences(found)})",
            fix,
        )
    return True


def merged_settings(
    folder: Path, settings: dict[str, Any], may_grow: Collection[str] = ()
) -> dict[str, Any]:
    """``settings`` with the entries of the recorded ``may_grow`` sections it does not name, so
    the record keeps describing every result in the folder."""
    record = read_settings(folder) or {}
    old = record.get("settings", {})
    merged = dict(settings)
    for section in may_grow:
        if isinstance(old.get(section), dict) and isinstance(settings.get(section), dict):
            merged[section] = {**old[section], **settings[section]}
    return merged


def write_settings(
    folder: Path, command: str, settings: dict[str, Any], may_grow: Collection[str] = ()
) -> None:
    """Record ``settings`` in ``folder`` (atomically: a kill leaves the old record or the new)."""
    merged = merged_settings(folder, as_recorded(settings), may_grow)
    record = {"command": command, "settings": merged}
    path = Path(folder) / SETTINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    # one partial file per process: several processes of one launch record the same settings
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(partial, path)
