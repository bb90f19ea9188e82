"""The PASCAL VOC colour map and index-PNG writing (predictions load like ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_colormap(n: int = 256) -> np.ndarray:
    """The devkit's bit-interleaved colour map: (n, 3) uint8, 0=(0,0,0), 1=(128,0,0), 2=(0,128,0) ..."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def save_index_png(path: str | Path, labels: np.ndarray) -> None:
    """Write an (H, W) uint8 label map as a mode-P PNG with the VOC palette."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"label map must be (H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("label values must fit in 0..255")
        arr = arr.astype(np.uint8)
    img = Image.fromarray(arr, mode="P")
    img.putpalette(voc_colormap(256).reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=False)  # explicit: atomic writes pass a temporary name


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 RGB through the VOC colour map."""
    return voc_colormap(256)[np.asarray(labels, dtype=np.uint8)]
