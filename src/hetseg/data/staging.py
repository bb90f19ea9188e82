"""All-or-nothing output: converters write into a staging folder and move it into place at the end.

A converter that refuses bad input half-way (``hetseg data voc-aug``, ``hetseg data coco``) must not
leave half an output behind nor touch what was there before; with :func:`staged` it writes every
file under a fresh hidden folder next to its destination and only a successful run moves them in
(``os.replace``: an existing file, or symlink, at a destination is replaced as a whole; a symlink
is never written *through*).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hetseg.errors import DataError
from hetseg.io_atomic import holds_other_text


def refuse_other_file(path: Path, text: str, what: str) -> None:
    """Refuse an existing ``path`` unless it already holds exactly ``text``: an output may name a file
    the data set or a run trusts (its own val split), while a rerun of the same conversion or draw
    rewrites the same bytes and may go ahead (``data splits``, ``data coco``)."""
    if path.is_dir():
        raise DataError(path, f"a folder is in the way of the {what}, nothing was written", "choose another --out")
    if holds_other_text(path, text):
        raise DataError(path, f"already exists with other content ({what}), nothing was written",
                        f"choose another --out or name, or move {path.name} away")


def _in_the_way(src: Path, dst: Path) -> Path | None:
    """The first destination path the move of ``src`` into ``dst`` could not replace: a file where a
    folder goes, or a (real) folder where a file goes. Checked before anything moves, so such a refusal
    leaves ``dst`` as it was instead of half replaced."""
    if not dst.exists():
        return None
    if not dst.is_dir():
        return dst
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        target = dst / e.name
        if e.is_dir(follow_symlinks=False):
            found = _in_the_way(Path(e.path), target)
            if found is not None:
                return found
        elif target.is_dir() and not target.is_symlink():
            return target
    return None


def _move_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        target = dst / e.name
        if e.is_dir(follow_symlinks=False):
            _move_tree(Path(e.path), target)
        else:  # a file, or a symlink (to a file or a folder) moved as the link itself
            os.replace(e.path, target)


@contextmanager
def staged(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh folder standing in for ``dest``; on success move its contents into ``dest``.

    On an exception the staging folder is removed and ``dest`` is left exactly as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        blocked = _in_the_way(tmp, dest)
        if blocked is not None:
            kind = "folder" if blocked.is_dir() else "file"
            raise DataError(blocked, f"a {kind} is in the way of the output, nothing was written",
                            f"move or delete {blocked} and rerun")
        _move_tree(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
