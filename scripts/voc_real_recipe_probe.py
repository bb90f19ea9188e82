"""The probe that fixed the real-photo bench's decoder recipe (bench/voc_real.py, RECIPE comment).

Training images only: the bench's strong_10 images are shuffled (``random.Random(0)``) and divided
by image into 3/4 for training and 1/4 held out; the evaluation images are never read. One decoder
(DecoupledNet's bridge + binary decoder from the bench's weak-set classifier, or the masks-only
neck + decoder on the fixed ImageNet encoder) trains on the training images' crops, batch 8, Adam
with lr x0.1 after 70 % of the steps; every 100 steps it prints the mean training loss and the
held-out mIoU with the held-out images' true labels (images padded square and resized, as at
prediction). Needs a finished bench run for its splits and classifier:

    python scripts/voc_real_recipe_probe.py --runs runs/voc_real --method decouplednet \
        --decoder-stride 4 --lr 0.01 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from hetseg.config import Config
from hetseg.data.datasets import CropDataset
from hetseg.data.records import Split, read_split
from hetseg.data.transforms import prepare
from hetseg.methods import get_method


def held_out_miou(net: torch.nn.Module, root: Path, records: list, size: int) -> float:
    """Mean IoU over the classes present, at each image's original size, with its true labels."""
    inter, union = np.zeros(21), np.zeros(21)
    net.eval()
    with torch.no_grad():
        for r in records:
            mask = np.asarray(Image.open(root / r.mask))
            x, _ = prepare(np.asarray(Image.open(root / r.image).convert("RGB")), size)
            pred = net.predict(x[None], labels=[[c - 1 for c in r.labels]]).probs[0].argmax(0).numpy()
            side = max(mask.shape)
            pred = np.asarray(Image.fromarray(pred.astype(np.uint8)).resize((side, side), Image.NEAREST))
            pred, valid = pred[: mask.shape[0], : mask.shape[1]], mask != 255
            for c in range(21):
                a, b = (pred == c) & valid, (mask == c) & valid
                inter[c] += (a & b).sum()
                union[c] += (a | b).sum()
    seen = union > 0
    return float((inter[seen] / union[seen]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/voc_real")
    ap.add_argument("--method", choices=("decouplednet", "maskonly"), default="decouplednet")
    ap.add_argument("--decoder-stride", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dn = a.method == "decouplednet"
    runs = Path(a.runs)
    cfg = Config.load(runs / "seed0" / "decouplednet_k10" / "config.json")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="decouplednet" if dn else "deconvnet",
                                                             decoder_stride=a.decoder_stride, input_size=a.size))
    root = Path(cfg.data.root)
    records = list(read_split(runs / "splits" / "strong_10.txt", root, num_classes=21).records)
    random.Random(0).shuffle(records)
    hold, train = records[: len(records) // 4], records[len(records) // 4:]
    method = get_method(cfg.model.name)
    net = method.build(cfg)
    if dn:  # the bench's weak-set classifier, fixed
        state = load_file(str(runs / "seed0" / "weak_classifier" / "model.safetensors"))
        net.classifier.load_state_dict({k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")})
        fixed, learn = net.classifier, [net.bridge, net.decoder]
    else:
        method.prepare(net, cfg, True)  # the ImageNet encoder
        fixed, learn = net.encoder, [net.neck, net.decoder]
    fixed.eval().requires_grad_(False)
    ds = CropDataset(Split(root, train, "probe_train", 21), 21, a.size, 50, 0.1, 1.6, False,
                     "binary" if dn else "multiclass", seed=0)
    opt = torch.optim.Adam([p for m in learn for p in m.parameters()], a.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, int(0.7 * a.steps), 0.1)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    print(f"{a.method} stride {a.decoder_stride} lr {a.lr}: {len(train)} training / {len(hold)} held-out images", flush=True)
    t0, losses = time.time(), []
    for step in range(a.steps):
        for m in learn:
            m.train()
        at = (step * 8) % len(ds)
        xs, subsets, targets = zip(*(ds[int(i)] for i in order[at: at + 8]))
        x = torch.stack(xs).contiguous(memory_format=torch.channels_last)
        if dn:
            with torch.no_grad():
                cls_out = net.classifier(x)
                w = net.label_weights(cls_out, torch.stack(subsets))[:, None]
            logits = net.segment(x, w, cls_out)[:, 0]
        else:
            logits = net(x)
        loss = F.cross_entropy(logits.float(), torch.stack(targets), ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            miou = held_out_miou(net, root, hold, a.size)
            print(f"step {step + 1}: loss {np.mean(losses[-100:]):.3f}, held-out mIoU (true labels) "
                  f"{100 * miou:.1f}, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
