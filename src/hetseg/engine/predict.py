"""``hetseg predict``: label maps (palette PNGs of the input's size), overlays and class scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hetseg.data.io import read_image
from hetseg.data.records import IMAGE_EXTS
from hetseg.engine.checkpoint import load_model
from hetseg.engine.infer import predict_images
from hetseg.errors import HetsegError
from hetseg.models.scales import get_scale
from hetseg.palette import save_index_png


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files and directories (their image files, sorted) -> image paths."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS)
        elif p.is_file():
            out.append(p)
        else:
            raise HetsegError(f"{p}: no such file or directory; fix: pass image files or a folder of images")
    if not out:
        raise HetsegError(f"no images found in {list(inputs)}; fix: pass .jpg/.png files or a folder of them")
    return out


def run_predict(checkpoint: str, inputs: Sequence[str], output: str, overlay: bool = False,
                threshold: float | None = None, batch_size: int = 8) -> list[dict]:
    """Predict every input image; write ``OUTPUT/<stem>.png`` (+ ``overlays/<stem>.png``) and
    ``OUTPUT/scores.json`` (class scores and identified labels per image)."""
    from hetseg.viz import save_overlay

    net, cfg, info = load_model(checkpoint)
    names = info["class_names"]
    thr = cfg.eval.threshold if threshold is None else threshold
    size = get_scale(cfg.model.scale).input_size
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = collect_inputs(inputs)
    records = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [read_image(p) for p in chunk]
        for p, img, pred in zip(chunk, images, predict_images(net, images, size, thr, batch_size)):
            save_index_png(out_dir / f"{p.stem}.png", pred.label_map)
            if overlay:
                save_overlay(out_dir / "overlays" / f"{p.stem}.png", img, pred.label_map)
            scores = None if pred.class_scores is None else {
                names[k + 1]: round(float(s), 4) for k, s in enumerate(pred.class_scores)}
            records.append({"image": str(p), "size": [int(img.shape[0]), int(img.shape[1])],
                            "identified": [names[c] for c in pred.identified], "class_scores": scores})
    (out_dir / "scores.json").write_text(json.dumps({"threshold": thr, "images": records}, indent=2) + "\n")
    return records
