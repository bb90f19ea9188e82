"""Atomic writes for every file a later command trusts (model files, model.json, done.json, results,
split files): write a temporary file in the same directory, flush it to disk, then rename it over
the target. A kill or a full disk leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from hetseg.errors import HetsegError


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; on failure ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise HetsegError(f"{path}: cannot write here ({e.strerror}); fix: choose a writable output directory") from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise HetsegError(f"{path}: write failed ({e.strerror}); fix: free disk space or choose another "
                          "output directory (the previous file, if any, is unchanged)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> Path:
    """Atomic JSON write, indented, trailing newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")
