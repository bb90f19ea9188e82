"""Overlays and figure grids. Matplotlib is used through its Agg canvas directly, so importing
this module never changes the process-wide backend (safe on headless machines and in notebooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hetseg.palette import colorize

VOID = 255


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, void: str = "white") -> np.ndarray:
    """Blend VOC colours of ``labels`` (H, W) into ``image`` (H, W, 3) uint8 -> (H, W, 3) uint8.

    Background (0) keeps the image; object classes are blended with weight ``alpha``; void (255)
    is blended in white (``void="white"``) or left as the image (``void="keep"``).
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != lab.shape:
        raise ValueError(f"need image (H, W, 3) and labels (H, W), got {img.shape} and {lab.shape}")
    if void not in ("white", "keep"):
        raise ValueError("void must be 'white' or 'keep'")
    colour = colorize(lab).astype(np.float32)
    colour[lab == VOID] = 255.0
    blend = (1 - alpha) * img.astype(np.float32) + alpha * colour
    paint = lab != 0
    if void == "keep":
        paint &= lab != VOID
    out = img.copy()
    out[paint] = np.clip(np.rint(blend[paint]), 0, 255).astype(np.uint8)
    return out


def save_overlay(path: str | Path, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> None:
    """Write :func:`overlay` as a PNG/JPEG (format from the suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, labels, alpha)).save(path)


def _show(ax, cell: np.ndarray) -> None:
    """RGB (H, W, 3) as is; integer (H, W) as VOC labels; float (H, W) as a heat map (viridis)."""
    a = np.asarray(cell)
    if a.ndim == 3:
        ax.imshow(a)
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        ax.imshow(colorize(a.astype(np.uint8)), interpolation="nearest")
    else:
        ax.imshow(a, cmap="viridis")
    ax.set_axis_off()


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
              cell_inches: float = 1.6, dpi: int = 100) -> None:
    """Save a figure with one panel per array; ``titles`` label the columns (first row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows = len(rows)
    ncols = max((len(r) for r in rows), default=0)
    if nrows == 0 or ncols == 0:
        raise ValueError("save_grid needs at least one panel")
    fig = Figure(figsize=(cell_inches * ncols, cell_inches * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i in range(nrows):
        for j in range(ncols):
            ax = axes[i][j]
            if j < len(rows[i]):
                _show(ax, rows[i][j])
            else:
                ax.set_axis_off()
            if i == 0 and titles is not None and j < len(titles):
                ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
