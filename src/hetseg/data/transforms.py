"""Pixel transforms shared by training, evaluation and prediction.

Normalisation is torchvision's (RGB in [0, 1], ImageNet mean/std), so a torchvision-format VGG-16
state dict imports without a preprocessing change. The original Caffe models used BGR 0-255 minus
the mean (docs/REFERENCE.md §1.2); that only matters for Caffe weights, which we do not load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
LARGE_SIDE = 2048  # above this, test-time resizing works in uint8 (bounded memory, docs/GUARANTEES.md)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, normalised."""
    t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)
    return (t - MEAN) / STD


@dataclass(frozen=True)
class Geometry:
    """How an input of (height, width) was padded to a square ``side`` and resized to ``size``."""

    height: int
    width: int
    side: int
    size: int


def prepare(image: np.ndarray, size: int) -> tuple[torch.Tensor, Geometry]:
    """Test-time input (docs/REFERENCE.md §1.2): zero-pad bottom/right to a square, resize to size×size
    (above :data:`LARGE_SIDE`, the image is resized first and the small result padded: the same up to
    rounding, without the full-size square).

    Padding happens before normalisation, i.e. the pad is black, as in the original. Resizing uses
    bilinear with antialiasing (MATLAB imresize antialiases when shrinking). Returns (3, size, size).
    """
    h, w = image.shape[:2]
    side = max(h, w)
    if side > LARGE_SIDE:
        # Huge photos: resize the image itself in uint8 (Pillow) and pad the small result, never holding a
        # float copy (12 bytes a pixel) nor a side x side canvas (a 60000 x 1 strip of 257 bytes asked for
        # 10 GiB); the result differs from the float path by rounding and by under one output pixel at the
        # image's edge.
        from PIL import Image

        sw, sh = max(1, round(w * size / side)), max(1, round(h * size / side))
        small = np.zeros((size, size, 3), dtype=np.uint8)
        small[:sh, :sw] = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
            (sw, sh), Image.BILINEAR, reducing_gap=None))
        t = torch.from_numpy(small).permute(2, 0, 1).float().div_(255.0)
        return (t - MEAN) / STD, Geometry(h, w, side, size)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[:h, :w] = image
    t = torch.from_numpy(canvas).permute(2, 0, 1).float().div_(255.0)
    if side != size:
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=side > size)[0]
    return (t - MEAN) / STD, Geometry(h, w, side, size)


def restore(maps: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """(C, size, size) per-pixel maps -> (C, H, W) at the original resolution.

    Resized to the padded square and cropped (docs/REFERENCE.md §1.10 step 8). We resize probabilities
    bilinearly; the original's bicubic can overshoot [0, 1], bilinear cannot.
    """
    if geom.side != geom.size:
        maps = F.interpolate(maps[None], size=(geom.side, geom.side), mode="bilinear", align_corners=False)[0]
    return maps[:, : geom.height, : geom.width]


def _source_index(n_out: int, n_in: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=False) source indices and weights of ``n_out`` output pixels, as
    ``F.interpolate`` computes them: src = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    return i0, (i0 + 1).clamp_max(n_in - 1), src - i0


def restore_argmax(maps: torch.Tensor, geom: Geometry, band: int = 256) -> np.ndarray:
    """(C, size, size) per-pixel scores -> (H, W) uint8 argmax at the original resolution.

    The same bilinear resize as :func:`restore` followed by the argmax, but computed ``band``
    output rows at a time and never for the padding, so memory is O(C * size * W + band * C * W)
    instead of O(C * side^2): a 12000 x 12000 photo needs a few hundred MB, not 6 GB
    (docs/GUARANTEES.md). Ties aside, the label map equals ``restore(maps).argmax(0)``.
    """
    h, w = geom.height, geom.width
    if geom.side == geom.size:
        return maps[:, :h, :w].argmax(0).to(torch.uint8).cpu().numpy()
    n = geom.size
    x0, x1, lx = _source_index(geom.side, n, maps.device)
    x0, x1, lx = x0[:w], x1[:w], lx[:w]
    cols = maps[:, :, x0] * (1 - lx) + maps[:, :, x1] * lx  # (C, size, W): resized along x only
    y0, y1, ly = _source_index(geom.side, n, maps.device)
    out = np.empty((h, w), dtype=np.uint8)
    for top in range(0, h, band):
        sl = slice(top, min(h, top + band))
        a, b, t = y0[sl], y1[sl], ly[sl][None, :, None]
        rows = cols[:, a] * (1 - t) + cols[:, b] * t  # (C, band, W)
        out[sl] = rows.argmax(0).to(torch.uint8).cpu().numpy()
    return out


def random_crop_flip(image: np.ndarray, size: int, rng: np.random.Generator, scale: float = 350 / 320
                     ) -> np.ndarray:
    """Classifier augmentation (docs/REFERENCE.md §1.2): warp to ``scale * size``, random size crop, flip.

    (H, W, 3) uint8 -> (size, size, 3) uint8.
    """
    from PIL import Image

    big = max(size, int(round(size * scale)))
    im = np.asarray(Image.fromarray(image).resize((big, big), Image.BILINEAR))
    y, x = rng.integers(0, big - size + 1, size=2)
    out = im[y:y + size, x:x + size]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
