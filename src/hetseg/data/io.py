"""Reading images and label masks from disk, with one-line errors for the classic pitfalls.

Images come back as (H, W, 3) uint8 RGB whatever their storage mode; masks come back as (H, W)
uint8 *class indices* (0 = background, 255 = void), read from palette/grey PNGs without ever
converting through RGB: a VOC mask opened as RGB (or through cv2, which gives BGR) yields colours,
not indices, and silently trains on garbage.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from hetseg.data.paths import RootGuard, link_problem
from hetseg.errors import DataError, path_problem
from hetseg.palette import voc_colormap

if TYPE_CHECKING:  # records imports this module
    from hetseg.data.records import Record

# Modes that hold class indices directly. "1" is a bilevel mask (0/1); the 16/32-bit integer modes
# are accepted only when every value fits in uint8 (some tools save label maps as 16-bit grey).
_INDEX_MODES = ("P", "L", "1")
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "LA", "La", "PA")

_PALETTE_FIX = ("save masks as mode-P (or L) PNGs of class indices, or decode colour renderings with "
                "hetseg.data.io.rgb_to_index")


MAX_SIDE = 65535  # JPEG's own limit; a thin strip of a few hundred bytes otherwise costs memory per pixel of side


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(p, path_problem(p, f"{what} file"), "check the path (and the split file that names it)")
    return p


@contextlib.contextmanager
def _c_library_messages(capture: bool) -> Iterator[list[str]]:
    """While active, what C code writes to file descriptor 2 goes into the yielded list instead of the
    terminal: libtiff prints its own errors ("Using code not yet in table.") before Pillow raises, which
    made a second stderr line beside hetseg's one (found by a bad-input review, 2026-12-07)."""
    said: list[str] = []
    if not capture:
        yield said
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said += [line.strip() for line in sink.read(4000).decode("utf-8", "replace").splitlines() if line.strip()]


def _open(path: str | Path, what: str) -> tuple[Path, Image.Image]:
    """Open + fully decode ``path`` with EXIF orientation applied; every failure is a DataError."""
    p = _existing(path, what)
    said: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) on e.g. palette transparency; decoding errors still raise.
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                if max(im.size) > MAX_SIDE:  # read from the header: refused before decoding
                    raise DataError(p, f"{what} is {im.size[0]}x{im.size[1]} (WxH), a side above {MAX_SIDE} px",
                                    "resize or tile it")
                # force decoding now: a truncated file fails here, not deep in a worker. Pillow parses a TIFF's
                # header itself; libtiff, which prints, runs only here (decided per file, no extra read)
                with _c_library_messages(im.format == "TIFF") as said:
                    im.load()
                # Phones store the sensor orientation in EXIF; the annotation tools draw on the
                # displayed (rotated) image, so apply it. A no-op (copy) without an orientation tag.
                out = ImageOps.exif_transpose(im)
                out.load()
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # a valid file, only more pixels than Pillow's guard lets through
        raise DataError(p, f"{what} has more pixels than Pillow decodes ({e})".replace(str(p), "the file"),
                        "resize or tile it") from None
    except (OSError, SyntaxError, ValueError) as e:
        # UnidentifiedImageError and "image file is truncated" are OSErrors.
        msg = str(e).replace(str(p), "").strip(" :'") or type(e).__name__
        if said:  # what libtiff printed, on this line rather than as lines of its own
            msg += "; libtiff: " + " ".join(said).replace(str(p), "the file")
        raise DataError(p, f"cannot decode {what} ({type(e).__name__}: {msg})",
                        "re-download or re-encode the file; it is corrupt, truncated or not an image") from None
    return p, out


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16/32-bit grey -> uint8. 16-bit data keep their *fixed* scale (>> 8), so brightness stays
    comparable across images (per-image max scaling would change contrast image by image); 32-bit
    data that fit 16 bits are treated as 16-bit, larger ranges are scaled by the image maximum."""
    a = np.clip(arr.astype(np.int64), 0, None)
    hi = int(a.max()) if a.size else 0
    if hi > 65535:
        return (a * 255 // hi).astype(np.uint8)
    return (a >> 8).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, EXIF orientation applied.

    Accepted storage: RGB, grey (L, 1), grey+alpha (LA), RGBA, palette (P, with or without
    transparency), CMYK/YCbCr JPEGs, 16-bit grey (I;16*: scaled by >> 8), 32-bit int grey (I: >> 8
    when it fits 16 bits, else scaled by the max), float (F: [0, 1] -> x255, else clipped to
    [0, 255]). Alpha is *dropped*, not composited: the stored colour is kept, which is what
    ``PIL.convert('RGB')`` and ``cv2.imread`` do, so pixels match other pipelines.
    Missing, corrupt, truncated or non-image files raise :class:`DataError` naming the file.
    """
    p, im = _open(path, "image")
    mode = im.mode
    if mode == "RGB":
        arr = np.asarray(im)
    elif mode in _WIDE_INT_MODES:
        g = _wide_to_uint8(np.asarray(im))
        arr = np.stack([g, g, g], axis=-1)
    elif mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float64))
        f = f * 255.0 if f.size and f.max() <= 1.0 else f
        g = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        arr = np.stack([g, g, g], axis=-1)
    else:
        try:
            # P -> RGBA first so palette transparency is handled (and no Pillow warning), then drop A.
            src = im.convert("RGBA") if mode in ("P", "PA") else im
            arr = np.asarray(src.convert("RGB"))
        except (ValueError, OSError) as e:
            raise DataError(p, f"unsupported image mode {mode} ({e})", "re-save the image as RGB JPEG/PNG") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(p, f"decoded to {arr.shape} {arr.dtype}, expected (H, W, 3) uint8",
                        "re-save the image as RGB JPEG/PNG")
    return np.ascontiguousarray(arr)


def _check_values(p: Path, mask: np.ndarray, num_classes: int | None) -> None:
    """Values must lie in [0, num_classes) or be 255 (void)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    limit = 255 if num_classes is None else num_classes
    bad = [int(v) for v in present if v >= limit and v != 255]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise DataError(p, f"mask has values {{{shown}}} outside [0, {limit}) and 255 (void)",
                        f"masks hold class indices 0..{limit - 1} and 255; check num_classes or remap the labels")


def read_mask(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a label mask as (H, W) uint8 class indices (255 = void), EXIF orientation applied.

    Modes P and L are read as stored (``np.array(Image.open(p))``: the palette is never applied).
    Mode 1 gives 0/1; 16/32-bit grey is accepted only if every value fits in 0..255. Colour masks
    (RGB, RGBA, ...) raise :class:`DataError`: their indices were lost when they were saved in
    colour (cv2/RGB); decode them explicitly with :func:`rgb_to_index`. With ``num_classes``,
    values outside [0, num_classes) other than 255 raise :class:`DataError` listing them.
    """
    p, im = _open(path, "mask")
    mode = im.mode
    if mode in _COLOUR_MODES:
        raise DataError(p, f"mask is {mode}, not palette indices: a VOC mask saved through cv2/RGB loses its "
                           "class indices", _PALETTE_FIX)
    if mode in _INDEX_MODES:
        arr = np.array(im)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
    elif mode in _WIDE_INT_MODES:
        wide = np.array(im)
        lo, hi = (int(wide.min()), int(wide.max())) if wide.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(p, f"{mode} mask has values in [{lo}, {hi}], which do not fit class indices 0..255",
                            "save masks as 8-bit mode-P or L PNGs")
        arr = wide.astype(np.uint8)
    else:
        raise DataError(p, f"unsupported mask mode {mode}", "save masks as 8-bit mode-P or L PNGs")
    if arr.ndim != 2:
        raise DataError(p, f"mask decoded to shape {arr.shape}, expected (H, W)", _PALETTE_FIX)
    _check_values(p, arr, num_classes)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def rgb_to_index(rgb: np.ndarray, colormap: np.ndarray | None = None, path: str | Path | None = None) -> np.ndarray:
    """Decode an (H, W, 3) uint8 colour rendering into (H, W) uint8 indices through ``colormap``.

    ``colormap`` is (N, 3) uint8, index -> colour, default the 256-entry VOC map (so the void colour
    (224, 224, 192) decodes to 255). A colour not in the map raises :class:`DataError` (naming
    ``path`` when given) with the offending colours: lossy (JPEG) or anti-aliased renderings
    cannot be decoded.
    """
    cmap = voc_colormap(256) if colormap is None else np.asarray(colormap, dtype=np.uint8)
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(path, f"expected an (H, W, 3) colour rendering, got shape {a.shape}",
                        "pass the RGB array, e.g. np.array(Image.open(p).convert('RGB'))")
    if cmap.ndim != 2 or cmap.shape[1] != 3 or len(cmap) > 256:
        raise DataError(path, f"colormap must be (N<=256, 3), got {cmap.shape}", "pass an (N, 3) uint8 colour table")
    key = lambda c: (c[..., 0].astype(np.int32) << 16) | (c[..., 1].astype(np.int32) << 8) | c[..., 2]  # noqa: E731
    ckeys = key(cmap)
    # First index wins if a colour repeats in the map (np.unique returns first occurrences).
    uk, first = np.unique(ckeys, return_index=True)
    px = key(a.astype(np.uint8))
    pos = np.clip(np.searchsorted(uk, px), 0, len(uk) - 1)
    unknown = uk[pos] != px
    if unknown.any():
        cols = np.unique(px[unknown])[:5]
        shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in cols)
        raise DataError(path, f"{int(unknown.sum())} pixels have colours not in the colormap, e.g. {shown}",
                        "decode only lossless renderings (PNG) drawn with the same palette")
    return first[pos].astype(np.uint8)


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(H, W) that :func:`read_image` / :func:`read_mask` would return, from the file header only.

    EXIF orientations 5-8 (90-degree rotations) swap H and W, as decoding does. Missing files and
    unreadable headers raise :class:`DataError`.
    """
    p = _existing(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(p, f"cannot read {what} header ({type(e).__name__})",
                        "re-download or re-encode the file; it is corrupt or not an image") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def check_sizes(image_path: str | Path, mask_path: str | Path, image_hw: tuple[int, int],
                mask_hw: tuple[int, int]) -> None:
    """Raise :class:`DataError` naming both files unless the image and its mask are both H x W."""
    (ih, iw), (mh, mw) = image_hw[:2], mask_hw[:2]
    if (ih, iw) != (mh, mw):
        raise DataError(mask_path, f"mask is {mh}x{mw} (HxW) but its image {image_path} is {ih}x{iw}",
                        "pair each image with its own mask (and never resize masks with interpolation)")


def check_pair(image_path: str | Path, mask_path: str | Path, image: np.ndarray, mask: np.ndarray) -> None:
    """Raise :class:`DataError` naming both files unless image (H, W, 3) and mask (H, W) share H x W."""
    check_sizes(image_path, mask_path, image.shape[:2], mask.shape[:2])


_HEADERS_READ: set[str] = set()  # image files whose header check_image_files has read, in this process


def check_image_files(paths: Iterable[str | Path]) -> None:
    """Read every image's header (:func:`image_size`, no decoding) once per process: a missing, empty
    or non-image file is one :class:`DataError` naming it before a stage's first step, not when a batch
    first draws it (mid-stage, after the run's first checkpoints). A file corrupt past its header is
    still found only when decoded (``hetseg data check`` decodes them all before a run: data/check.py)."""
    for p in paths:
        key = str(p)
        if key not in _HEADERS_READ:
            image_size(p)
            _HEADERS_READ.add(key)


def check_pair_files(image_path: str | Path, mask_path: str | Path) -> None:
    """:func:`check_pair` from the two files' headers only (no decoding)."""
    check_sizes(image_path, mask_path, image_size(image_path), image_size(mask_path, "mask"))
    _HEADERS_READ.add(str(image_path))  # read here: check_image_files need not read it again


def read_pair(root: str | Path, record: Record, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a :class:`~hetseg.data.records.Record` under ``root``: ((H, W, 3) uint8, (H, W) uint8 | None).

    Both paths must stay inside ``root`` (rule: :mod:`hetseg.data.paths`); the mask must have the
    image's size.
    """
    root = Path(root)
    guard = RootGuard(root)
    for rel in (record.image, record.mask):
        bad = None if rel is None else link_problem(guard, rel, f"the dataset root {root}")
        if bad is not None:
            raise DataError(root / rel, *bad)
    ip = root / record.image
    image = read_image(ip)
    if record.mask is None:
        return image, None
    mp = root / record.mask
    mask = read_mask(mp, num_classes)
    check_pair(ip, mp, image, mask)
    return image, mask
