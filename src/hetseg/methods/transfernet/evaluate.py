"""TransferNet evaluation (docs/REFERENCE.md §3.9): each method's devkit scores through the generic
loop (every model identifies labels with the same embedded classifier and rule), the optional
per-class dense CRF, the classifier's label-identification quality, the attention figure, and
:func:`run_recipe` (train the shared classifier and every method, then evaluate)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hetseg.config import Config
from hetseg.data.io import read_image, read_mask
from hetseg.data.records import Split
from hetseg.data.transforms import prepare, restore
from hetseg.engine.checkpoint import load_model
from hetseg.engine.context import load_config_split
from hetseg.engine.evaluate import evaluate_split, model_device, scored_records
from hetseg.methods.base import get_method
from hetseg.metrics import ConfusionMatrix, Scores
from hetseg.methods.transfernet.data import transfer_classes
from hetseg.models.base import identify_labels
from hetseg.models.transfernet import TransferNet

# "<method>_gt": the same trained network given the ground-truth image labels instead of the shared
# classifier's (what label identification costs each method; TransferNet-GT is the paper's row).
METHODS = ("transfernet", "transfernet_gt", "baselinenet", "baselinenet_gt", "decouplednet_transfer",
           "decouplednet_transfer_gt")


# ------------------------------------------------------------------------------------------ inference


def crf_available() -> bool:
    """Whether the optional ``crf`` extra (pydensecrf) is installed."""
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
def _crf_scores_split(net: nn.Module, split: Split, num_classes: int, threshold: float, gt: bool,
                      batch_size: int = 16) -> Scores:
    """Like evaluate_split, with the per-class binary CRF on the fg maps (decision channels 1..K)."""
    cm = ConfusionMatrix(num_classes)
    recs = scored_records(split)  # the same images as evaluate_split, the same refusal
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        imgs = [read_image(split.path(r.image)) for r in chunk]
        prepped = [prepare(im, net.input_size) for im in imgs]
        x = torch.stack([t for t, _ in prepped]).to(model_device(net))
        labels = [[c - 1 for c in r.labels] for r in chunk] if gt else None
        out = net.predict(x, labels=labels, threshold=threshold)
        for i, (_, geom) in enumerate(prepped):
            s = crf_scores(imgs[i], restore(out.probs[i, 1:].float().cpu(), geom), out.identified[i])
            cm.update(s.argmax(0).to(torch.uint8).numpy(), read_mask(split.path(chunk[i].mask), num_classes))
    return cm.compute()


def evaluate_transfer(nets: dict[str, nn.Module], split: Split, num_classes: int, threshold: float = 0.6,
                      methods: Sequence[str] = METHODS, crf: bool = False) -> dict[str, Scores]:
    """Devkit scores of each method on every record of ``split`` (each needs a mask: ``scored_records``)
    at original resolution.

    ``nets`` maps transfernet / baselinenet / decouplednet_transfer to trained models; every one
    identifies labels with the same shared classifier and rule, so all methods see the same labels;
    ``<method>_gt`` is that method's network with the ground-truth labels. With ``crf`` (and pydensecrf2
    installed) the per-label methods get the original's per-class binary CRF (keys gain ``+crf``).
    """
    use_crf = crf and crf_available()
    out: dict[str, Scores] = {}
    for m in methods:
        base, gt = m.removesuffix("_gt"), m.endswith("_gt")
        net = nets[base]
        if use_crf and base != "decouplednet_transfer":
            out[m + "+crf"] = _crf_scores_split(net, split, num_classes, threshold, gt)
        else:
            out[m] = evaluate_split(net, split, num_classes, threshold, use_gt_labels=gt)
    return out


@torch.no_grad()
def label_identification(cls_run: str | Path, split: Split, cfg: Config, batch_size: int = 32) -> dict:
    """How well the separate classifier's label sets match the ground truth on ``split``:
    fraction of images with the exact set, micro precision / recall of the identified labels."""
    net = load_model(cls_run)[0]
    classifier, size = net.classifier, net.input_size
    allowed = [c - 1 for c in transfer_classes(cfg)[1]]
    exact = tp = n_pred = n_gt = 0
    recs = split.records
    for start in range(0, len(recs), batch_size):
        chunk = recs[start:start + batch_size]
        x = torch.stack([prepare(read_image(split.path(r.image)), size)[0] for r in chunk])
        active = identify_labels(torch.sigmoid(classifier(x).logits_avg.float()), cfg.transfer.threshold, allowed, True)
        for r, row in zip(chunk, active):
            pred, gt = {int(k) + 1 for k in torch.nonzero(row).flatten()}, set(r.labels)
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


def train_classifier(cfg: Config, run_dir: str | Path, progress: bool = False) -> dict:
    """The shared separate classifier: DecoupledNet stage ``cls`` on both domains' image labels."""
    run = Path(run_dir)
    ccfg = dataclasses.replace(cfg, run_dir=str(run), model=dataclasses.replace(cfg.model, name="decouplednet"))
    ccfg = get_method("transfernet").both_domains(ccfg)
    return get_method("decouplednet").train(ccfg, ("cls",), progress=progress)


def run_recipe(cfg: Config, run_root: str | Path, progress: bool = False, methods: Sequence[str] = METHODS,
               figure: str | Path | None = None, log: Callable[[str], object] = print, evaluate: bool = True) -> dict:
    """Train the classifier and every method's decoder into ``run_root``/*, evaluate on
    ``cfg.transfer.val_split``; returns {"scores": {method: Scores}, "train": ..., "wall_s": ...}
    (``evaluate=False``: training only, {"train", "wall_s"}, plain dicts a worker can send back)."""
    root = Path(run_root)
    walls: dict = {}
    summaries: dict = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        summaries[name] = fn()
        walls[name] = round(time.perf_counter() - t0, 1)
        log(f"[transfer] {name}: {walls[name]} s")

    cls_run = root / "classifier"
    timed("classifier", lambda: train_classifier(cfg, cls_run, progress))
    need = {m.removesuffix("_gt") for m in methods}
    nets: dict = {}
    for m in [m for m in ("transfernet", "baselinenet", "decouplednet_transfer") if m in need]:
        mcfg = dataclasses.replace(cfg, run_dir=str(root / m), model=dataclasses.replace(cfg.model, name=m),
                                   transfer=dataclasses.replace(cfg.transfer, classifier_run=str(cls_run)))
        timed(m, lambda mcfg=mcfg: get_method(mcfg.model.name).train(mcfg, progress=progress))
        if evaluate:
            nets[m] = load_model(root / m)[0]
    if not evaluate:
        return {"train": summaries, "wall_s": walls}
    val = load_config_split(cfg, "transfer.val_split")
    t0 = time.perf_counter()
    scores = evaluate_transfer(nets, val, cfg.data.num_classes, cfg.transfer.threshold, methods, cfg.transfer.crf)
    walls["evaluation"] = round(time.perf_counter() - t0, 1)
    if figure is not None and "transfernet" in nets:
        attention_figure(nets["transfernet"], val, figure, nets["transfernet"].input_size, bg_scale=cfg.transfer.bg_scale)
    return {"scores": scores, "train": summaries, "wall_s": walls, "val": val}
