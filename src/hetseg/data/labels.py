"""Image-level labels: ``labels.json``, irn/psa ``cls_labels.npy`` and label validation.

Labels are *mask indices*: 1..254 (0 is background, 255 void), below ``num_classes`` when known.
Every reader here is strict: a label that is not an integer (``2.7``, ``"3"``, ``true``), out of
range or listed twice, an image id listed twice, or a file of the wrong shape raises
:class:`~hetseg.errors.DataError` naming the file and the image; nothing is rounded or dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from hetseg.data.npyfile import read_npy
from hetseg.errors import DataError
from hetseg.io_atomic import parse_json, write_text

MAX_LABEL = 254
_JSON_FIX = 'write {"<image id>": [class indices 1..254], ...}'


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def normalise_labels(labs: Iterable[int], num_classes: int | None, src: Path | str, rid: str) -> tuple[int, ...]:
    """Sorted unique mask indices of one image; non-integers and indices outside [1, C) raise DataError."""
    if isinstance(labs, (str, bytes, Mapping)) or not isinstance(labs, Iterable):
        raise DataError(src, f"image '{rid}': labels are {labs!r}, not a list of class indices", _JSON_FIX)
    labs = list(labs)
    wrong = [x for x in labs if not _is_int(x)]
    if wrong:
        raise DataError(src, f"image '{rid}': label {wrong[0]!r} is not an integer class index",
                        "labels are integer mask indices (no floats, strings or booleans)")
    out = tuple(sorted({int(x) for x in labs}))
    hi = num_classes if num_classes is not None else MAX_LABEL + 1
    bad = [x for x in out if x < 1 or x >= hi]
    if bad:
        raise DataError(src, f"image '{rid}' has labels {bad} outside [1, {hi})",
                        "labels are mask indices; 0 is background and is never an image label" if 0 in bad else
                        "use mask indices >= 1 (0 is background)" if min(bad) < 0 else
                        f"the class count (data.num_classes, or --num-classes) counts background too ({hi} now): "
                        "raise it, or fix the labels")
    return out


def labels_from_mask(mask: np.ndarray) -> tuple[int, ...]:
    """Object classes present in an (H, W) mask: values other than 0 (background) and 255 (void)."""
    vals = np.unique(mask)
    return tuple(int(v) for v in vals if v not in (0, 255))


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for k, v in pairs:
            if k in seen:
                raise DataError(path, f"image id '{k}' is listed twice", "keep one entry per image id")
            seen[k] = v
        return seen
    return hook


def load_labels_json(path: str | Path, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """``{"id": [mask indices], ...}`` -> dict id -> sorted tuple.

    Refused with a :class:`DataError`: a missing/non-UTF-8/malformed file, a top level that is not
    an object, a value that is not a list, a label that is not an integer (floats such as ``2.7``
    and booleans included), outside 1..254 (or ``[1, num_classes)``), or listed twice for one
    image, and an image id listed twice.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
        data = parse_json(text, object_pairs_hook=_no_duplicate_keys(p))
    except UnicodeDecodeError as e:
        raise DataError(p, f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                        "save labels.json as UTF-8") from None
    except (OSError, json.JSONDecodeError) as e:
        what = "is a directory" if p.is_dir() else f"cannot read labels JSON ({type(e).__name__}: {e})"
        raise DataError(p, what, _JSON_FIX) from None
    if not isinstance(data, dict):
        raise DataError(p, f"holds a JSON {type(data).__name__}, expected an object id -> labels", _JSON_FIX)
    out: dict[str, tuple[int, ...]] = {}
    for rid, labs in data.items():
        if not isinstance(labs, list):
            raise DataError(p, f"image '{rid}': labels are {json.dumps(labs)}, not a list of class indices", _JSON_FIX)
        out[rid] = normalise_labels(labs, num_classes, p, rid)
        if len(out[rid]) != len(labs):
            dup = next(x for x in labs if labs.count(x) > 1)
            raise DataError(p, f"image '{rid}': label {dup} is listed twice", "list each class once per image")
    return out


def save_labels_json(path: str | Path, labels: Mapping[str, Sequence[int]]) -> None:
    """Write ``labels.json`` (see :func:`load_labels_json`)."""
    write_text(path, json.dumps({k: list(map(int, v)) for k, v in labels.items()}, indent=0) + "\n")


_NPY_FIX = "pass irn/psa's voc12/cls_labels.npy (a dict id -> 20-d multi-hot saved with np.save)"


def load_cls_labels_npy(path: str | Path) -> dict[str, tuple[int, ...]]:
    """irn/psa ``cls_labels.npy``: a pickled dict id -> 20-d multi-hot (background excluded).

    Keys are ``numpy.int32`` (irn, 2007000032 -> "2007_000032") or ``str`` (psa). Returned labels are
    mask indices (vector index + 1). The pickle is read by :func:`~hetseg.data.npyfile.read_npy`,
    which rebuilds numpy arrays and containers only and never calls anything else in the file.
    Keys that are neither int nor str, two keys naming one id, and vectors that are not 1-D
    numeric arrays raise :class:`DataError`.
    """
    arr = read_npy(path)
    if arr.dtype != np.dtype(object) or arr.shape != ():
        raise DataError(path, f"holds a {arr.dtype} array of shape {arr.shape}, not a dict", _NPY_FIX)
    obj = arr.item()
    if not isinstance(obj, dict):
        raise DataError(path, f"holds a {type(obj).__name__}, not a dict", _NPY_FIX)
    out: dict[str, tuple[int, ...]] = {}
    for k, vec in obj.items():
        if isinstance(k, str):
            rid = k
        elif _is_int(k) and int(k) >= 0:
            k = int(k)
            rid = f"{k // 1000000}_{k % 1000000:06d}"
        else:
            raise DataError(path, f"key {k!r} is not an image id (str) or a VOC id number (int)", _NPY_FIX)
        v = np.asarray(vec)
        if v.ndim != 1 or v.dtype.kind not in "biuf":
            raise DataError(path, f"image '{rid}': value is a {v.dtype} array of shape {v.shape}, not a 1-D "
                            "multi-hot vector", _NPY_FIX)
        if rid in out:
            raise DataError(path, f"two keys name image '{rid}'", "keep one entry per image")
        out[rid] = tuple(int(i) + 1 for i in np.flatnonzero(v > 0))
    return out


def load_labels_file(path: str | Path, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """``data.labels``: a labels.json (:func:`load_labels_json`) or an irn/psa ``cls_labels.npy``
    (:func:`load_cls_labels_npy`), told apart by the suffix; labels checked against ``num_classes``.
    A relative path is read from the current folder, not the data root (split paths are), so a missing
    file is named by where it was looked for."""
    if not Path(path).exists():
        raise DataError(f"data.labels={path}", f"no such file ({Path(path).absolute()})",
                        "data.labels is read from the current folder, not the data root: give its path from here "
                        "or an absolute one")
    if Path(path).suffix.lower() != ".npy":
        return load_labels_json(path, num_classes)
    return {rid: normalise_labels(ls, num_classes, path, rid) for rid, ls in load_cls_labels_npy(path).items()}
