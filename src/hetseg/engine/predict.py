"""``hetseg predict``: label maps (palette PNGs of the input's size), figures and class scores.

Never loses data: an output folder that holds (or is) an input is refused, two inputs that would
write one output name (``a.jpg`` and ``a.png``) and an unreadable input are refused before anything
is written, a PNG in the output folder that an earlier ``hetseg predict`` did not write is never
overwritten (its scores.json says which it wrote; predicting more images into a folder adds to that
file), and every file is written atomically. scores.json claims a run's PNGs (``unfinished``) before
the first is written, so a run stopped half-way (a kill, a full disk) can be rerun into its folder.
Memory stays bounded over any number of images (one batch at a time, plus at most
:data:`DECODED_KEPT_BYTES` of inputs decoded by the first check) and for any image size
(docs/GUARANTEES.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hetseg.data.io import read_image
from hetseg.data.records import IMAGE_EXTS
from hetseg.engine.checkpoint import load_model, run_dir
from hetseg.engine.evaluate import check_label_options, check_threshold, label_threshold, predict_images
from hetseg.errors import HetsegError, note, path_problem
from hetseg.io_atomic import parse_json, write_atomic, write_json
from hetseg.palette import save_index_png


# Decoded inputs kept between the check that every input decodes and their prediction (RGB uint8):
# 256 MiB is ~30 twelve-megapixel photos, or ~1,100 VOC-size ones.
DECODED_KEPT_BYTES = 256 * 2**20


def collect_inputs(inputs: Sequence[str], skipped: list[Path] | None = None) -> list[Path]:
    """Files and directories (their image files, sorted) -> image paths, each file once. A folder's other
    entries (another suffix such as .gif, subfolders, dangling links) are appended to ``skipped``."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for q in sorted(p.iterdir()):
                if q.suffix.lower() in IMAGE_EXTS and q.is_file():
                    out.append(q)
                elif skipped is not None:
                    skipped.append(q)
        elif p.is_file():
            out.append(p)
        else:
            what = (path_problem(p, "file or folder of images") if p.exists() or p.is_symlink()
                    else "no such file or directory")
            raise HetsegError(f"{p}: {what}; fix: pass image files or a folder of images")
    if not out:
        raise HetsegError(f"{' '.join(inputs)}: no images found; fix: pass image files or a folder of them "
                          f"({' '.join(IMAGE_EXTS)})")
    # One file named twice (a folder and a file in it, or a path and a link to it) is one input: the
    # name-collision check below refused it with a fix ("rename one") that cannot apply.
    first: dict[Path, Path] = {}
    for p in out:
        first.setdefault(p.resolve(), p)
    return list(first.values())


def previous_predictions(out_dir: Path) -> tuple[list[dict], list[str], str | None]:
    """What earlier ``hetseg predict`` runs into ``out_dir`` wrote, from its scores.json: (the
    per-image records of finished runs, the images of runs stopped before they finished, whose PNGs
    may or may not be there, the run that made them -- its resolved directory, None from a hetseg that
    did not record it); ([], [], None) without a scores.json."""
    path = out_dir / "scores.json"
    if not path.is_file():
        return [], [], None
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
        images, unfinished, source = data["images"], data.get("unfinished", []), data.get("source")
        if not isinstance(images, list) or not isinstance(unfinished, list):
            raise TypeError
        return ([r for r in images if isinstance(r, dict) and isinstance(r.get("image"), str)],
                [i for i in unfinished if isinstance(i, str)], source if isinstance(source, str) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise HetsegError(f"{path}: not a scores.json written by hetseg predict; fix: choose an empty --output "
                          "folder") from None


def check_outputs(paths: Sequence[Path], out_dir: Path, overlay: bool = False,
                  source: str | None = None) -> tuple[list[dict], list[str]]:
    """Refuse an output folder that is a file or holds an input, colliding output names, a
    prediction (or, with ``overlay``, a ``figures/`` figure) that would overwrite a PNG an earlier
    ``hetseg predict`` there did not write (e.g. ``--output`` pointed at a mask folder), and, given the
    predicting run's ``source``, a folder holding another run's predictions (one folder, and one score,
    would mix two models). Returns the records and unfinished images of :func:`previous_predictions`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise HetsegError(f"{out_dir}: --output is a file; fix: give a folder for the predictions")
    blocker = next((a for a in out_dir.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:  # named as itself, not as the scores.json that later failed to be written under it
        raise HetsegError(f"{blocker}: a file where --output {out_dir} needs a folder; fix: give another --output "
                          "or move that file")
    figures = out_dir / "figures"
    if overlay and (figures.exists() or figures.is_symlink()) and not figures.is_dir():
        raise HetsegError(f"{figures}: a file where --overlay writes its figures folder; fix: predict into "
                          "another --output or move that file")
    try:
        out_res = out_dir.resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise HetsegError(f"{out_dir}: --output is a symlink loop; fix: give a folder, or remove the link") from None
    for p in paths:
        if p.resolve().parent in (out_res, out_res / "figures"):
            raise HetsegError(f"{out_dir}: --output holds the input {p}; fix: write predictions to another folder "
                              "(they would overwrite inputs)")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise HetsegError(f"{p}: writes the same {p.stem}.png as {seen[p.stem]}; fix: predict them into "
                              "separate folders or rename one")
        seen[p.stem] = p
    earlier, unfinished, before = previous_predictions(out_dir)
    if source is not None and before not in (None, source) and (earlier or unfinished):
        raise HetsegError(f"{out_dir}: holds predictions of {before}; fix: predict into another --output folder")
    ours = {Path(r["image"]).stem for r in earlier} | {Path(i).stem for i in unfinished}
    for p in paths:
        for target in (out_dir / f"{p.stem}.png", *([figures / f"{p.stem}.png"] if overlay else [])):
            if p.stem not in ours and (target.exists() or target.is_symlink()):
                raise HetsegError(f"{target}: already in --output and not a prediction of hetseg's; fix: predict "
                                  "into an empty folder (it would be overwritten)")
    return earlier, unfinished


def run_predict(checkpoint: str, inputs: Sequence[str], output: str, overlay: bool = False,
                threshold: float | None = None, batch_size: int = 8, predict_kwargs: dict | None = None) -> list[dict]:
    """Predict every input image; write ``OUTPUT/<stem>.png`` (+ ``figures/<stem>.png`` with
    ``overlay``) and ``OUTPUT/scores.json`` (class scores and identified labels per image)."""
    from hetseg.viz import save_prediction_figure

    check_threshold(threshold)
    net, cfg, info = load_model(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    check_label_options(net, cfg.model.name, threshold)
    names = info["class_names"]
    thr = label_threshold(net, info, cfg, threshold)
    out_dir = Path(output)
    skipped: list[Path] = []
    paths = collect_inputs(inputs, skipped)
    # kept: predicting more images into a folder adds to it
    source = str(run_dir(checkpoint).resolve())
    earlier, unfinished = check_outputs(paths, out_dir, overlay, source)
    # A corrupt input is refused before anything is written, so every input is decoded here first. The
    # decoded images are kept up to DECODED_KEPT_BYTES (a few photos: decoded once); beyond that they
    # are decoded again batch by batch below, so memory stays bounded for any number of images.
    kept_images: dict[Path, np.ndarray] = {}
    kept_bytes = 0
    for p in paths:
        img = read_image(p)
        if kept_bytes + img.nbytes <= DECODED_KEPT_BYTES:
            kept_images[p], kept_bytes = img, kept_bytes + img.nbytes
        del img  # the last image not kept must not stay alive through the predictions
    stems = {p.stem for p in paths}
    kept = [r for r in earlier if Path(r["image"]).stem not in stems]
    left = [i for i in unfinished if Path(i).stem not in stems]  # another stopped run's claims stay
    # Claim every PNG before writing the first: a run stopped half-way leaves them listed, so a rerun
    # replaces them instead of refusing them as another program's files.
    write_json(out_dir / "scores.json", {"source": source, "threshold": thr, "images": kept,
                                         "unfinished": left + [str(p) for p in paths]})
    records = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [kept_images.pop(p) if p in kept_images else read_image(p) for p in chunk]
        for p, img, pred in zip(chunk, images, predict_images(net, images, thr, predict_kwargs=predict_kwargs)):
            write_atomic(out_dir / f"{p.stem}.png", lambda tmp, m=pred.label_map: save_index_png(tmp, m))
            if overlay:
                save_prediction_figure(out_dir / "figures" / f"{p.stem}.png", img, pred.label_map, names)
            scores = None if pred.class_scores is None else {
                names[k + 1]: round(float(s), 4) for k, s in enumerate(pred.class_scores)}
            records.append({"image": str(p), "size": [int(img.shape[0]), int(img.shape[1])], "threshold": thr,
                            "identified": [names[c] for c in pred.identified], "class_scores": scores})
    write_json(out_dir / "scores.json", {"source": source, "threshold": thr, "images": kept + records,
                                         **({"unfinished": left} if left else {})})
    if skipped:  # said, not silently dropped; after the work, so a refused command prints only its error line
        many = len(skipped) > 1
        note(f"skipped {len(skipped)} folder entr{'ies' if many else 'y'} that {'are' if many else 'is'} not "
             f"{'/'.join(IMAGE_EXTS)} files, e.g. {skipped[0]}")
    return records
