"""Paths named by data files must stay inside their dataset root, symlinks included.

The rule, applied by :func:`~hetseg.data.records.read_split` to every image and mask of a split file
and by the COCO converter to every ``file_name`` under ``--images``:

- a path is *relative* to the root: absolute paths and ``..`` components are refused (a DeepLab
  list's leading ``/`` means root-relative and is stripped before);
- **directory symlinks are followed wherever they point**: the root itself, or a split folder such
  as ``JPEGImages/`` or ``SegmentationClass/``, may be a link to another disk. A directory link
  that sits inside the dataset makes the folder it reaches part of the dataset;
- **a file symlink must end inside the dataset**: inside the resolved root, or inside a folder
  reached through such a directory link. ``JPEGImages/a.jpg -> /home/me/.ssh/id_rsa`` (or a link to
  any file outside) is refused: link the whole folder instead of single files, or copy the file.
  ``hetseg data coco`` links its images through one directory link per image folder
  (``OUT/sources/<folder>-<hash>``), so its output passes this rule.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

MAX_LINKS = 40  # like the kernel's ELOOP limit


def unsafe_rel(token: str) -> bool:
    """True when ``token`` is absolute or has a ``..`` part (POSIX or Windows spelling)."""
    p = PurePosixPath(token.replace("\\", "/"))
    drive = len(token) >= 2 and token[0].isalpha() and token[1] == ":" and token[2:3] in ("", "/", "\\")
    return token == "" or p.is_absolute() or ".." in p.parts or drive


class SymlinkLoop(OSError):
    """More than :data:`MAX_LINKS` symlinks on one path (a loop); ``args[0]`` is the last link."""


def _inside(p: str, zones: list[str]) -> bool:
    return any(p == z or p.startswith(z if z.endswith("/") else z + "/") for z in zones)


class RootGuard:
    """Checks paths under one root against the rule; folder walks are cached (one lstat per file)."""

    def __init__(self, root: str | Path) -> None:
        self.root = os.path.realpath(root)
        self._dirs: dict[str, tuple[str, list[str], int]] = {}

    def _walk(self, cur: str, zones: list[str], todo: list[str], links: int) -> tuple[str, list[str], int]:
        zones = list(zones)
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "/":
                cur = "/"
                continue
            if name == "..":
                cur = os.path.dirname(cur)
                continue
            nxt = os.path.join(cur, name)
            if not os.path.islink(nxt):
                cur = nxt
                continue
            links += 1
            if links > MAX_LINKS:
                raise SymlinkLoop(nxt)
            if os.path.isdir(nxt):
                real = os.path.realpath(nxt)
                if _inside(cur, zones):
                    zones.append(real)
                cur = real
            else:  # a file link (or a dangling one): walk its target from the link's folder
                todo[:0] = list(PurePosixPath(os.readlink(nxt)).parts)
        return cur, zones, links

    def escaping(self, rel: str) -> Path | None:
        """Where ``root/rel`` really leads if that breaks the rule, else None (see the module doc).

        ``rel`` is a root-relative POSIX path without ``..`` (see :func:`unsafe_rel`). The walk follows
        the path one component at a time, as the kernel does: a directory link found inside the
        dataset adds its resolved folder to the dataset; a file link is followed to its target, which
        must end inside the dataset. A symlink loop (more than 40 links) raises :class:`SymlinkLoop`.
        Missing files are not an error here (the caller checks existence). Folder walks are cached.
        """
        folder, _, name = rel.rpartition("/")
        state = self._dirs.get(folder)
        if state is None:
            state = self._dirs[folder] = self._walk(self.root, [self.root], folder.split("/") if folder else [], 0)
        cur, zones, links = self._walk(*state[:2], [name], state[2])
        return None if _inside(cur, zones) else Path(cur)


def link_problem(guard: RootGuard, rel: str, where: str) -> tuple[str, str] | None:
    """None when ``rel`` obeys the rule; else (problem, fix) for a :class:`DataError`, the problem
    reading "is a symlink loop (at X)" or "is a symlink to T, outside <where>"."""
    try:
        target = guard.escaping(rel)
    except SymlinkLoop as e:
        return f"is a symlink loop (at {e.args[0]})", "point the link at a real file"
    if target is None:
        return None
    return (f"is a symlink to {target}, outside {where}",
            "copy the file inside it, or link its whole folder (folder links are followed)")
