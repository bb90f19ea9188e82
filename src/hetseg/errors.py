"""User-facing errors: one line that names the file, the problem and the fix."""

from __future__ import annotations

import sys
from pathlib import Path


# Line breaks (those of Python's str.splitlines(), which a terminal honours too) become spaces; every other
# control character (a NUL or an escape code inside a file name or a split line) is shown as its escape, so
# an error stays exactly one printable line (GUARANTEES.md, "Bad input").
def one_line(text: str, width: int = 2000) -> str:
    """``text`` as one printable line: line breaks -> spaces, other control characters -> ``\\xNN``; a line
    over ``width`` characters keeps its start and its end (the fix) around " ... " (a split line or path of
    megabytes was echoed whole)."""
    if len(text) > 4 * width:  # cut before escaping: the escapes of a huge text would be built only to be cut
        text = text[:width] + text[-width:]
    line = "".join(c if c == "\t" or (c >= " " and not "\x7f" <= c <= "\x9f") else ascii(c)[1:-1]
                   for c in " ".join(text.splitlines()))
    if len(line) <= width:
        return line
    keep = (width - 5) // 2
    return line[:keep] + " ... " + line[-keep:]


def path_problem(path: str | Path, noun: str) -> str:
    """Why ``path`` is not a readable regular file, in the words every reader uses: a folder, a device / pipe /
    socket (reading a pipe blocks), a dangling or looping link, or nothing there. ``noun`` names what was
    wanted ("image file", "split file"); call it only when ``Path(path).is_file()`` is false."""
    p = Path(path)
    return (f"is a directory, not a {noun}" if p.is_dir() else
            f"is not a regular file (a device, pipe or socket), not a {noun}" if p.exists() else
            f"is a symlink that leads nowhere (or in a loop), not a {noun}" if p.is_symlink() else
            f"{noun} not found")


def note(text: str) -> None:
    """Print ``hetseg: note: <text>`` as one line on stderr: what a command says beside its work, never an
    error (a refused command prints only its error line, so callers say notes once nothing was refused)."""
    print(one_line(f"hetseg: note: {text}"), file=sys.stderr)


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
        super().__init__(one_line(msg))


def os_error_fix(e: OSError) -> str:
    """The fix for a file-system refusal, chosen by its errno (``hetseg -v`` shows the traceback)."""
    import errno

    if e.errno == errno.ENOSPC:
        return "free disk space and rerun"
    if e.errno in (errno.EFBIG, errno.EDQUOT):
        return "free disk space, or raise the disk quota or file-size limit (ulimit -f), and rerun"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a place you may write to, or fix its permissions"
    if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return "a file or folder of that name is in the way: move it, or choose another path"
    if e.errno == errno.EMFILE:  # this process's limit (a training stage's own line also names data.workers)
        return "raise the open-file limit (ulimit -n 65536) and rerun"
    if e.errno == errno.ENFILE:  # the system's file table: ulimit -n does not raise it
        return "the system's open-file table is full: close files elsewhere or raise fs.file-max, and rerun"
    if e.errno == errno.ENOENT:
        return "check the path (a parent may be missing or a file in it may have gone)"
    return "check the path and rerun with -v for the details"
