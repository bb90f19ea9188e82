"""Rendering one fashion-scenes image (docs/DECISIONS.md, "fashion-scenes"): background clutter, items, mask, void band.

Pure functions of a ``numpy.random.Generator`` and the item pixels, so a scene's bytes depend only
on the per-scene seed, never on which worker process drew it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MASK_THRESHOLD = 10  # upscaled item intensity (0..255) above which a pixel is object; Fashion-MNIST
# backgrounds are exactly 0, and 10 keeps the item's faint outer ramp (bicubic upsampling) out.
ITEM_COUNT_P = (0.55, 0.33, 0.12)  # P(1, 2, 3 items): with 10 uniform classes E[#classes] ≈ 1.50 (VOC ≈ 1.5)
ITEM_SIDE = (0.35, 0.75)  # item side as a fraction of the canvas side
MIN_VISIBLE = 0.40  # an item must keep this fraction of its mask pixels after occlusion
MAX_LAYOUT_TRIES = 100  # then the last item is dropped (rare; counted in meta.json)
VOID = 255


@dataclass
class Scene:
    """One rendered scene: ``image`` (S, S, 3) uint8 RGB, ``mask`` (S, S) uint8 in {0..10, 255}."""

    image: np.ndarray
    mask: np.ndarray
    classes: list[int]  # mask index of each placed item, in paste order (bottom first)
    slots: list[int]  # which candidate items were used (indices into the scene's candidates)
    dropped: int  # items dropped because no layout kept every item >= MIN_VISIBLE visible


def random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) float colours in [0, 1]: uniform hue, saturation 0.2..1, value 0.55..1.

    Items and background clutter draw from this same distribution, so colour says nothing about
    figure vs ground, nor about the class.
    """
    h = rng.random(n) * 6.0
    s = rng.uniform(0.2, 1.0, n)
    v = rng.uniform(0.55, 1.0, n)
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(n)]


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float stripe/checker texture between two random colours."""
    c = random_colours(rng, 2) * rng.uniform(0.15, 1.0, (2, 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 12.0)
    wave = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * (2 * np.pi / period))
    if rng.random() < 0.3:  # checkerboard: product of two orthogonal waves
        wave = wave * np.sin((-xx * np.sin(ang) + yy * np.cos(ang)) * (2 * np.pi / period))
    t = (wave > 0).astype(np.float32)[..., None]
    return c[0] * t + c[1] * (1 - t)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 clutter in [0, 1].

    A two-octave colour-noise field plus 6–16 opaque shapes (ellipses, boxes, polygons, thick lines,
    striped patches). Shape colours come from :func:`random_colours` scaled by a random intensity
    (0.1–1), which covers the range of tinted item pixels (tint × item intensity).
    """
    field = np.zeros((size, size, 3), np.float32)
    for cells, amp in ((int(rng.integers(2, 5)), 0.65), (int(rng.integers(6, 13)), 0.35)):
        cols = random_colours(rng, cells * cells) * rng.uniform(0.1, 1.0, (cells * cells, 1))
        small = Image.fromarray((cols.reshape(cells, cells, 3) * 255).astype(np.uint8))
        field += amp * np.asarray(small.resize((size, size), Image.BICUBIC), np.float32) / 255
    img = Image.fromarray((np.clip(field, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 17))):
        kind = rng.integers(0, 5)
        col = tuple(int(v) for v in (random_colours(rng, 1)[0] * rng.uniform(0.1, 1.0) * 255))
        w, h = (rng.uniform(0.06, 0.6, 2) * size).astype(int) + 2
        x0, y0 = int(rng.integers(-w // 2, size)), int(rng.integers(-h // 2, size))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
        elif kind == 2:
            pts = rng.integers(0, size, (int(rng.integers(3, 7)), 2))
            draw.polygon([tuple(int(v) for v in p) for p in pts], fill=col)
        elif kind == 3:
            pts = rng.integers(0, size, (2, 2))
            draw.line([tuple(int(v) for v in p) for p in pts], fill=col, width=int(rng.integers(1, 7)))
        else:  # striped patch: high-frequency texture like the items' folds and prints
            x0, y0 = max(x0, 0), max(y0, 0)
            ph, pw = min(h, size - y0), min(w, size - x0)
            if ph > 0 and pw > 0:
                patch = (_stripes(rng, ph, pw) * 255).astype(np.uint8)
                img.paste(Image.fromarray(patch), (x0, y0))
    if rng.random() < 0.5:  # items are upsampled (soft); soften some backgrounds the same way
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return np.asarray(img, np.float32) / 255


def _layout(rng: np.random.Generator, items: list[np.ndarray], size: int):
    """Sample sizes, flips and positions until every item keeps >= MIN_VISIBLE of its pixels.

    Returns (intensity crops, boxes (y, x, side), instance map (size, size) uint8 with 1..n in paste
    order, 0 = background) or None when MAX_LAYOUT_TRIES layouts all failed.
    """
    n = len(items)
    for _ in range(MAX_LAYOUT_TRIES):
        sides = np.rint(rng.uniform(*ITEM_SIDE, n) * size).astype(int)
        flips = rng.random(n) < 0.5
        crops, boxes = [], []
        inst = np.zeros((size, size), np.uint8)
        for j in range(n):
            s = int(sides[j])
            g = Image.fromarray(items[j]).resize((s, s), Image.BICUBIC)
            g = np.asarray(g)[:, ::-1] if flips[j] else np.asarray(g)
            y, x = (int(v) for v in rng.integers(0, size - s + 1, 2))
            inst[y:y + s, x:x + s][g > MASK_THRESHOLD] = j + 1  # later items on top
            crops.append(g)
            boxes.append((y, x, s))
        own = np.array([(c > MASK_THRESHOLD).sum() for c in crops])
        visible = np.bincount(inst.ravel(), minlength=n + 1)[1:]
        if np.all(visible >= MIN_VISIBLE * np.maximum(own, 1)):
            return crops, boxes, inst
    return None


def void_band(inst: np.ndarray) -> np.ndarray:
    """(H, W) bool: object pixels 4-adjacent to a pixel of a *lower* instance (background = 0).

    Exactly one side of every boundary is voided (the occluder's, or the object's against the
    background), so the band is 1 px wide along object/background and object/object boundaries,
    as in VOC, and no two non-void 4-neighbours carry different instances.
    """
    band = np.zeros(inst.shape, bool)
    a = inst.astype(np.int16)
    band[1:, :] |= a[1:, :] > a[:-1, :]
    band[:-1, :] |= a[:-1, :] > a[1:, :]
    band[:, 1:] |= a[:, 1:] > a[:, :-1]
    band[:, :-1] |= a[:, :-1] > a[:, 1:]
    return band


def render_scene(rng: np.random.Generator, cand_items: np.ndarray, cand_labels: np.ndarray, size: int,
                 count: int | None = None) -> Scene:
    """Render one scene from up to 3 candidate items ((3, 28, 28) uint8, labels (3,) in 0..9).

    ``count`` fixes the number of items (the single-item pretraining images, hetseg.data.items);
    by default it is drawn from ITEM_COUNT_P.
    """
    n = int(rng.choice(3, p=ITEM_COUNT_P)) + 1 if count is None else int(count)
    bg = background(rng, size)
    dropped = 0
    while True:
        laid = _layout(rng, [cand_items[j] for j in range(n)], size)
        if laid is not None:
            break
        n, dropped = n - 1, dropped + 1  # n == 1 always succeeds: a lone item is fully visible
    crops, boxes, inst = laid
    tints = random_colours(rng, n) * rng.uniform(0.8, 1.2, (n, 1))  # independent of the class
    img = bg
    for j, (g, (y, x, s)) in enumerate(zip(crops, boxes)):
        region = inst[y:y + s, x:x + s] == j + 1  # only the pixels this item still owns
        colour = (g.astype(np.float32)[..., None] / 255) * tints[j]
        img[y:y + s, x:x + s][region] = colour[region]
    # Sensor noise over the whole composite, so grain is no figure/ground cue.
    img = img * 255 + rng.normal(0.0, rng.uniform(2.0, 8.0), img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    classes = [int(cand_labels[j]) + 1 for j in range(n)]
    lut = np.array([0] + classes, np.uint8)
    mask = lut[inst]
    mask[void_band(inst)] = VOID
    return Scene(image, mask, classes, list(range(n)), dropped)
