"""TransferNet inference and evaluation (reference §3.9): label identification by the separate
classifier, the per-class dense CRF, each method's scores, the devkit evaluation, the attention
figure, and :func:`run_recipe` (train everything with :mod:`hetseg.engine.transfer`, then evaluate)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hetseg.config import Config
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.transforms import prepare, restore
from hetseg.engine.checkpoint import load_model
from hetseg.engine.pipeline import load_split
from hetseg.engine.transfer import (load_transfer_run, train_baselinenet, train_classifier,
                                    train_decouplednet_transfer, train_transfernet)
from hetseg.engine.transfer_data import _input_size
from hetseg.metrics import ConfusionMatrix, Scores
from hetseg.models.classifier import Classifier
from hetseg.models.transfernet import TransferNet, decision_scores
from hetseg.palette import save_index_png

METHODS = ("transfernet", "transfernet_gt", "baselinenet", "decouplednet_transfer")


# ------------------------------------------------------------------------------------------ inference


@torch.no_grad()
def identify_labels(classifier: Classifier, x: torch.Tensor, classes: Sequence[int], threshold: float
                    ) -> tuple[list[list[int]], torch.Tensor]:
    """Object indices per image: {k in classes : sigmoid(avg score_k) >= threshold}, else the argmax
    among ``classes`` (§3.9 step 2). ``classes`` are mask indices. Returns (labels, scores (N, K))."""
    scores = torch.sigmoid(classifier(x).logits_avg.float())
    allowed = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    allowed[[c - 1 for c in classes]] = True
    s = scores.masked_fill(~allowed, -1.0)
    out = []
    for row in s:
        ks = torch.nonzero(row >= threshold).flatten().tolist()
        out.append(ks or [int(row.argmax())])
    return out, scores


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def crf_scores(image: np.ndarray, fg: torch.Tensor, active: Sequence[int], iterations: int = 10) -> torch.Tensor:
    """Per-class binary dense CRF (§3.9 step 6-8): image (H, W, 3) uint8, fg (K, H, W) at the image's
    size -> (K+1, H, W) scores fg_k * [CRF says fg], channel 0 = 0 (background where all are 0).
    Gaussian sxy 3, weight 3; bilateral sxy 20, srgb 3, weight 5; 10 mean-field iterations."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = fg.shape
    out = torch.zeros(k + 1, h, w)
    img = np.array(image[..., :3], dtype=np.uint8, order="C", copy=True)  # pydensecrf needs a writable buffer
    for c in active:
        p = fg[c].clamp(1e-6, 1 - 1e-6).numpy().astype(np.float32, copy=True)
        d = dcrf.DenseCRF2D(w, h, 2)
        d.setUnaryEnergy(unary_from_softmax(np.stack([1 - p, p])))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=20, srgb=3, rgbim=img, compat=5)
        q = np.array(d.inference(iterations)).reshape(2, h, w)
        out[c + 1] = torch.from_numpy(p * (q[1] > q[0]))
    return out


@torch.no_grad()
def method_scores(method: str, nets: dict, x: torch.Tensor, labels: list[list[int]], bg_scale: float,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, K+1, S, S) per-pixel scores whose argmax is the label map, and the fg maps (N, K, S, S)
    of the per-label methods (for the CRF), for object-index labels per image."""
    if method in ("transfernet", "transfernet_gt", "baselinenet"):
        net = nets["baselinenet" if method == "baselinenet" else "transfernet"]
        fo = net.foreground(x, labels, bg_scale)
        return decision_scores(fo.fg, fo.active), fo.fg * fo.active[:, :, None, None]
    if method == "decouplednet_transfer":
        return nets["decouplednet_transfer"].predict(x, labels=labels).probs, None
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


@torch.no_grad()
def evaluate_transfer(nets: dict, classifier: Classifier, split: Split, num_classes: int, size: int,
                      target_classes: Sequence[int], threshold: float = 0.6, bg_scale: float = 0.5,
                      methods: Sequence[str] = METHODS, crf: bool = False, batch_size: int = 16,
                      pred_root: str | Path | None = None) -> dict[str, Scores]:
    """Devkit scores of each method on the masked records of ``split`` at original resolution.

    All methods share one label identification per image (the classifier restricted to
    ``target_classes``); ``transfernet_gt`` uses the ground-truth labels. With ``crf`` (and
    pydensecrf2 installed) the per-label methods get the original's per-class binary CRF; the
    result keys gain a ``+crf`` suffix.
    """
    for n in [*nets.values(), classifier]:
        n.eval()
    use_crf = crf and crf_available()
    keys = [m + ("+crf" if use_crf and m != "decouplednet_transfer" else "") for m in methods]
    cms = {k: ConfusionMatrix(num_classes) for k in keys}
    recs = [r for r in split.records if r.mask is not None]
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs = [read_image(split.path(r.image)) for r in chunk]
        prepped = [prepare(im, size) for im in imgs]
        x = torch.stack([t for t, _ in prepped])
        ident, _ = identify_labels(classifier, x, target_classes, threshold)
        gt_labels = [[c - 1 for c in r.labels] for r in chunk]
        gts = [read_mask(split.path(r.mask), num_classes) for r in chunk]
        for method, key in zip(methods, keys):
            labels = gt_labels if method == "transfernet_gt" else ident
            scores, fg = method_scores(method, nets, x, labels, bg_scale)
            for i, (_, geom) in enumerate(prepped):
                if key.endswith("+crf"):
                    s = crf_scores(imgs[i], restore(fg[i], geom), labels[i])
                else:
                    s = restore(scores[i].float(), geom)
                pred = s.argmax(0).to(torch.uint8).numpy()
                cms[key].update(pred, gts[i])
                if pred_root is not None:
                    save_index_png(Path(pred_root) / key / f"{chunk[i].id}.png", pred)
    return {k: cm.compute() for k, cm in cms.items()}


@torch.no_grad()
def label_identification(cls_run: str | Path, split: Split, cfg: Config, batch_size: int = 32) -> dict:
    """How well the separate classifier's label sets match the ground truth on ``split``:
    fraction of images with the exact set, micro precision / recall of the identified labels."""
    classifier = load_model(cls_run)[0].classifier.eval()
    size = _input_size(cfg)
    exact = tp = n_pred = n_gt = 0
    recs = split.records
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        x = torch.stack([prepare(read_image(split.path(r.image)), size)[0] for r in chunk])
        ident, _ = identify_labels(classifier, x, cfg.transfer.target_classes, cfg.transfer.threshold)
        for r, ks in zip(chunk, ident):
            pred, gt = {k + 1 for k in ks}, set(r.labels)
            exact += pred == gt
            tp, n_pred, n_gt = tp + len(pred & gt), n_pred + len(pred), n_gt + len(gt)
    return {"images": len(recs), "exact": exact / max(1, len(recs)), "precision": tp / max(1, n_pred),
            "recall": tp / max(1, n_gt), "labels_per_image": n_pred / max(1, len(recs)),
            "threshold": cfg.transfer.threshold}


# ------------------------------------------------------------------------------------------ figure


@torch.no_grad()
def attention_figure(tn: TransferNet, split: Split, path: str | Path, size: int, num_images: int = 4,
                     bg_scale: float = 0.5) -> list[str]:
    """Fig. 2/3 of the paper: per val image and ground-truth label, the input, the attention alpha,
    the densified attention d and the decoder's foreground probability. Returns the row captions."""
    from hetseg.viz import save_grid

    tn.eval()
    rows, captions = [], []
    for rec in [r for r in split.records if r.labels][:num_images]:
        img = read_image(split.path(rec.image))
        x, geom = prepare(img, size)
        labels = [c - 1 for c in rec.labels]
        fo = tn.foreground(x[None], [labels], bg_scale, return_maps=True)
        alpha, dense = fo.maps
        for k in labels:
            up = lambda m: F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0]  # noqa: E731
            rows.append([img, restore(up(alpha[0, k]), geom)[0].numpy(),
                         restore(up(dense[0, k, 0]), geom)[0].numpy(), restore(fo.fg[0, k:k + 1], geom)[0].numpy()])
            captions.append(f"{rec.id} class {k + 1}")
    save_grid(path, rows, ["image", "attention α", "densified attention d", "P(fg)"])
    return captions


# ------------------------------------------------------------------------------------------ all


def run_recipe(cfg: Config, run_root: str | Path, progress: bool = False, methods: Sequence[str] = METHODS,
               figure: str | Path | None = None, log=print) -> dict:
    """Train the classifier and every method's decoder into ``run_root``/*, evaluate on
    ``cfg.transfer.val_split``; returns {"scores": {method: Scores}, "train": ..., "wall_s": ...}."""
    root = Path(run_root)
    walls: dict = {}
    summaries: dict = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        summaries[name] = fn(*a, progress=progress)
        walls[name] = round(time.perf_counter() - t0, 1)
        log(f"[transfer] {name}: {walls[name]} s")

    cls_run = root / "classifier"
    timed("classifier", train_classifier, cfg, cls_run)
    need = set(methods)
    if need & {"transfernet", "transfernet_gt"}:
        timed("transfernet", train_transfernet, cfg, cls_run, root / "transfernet")
    if "baselinenet" in need:
        timed("baselinenet", train_baselinenet, cfg, cls_run, root / "baselinenet")
    if "decouplednet_transfer" in need:
        timed("decouplednet_transfer", train_decouplednet_transfer, cfg, cls_run, root / "decouplednet_transfer")

    nets: dict = {}
    if need & {"transfernet", "transfernet_gt"}:
        nets["transfernet"] = load_transfer_run(root / "transfernet")[0]
    if "baselinenet" in need:
        nets["baselinenet"] = load_transfer_run(root / "baselinenet")[0]
    if "decouplednet_transfer" in need:
        nets["decouplednet_transfer"] = load_model(root / "decouplednet_transfer")[0]
    classifier = load_model(cls_run)[0].classifier
    val = load_split(cfg, cfg.transfer.val_split)
    size = _input_size(cfg)
    t0 = time.perf_counter()
    scores = evaluate_transfer(nets, classifier, val, cfg.data.num_classes, size, cfg.transfer.target_classes,
                               cfg.transfer.threshold, cfg.transfer.bg_scale, methods, cfg.transfer.crf)
    walls["evaluation"] = round(time.perf_counter() - t0, 1)
    if figure is not None and "transfernet" in nets:
        attention_figure(nets["transfernet"], val, figure, size, bg_scale=cfg.transfer.bg_scale)
    return {"scores": scores, "train": summaries, "wall_s": walls, "val": val}

