"""Interrupting a fine-tune the way a kill would: right after a checkpoint is written."""

from __future__ import annotations

import pytest

import prsl.train.loop


class Killed(BaseException):
    """Stands for the process dying (a BaseException, so no ``except Exception`` swallows it)."""


def die_after_saving(monkeypatch: pytest.MonkeyPatch, step: int | None = None) -> None:
    """Make ``prsl.train.loop.save`` raise :class:`Killed` once it has saved the checkpoint of
    ``step`` (None: the first one); ``monkeypatch.undo()`` lets the next run finish."""
    saved = prsl.train.loop.save

    def save_then_die(session, position):
        saved(session, position)
        if step is None or position.step == step:
            raise Killed

    monkeypatch.setattr(prsl.train.loop, "save", save_then_die)
