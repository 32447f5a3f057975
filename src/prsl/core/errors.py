"""The mistakes a user can fix, as one family of exceptions the command line prints in one line.

Everything raised as a :class:`UserError` names the value or file the person running prsl gave
and how to fix it; the CLI prints that message alone and exits with status 2. Any other
exception is a bug (or the machine: out of memory, a failing kernel) and keeps its traceback.
Each kind also derives from the built-in exception it refines, so ``except ValueError`` in a
caller's code keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for: a value, a file, a folder, a missing package."""


class InvalidInput(UserError, ValueError):
    """A value that cannot be used: a parameter out of range, a malformed config or file."""


class MissingInput(UserError, FileNotFoundError):
    """A file, folder or model the user named does not exist (or cannot be reached)."""


class RunConflict(UserError, FileExistsError):
    """An output folder holds results computed with other settings than the ones given.

    ``problem`` is the message without its advice (``fix``), so a caller that runs the command
    on the user's behalf (a sweep) can give advice of its own.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem}: {fix}" if fix else problem)
        self.problem = problem
        self.fix = fix

    def __reduce__(self):
        return type(self), (self.problem, self.fix)


class MissingDependency(UserError, RuntimeError):
    """An optional program or package the request needs is not installed (Java, TensorBoard)."""


class Interrupted(KeyboardInterrupt):
    """A run stopped on Ctrl-C or SIGTERM, saying what it kept (``kept``) and how to go on
    (``fix``); ``code`` is the exit status a shell expects (130 for SIGINT, 143 for SIGTERM).

    A :class:`KeyboardInterrupt`, so a caller that catches those still does.
    """

    def __init__(self, kept: str, fix: str = "", code: int = 130) -> None:
        super().__init__(f"{kept}; {fix}" if fix else kept)
        self.kept = kept
        self.fix = fix
        self.code = code

    @property
    def message(self) -> str:
        return str(self)

    def __reduce__(self):
        return type(self), (self.kept, self.fix, self.code)
