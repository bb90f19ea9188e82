"""COCO files: the instances JSON (validated), segmentation decoding and panoptic PNGs.

COCO stores three segmentation kinds: polygons (a list of flat [x0, y0, x1, y1, ...] parts),
uncompressed RLE (``counts`` a list of run lengths, column-major, ``size`` = [h, w]; used for
crowds) and compressed RLE (``counts`` a string). ``area`` in the JSON is *not* the decoded pixel
count (a real crowd annotation says 890 and decodes to 791 px), so nothing here relies on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from hetseg.data.io import _open
from hetseg.errors import DataError
from hetseg.io_atomic import parse_json

_JSON_FIX = "pass instances_<split>.json with images, annotations and categories"


def decode_segmentation(segm: dict | list, height: int, width: int, source: str | Path | None = None) -> np.ndarray:
    """Rasterise one COCO ``segmentation`` into an (height, width) bool mask.

    Polygons (one or more parts; parts with fewer than 3 points have no area and are skipped),
    uncompressed RLE (list ``counts``, column-major, ``size`` must equal [height, width]) and
    compressed RLE (str/bytes ``counts``). Malformed input raises :class:`DataError` naming
    ``source`` (e.g. "annotations.json ann 42") when given.
    """
    h, w = int(height), int(width)
    try:
        if isinstance(segm, list):
            parts = [list(map(float, p)) for p in segm]
            if any(len(p) % 2 for p in parts):
                raise DataError(source, "polygon with an odd number of coordinates", "write x, y pairs")
            # pycocotools reads a 4-number "polygon" as a bbox: drop degenerate parts (< 3 points).
            parts = [p for p in parts if len(p) >= 6]
            if not parts:
                return np.zeros((h, w), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
        elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
            if [int(x) for x in segm["size"]] != [h, w]:
                raise DataError(source, f"RLE size {list(segm['size'])} differs from the image's [h, w] = [{h}, {w}]",
                                "RLE size is [height, width] of the image it belongs to")
            if isinstance(segm["counts"], list):
                if sum(segm["counts"]) != h * w:
                    raise DataError(source, f"RLE counts sum to {sum(segm['counts'])}, not h*w = {h * w}",
                                    "uncompressed RLE must cover the whole image, column-major")
                rle = mask_utils.frPyObjects(segm, h, w)
            else:
                rle = {"size": [h, w], "counts": segm["counts"]}
        else:
            raise DataError(source, f"unknown segmentation of type {type(segm).__name__}",
                            "use a polygon list or an RLE dict with counts and size")
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips numpy 2's copy-keyword DeprecationWarning; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(rle)
    except DataError:
        raise
    except Exception as e:  # pycocotools raises TypeError/ValueError/IndexError on malformed data
        raise DataError(source, f"cannot decode segmentation ({type(e).__name__}: {e})",
                        "check the annotation's segmentation field") from None
    return np.asarray(m, dtype=bool).reshape(h, w)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_dataset(p: Path, data) -> None:
    """The fields the converter relies on; each problem names the JSON and the image/annotation."""
    if not isinstance(data, dict):
        raise DataError(p, f"not a COCO instances JSON (top level is a {type(data).__name__})", _JSON_FIX)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            what = "has no" if key not in data else f"has a {type(data[key]).__name__} as"
            raise DataError(p, f"not a COCO instances JSON: it {what} '{key}' list",
                            _JSON_FIX + " (image_info_test*.json has no annotations)")
    images: set[int] = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise DataError(p, f"images[{i}] has no integer 'id'", _JSON_FIX)
        iid = img["id"]
        if iid in images:
            raise DataError(p, f"image id {iid} is listed twice in 'images'", "keep one entry per image id")
        images.add(iid)
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise DataError(p, f"image {iid} has no 'file_name' string", _JSON_FIX)
        for k in ("width", "height"):
            if not _is_int(img.get(k)) or img[k] <= 0:
                raise DataError(p, f"image {iid}: '{k}' is {img.get(k)!r}, not a positive integer", _JSON_FIX)
    anns: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise DataError(p, f"annotations[{i}] has no integer 'id'", _JSON_FIX)
        aid = ann["id"]
        if aid in anns:
            raise DataError(p, f"annotation id {aid} is listed twice", "keep one entry per annotation id")
        anns.add(aid)
        if not _is_int(ann.get("category_id")):
            raise DataError(p, f"annotation {aid} has no integer 'category_id'", _JSON_FIX)
        if ann.get("image_id") not in images:
            raise DataError(p, f"annotation {aid} refers to image {ann.get('image_id')!r}, which 'images' does not "
                            "list", "use the images list the annotations were made with")


def load_coco(ann_json: str | Path) -> COCO:
    """Load an instances JSON into pycocotools' COCO (quietly); bad files raise :class:`DataError`.

    Refused: a missing, non-UTF-8 or malformed file; no ``images`` or no ``annotations`` list;
    an image without an integer ``id``, a ``file_name`` string or positive ``width``/``height``;
    repeated image or annotation ids; an annotation without an integer ``category_id`` or whose
    ``image_id`` is not among the images (pycocotools would drop or overwrite them silently).
    """
    p = Path(ann_json)
    try:
        data = parse_json(p.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise DataError(p, "annotation JSON not found", "check the path") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(p, f"not a COCO instances JSON ({type(e).__name__}: {e})", _JSON_FIX) from None
    _check_dataset(p, data)
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco.createIndex()
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(p, f"not a COCO instances JSON ({type(e).__name__}: {e})", _JSON_FIX) from None
    return coco


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """COCO panoptic PNG -> (H, W) int32 segment ids = R + 256 G + 65536 B (0 = void)."""
    p, im = _open(path, "panoptic PNG")
    if im.mode != "RGB":
        raise DataError(p, f"panoptic PNG is mode {im.mode}, expected RGB", "pass the RGB panoptic_<split> PNGs")
    a = np.asarray(im).astype(np.int32)
    return a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]
