"""Atomic writes for every file a later command trusts (model files, model.json, done.json, results,
split files): write a temporary file in the same directory, flush it to disk, then rename it over
the target. A kill or a full disk leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from typing import Any

from hetseg.errors import HetsegError, os_error_fix

# mkstemp creates 0600 files; a written file gets what open() would have given it (0666 minus the
# umask) or keeps the mode of the file it replaces. Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _cannot_write(path: Path, e: OSError) -> HetsegError:
    """The one line for a folder that refuses a new file or folder (no temporary could be made there)."""
    return HetsegError(f"{path}: cannot write here ({e.strerror}); fix: {os_error_fix(e)}")


def check_can_write(path: str | Path, flag: str) -> None:
    """Refuse, before any work, an output file ``path`` whose nearest existing folder is not a writable folder
    (a long export or a printed table must not end in a late refusal). One line naming that folder."""
    _check_folder_can_be_written(Path(path).parent, flag)


def _check_folder_can_be_written(folder: Path, flag: str) -> None:
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HetsegError(f"{parent}: cannot write {flag} here (not a writable folder); fix: choose a place you "
                          "may write to, or fix its permissions")


def check_out_dir(path: str | Path, flag: str = "--out") -> None:
    """Refuse, before a long run, an output folder that is a file or cannot be made or written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise HetsegError(f"{p}: {flag} is a file, not a folder; fix: give a folder for the results")
    _check_folder_can_be_written(p, flag)


def holds_other_text(path: str | Path, text: str) -> bool:
    """Whether ``path`` exists (a link too) without holding exactly ``text``: a file a command may not
    write over, while a rerun that would write the same bytes may go ahead. Unreadable counts as other."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return False
    try:
        return p.read_text(encoding="utf-8") != text
    except (OSError, ValueError):
        return True


def parse_json(text: str, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``, except that JSON nested past Python's recursion limit is a
    ``json.JSONDecodeError`` (a ValueError) like any other malformed file: json raises RecursionError there,
    which every reader would otherwise have to name beside ValueError (a 100,000-deep ``[[[...`` file was a
    traceback in each of them)."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; on failure ``path`` is untouched, and the
    folders made for it are removed again (when still empty): a refused export left its new folders behind."""
    path = Path(path)
    made = list(takewhile(lambda d: not d.exists() and not d.is_symlink(), (path.parent, *path.parent.parents)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        _undo(None, made)
        raise _cannot_write(path, e) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        _undo(tmp, made)
        raise HetsegError(f"{path}: write failed ({e.strerror}, the previous file, if any, is unchanged); "
                          f"fix: {os_error_fix(e)}") from None
    except BaseException:
        _undo(tmp, made)
        raise
    return path


def _undo(tmp: str | None, made: list[Path]) -> None:
    """Remove a failed write's temporary file, then the folders made for it, deepest first, while empty."""
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)
    for d in made:  # made lists the deepest folder first
        try:
            d.rmdir()
        except OSError:  # not empty (another writer's file) or already gone: leave it
            break


def write_text(path: str | Path, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON write, indented, trailing newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


@contextmanager
def replaced_folder(path: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden folder next to ``path``; on success it *replaces* ``path`` as a whole.

    For a folder a command owns and rewrites every time (``RUN/predictions_<split>/``): a rerun on
    another or smaller split leaves no stale file from the last one, and an evaluation that fails
    half-way leaves the previous folder as it was. If the swap itself fails, the previous folder is
    put back. ``path`` is replaced as the name it is: a symlink there is replaced by a real folder and
    the folder it pointed to is left alone. A run killed outright may leave a hidden
    ``.<name>.*.tmp`` folder; it is not swept, since it could be another running command's."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")  # unique: named after the fresh folder
    try:
        if path.is_symlink() or path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
    except OSError as e:
        if (old.is_symlink() or old.exists()) and not (path.is_symlink() or path.exists()):
            os.rename(old, path)  # the swap failed half-way: the previous folder goes back
        shutil.rmtree(tmp, ignore_errors=True)
        raise HetsegError(f"{path}: cannot replace it ({e.strerror}; the previous one is unchanged); "
                          f"fix: {os_error_fix(e)}") from None
    if old.is_symlink() or old.is_file():
        old.unlink(missing_ok=True)
    else:
        shutil.rmtree(old, ignore_errors=True)  # the new folder is in place: a leftover costs only disk
