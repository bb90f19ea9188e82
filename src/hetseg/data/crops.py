"""Combinatorial cropping (DecoupledNet Sec. 5; docs/REFERENCE.md §1.9, §7.4).

For every strong image and every non-empty subset P of its labels, the binary target marks the
pixels of P as foreground and everything else (other classes too) as background; void stays 255.
N_p boxes per (image, P) *enclose* P's foreground.

Decisions where the paper and code are silent (docs/REFERENCE.md §7.4), documented here and in docs/:
- "enclosing" = the box fully contains the bounding box of P's foreground pixels;
- box sides are drawn uniformly between the foreground box side and ``max_scale`` x the image
  side, independently for width and height (aspect jitter), position uniform among enclosing
  placements; boxes may leave the image: the image is padded with 0 (black) and the mask with 255,
  as the original data layer does;
- with probability ``full_image_prob`` the uncropped image is used instead (the N_s term);
- region proposals (selective search from opencv-contrib, if installed) replace half of the random
  boxes when they enclose P's foreground; EdgeBox is not available in a maintained Python package;
- a crop is warped (not aspect-preserving) straight to the network input size and flipped with
  probability 0.5; the box sampling already supplies the translation/scale jitter the original got
  from its 350 -> 320 random crop.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np
from PIL import Image


def label_subsets(labels: tuple[int, ...]) -> list[tuple[int, ...]]:
    """All non-empty subsets of an image's label set, smallest first."""
    return [c for r in range(1, len(labels) + 1) for c in combinations(labels, r)]


def binary_target(mask: np.ndarray, subset: tuple[int, ...]) -> np.ndarray:
    """(H, W) class mask -> (H, W) uint8: 1 for classes in ``subset``, 255 void, else 0."""
    out = np.isin(mask, subset).astype(np.uint8)
    out[mask == 255] = 255
    return out


def foreground_box(mask: np.ndarray, subset: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Inclusive-exclusive (x0, y0, x1, y1) box around the pixels of ``subset``; full image if none."""
    ys, xs = np.nonzero(np.isin(mask, subset))
    if len(xs) == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def enclosing_box(fg: tuple[int, int, int, int], width: int, height: int, rng: np.random.Generator,
                  max_scale: float = 1.6) -> tuple[int, int, int, int]:
    """A random integer box (x0, y0, x1, y1) that contains ``fg``; it may extend past the image."""
    x0, y0, x1, y1 = fg
    bw, bh = x1 - x0, y1 - y0
    w = int(rng.integers(bw, max(bw, int(max_scale * width)) + 1))
    h = int(rng.integers(bh, max(bh, int(max_scale * height)) + 1))
    bx = int(rng.integers(x1 - w, x0 + 1))
    by = int(rng.integers(y1 - h, y0 + 1))
    return bx, by, bx + w, by + h


def crop_pad(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``box`` out of image (H, W, 3) and mask (H, W), padding outside pixels with 0 and 255."""
    bx0, by0, bx1, by1 = box
    h, w = mask.shape
    out_img = np.zeros((by1 - by0, bx1 - bx0, 3), dtype=np.uint8)
    out_mask = np.full((by1 - by0, bx1 - bx0), 255, dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(bx0, 0), max(by0, 0), min(bx1, w), min(by1, h)
    if sx1 > sx0 and sy1 > sy0:
        out_img[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0] = image[sy0:sy1, sx0:sx1]
        out_mask[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0] = mask[sy0:sy1, sx0:sx1]
    return out_img, out_mask


def warp(image: np.ndarray, mask: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resize to size×size (bilinear image, nearest mask) and optionally mirror."""
    im = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    mk = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    if flip:
        im, mk = im[:, ::-1], mk[:, ::-1]
    return np.ascontiguousarray(im), np.ascontiguousarray(mk)


def augment(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, scale: float = 330 / 320
            ) -> tuple[np.ndarray, np.ndarray]:
    """Warp to round(size * 330/320), random size crop, flip: the original TransferNet loader
    (docs/REFERENCE.md §3.8), also DIS's (docs/DIS.md). (H, W, 3) + (H, W) -> (size, size, 3) + (size, size)."""
    big = max(size, int(round(size * scale)))
    im, mk = warp(image, mask, big, flip=False)
    y, x = rng.integers(0, big - size + 1, size=2)
    im, mk = im[y:y + size, x:x + size], mk[y:y + size, x:x + size]
    if rng.random() < 0.5:
        im, mk = im[:, ::-1], mk[:, ::-1]
    return np.ascontiguousarray(im), np.ascontiguousarray(mk)


@lru_cache(maxsize=1)
def _selective_search():
    """opencv-contrib's selective search, or None when the optional extra is not installed."""
    try:
        import cv2  # noqa: PLC0415

        return cv2.ximgproc.segmentation.createSelectiveSearchSegmentation
    except (ImportError, AttributeError):
        return None


def proposals(image: np.ndarray, max_boxes: int = 300) -> np.ndarray:
    """Selective-search boxes (x0, y0, x1, y1) as an (n, 4) int array; empty without opencv-contrib."""
    make = _selective_search()
    if make is None:
        return np.zeros((0, 4), dtype=np.int64)
    ss = make()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    ss.switchToSelectiveSearchFast()
    rects = ss.process()[:max_boxes]
    if len(rects) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    xywh = np.asarray(rects, dtype=np.int64)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def proposals_available() -> bool:
    """Whether selective-search proposals can be computed here (the optional OpenCV contrib extra)."""
    return _selective_search() is not None
