"""User-facing errors: one line that names the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class HetsegError(Exception):
    """Base class; the CLI prints ``str(err)`` on one line and exits with status 2."""


class DataError(HetsegError, ValueError):
    """Bad input data. ``DataError(path, problem, fix)`` renders as ``path: problem; fix: fix``."""

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        msg = problem if path is None else f"{path}: {problem}"
        if fix:
            msg += f"; fix: {fix}"
        super().__init__(msg.replace("\n", " "))
