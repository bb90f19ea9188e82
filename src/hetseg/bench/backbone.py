"""``hetseg bench backbone [--family resnet]``: the shipped CPU-scale backbones, our stand-ins for
ImageNet VGG-16 (``vgg``: DecoupledNet, DeconvNet, TransferNet) and ImageNet ResNet (``resnet``: DIS).

Stage ``pre`` (hetseg.methods.pretrain) at CPU scale (docs/DECISIONS.md, "CPU-scale backbone"): softmax over
the 10 Fashion-MNIST categories, one *train* item per image on fashion-scenes clutter
(hetseg.data.items); the last 2,000 train items are held out for its accuracy; no t10k item (those
make the val scenes) is ever seen. Trained once, long enough that its training loss has flattened
(``RECIPE``, fixed before the run), then written -- float tensors as float16, a few MB -- to
``hetseg/zoo/backbone-cpu[-resnet]/backbone.safetensors`` with ``backbone.json`` (sha256, command,
data, wall time, curve). ``model.backbone=shipped`` loads the model's family; ``make demo`` and the
benches start from it. Results: ``OUT/backbone.{json,md,png}`` (resnet: ``backbone_resnet.*``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hetseg.bench.curves import curve
from hetseg.config import Config
from hetseg.engine.checkpoint import file_sha256
from hetseg.zoo import backbone_dir

if TYPE_CHECKING:
    from hetseg.data.items import ItemDataset

# Fixed before the run: Adam as every CPU-scale classifier; ~5 epochs of the 58,000 train items.
_PRE = ["model.scale=cpu", "data.num_classes=11", "pre.steps=4500", "pre.batch_size=64", "pre.optimizer=adam",
        "pre.lr=0.002", "pre.weight_decay=0.0", "pre.lr_step=0.75", "pre.val_every=500", "pre.checkpoint_every=250"]
# DIS's ResNet encoder gets the same recipe, fixed before its run (not tuned): only the model differs.
RECIPES = {"vgg": ["model.name=decouplednet", *_PRE], "resnet": ["model.name=dis", *_PRE]}
RECIPE = RECIPES["vgg"]
BUDGETS = {"default": [], "tiny": ["pre.steps=4", "pre.batch_size=4", "pre.val_every=2", "pre.checkpoint_every=2",
                                   "data.pretrain_holdout=16"]}


@torch.no_grad()
def default_runs(family: str) -> str:
    """``hetseg bench backbone``'s run folder when ``--runs`` is not given."""
    return "runs/backbone" if family == "vgg" else f"runs/backbone_{family}"


def accuracy(logits: Callable[[torch.Tensor], torch.Tensor], ds: ItemDataset, batch: int = 250) -> float:
    """Top-1 accuracy of ``logits`` (images (N, 3, S, S) -> (N, 10)) on an ItemDataset (fixed renderings)."""
    hits = 0
    for s in range(0, len(ds), batch):
        xs, ys = zip(*(ds[i] for i in range(s, min(len(ds), s + batch))))
        hits += int((logits(torch.stack(xs)).argmax(1) == torch.stack(ys)).sum())
    return hits / len(ds)


def run_backbone(runs: str = "runs/backbone", out: str = "benchmarks/results", dest: str | Path | None = None,
                 budget: str = "default", fashion_mnist_dir: str | None = None, family: str = "vgg") -> int:
    """Train stage pre (or reuse the finished run), ship the backbone, write the results; exit status.

    ``dest`` defaults to the package's shipped backbone of ``family`` for the default budget and to
    ``RUNS/shipped`` for any other budget, so a test-sized run never replaces the shipped weights (nor,
    with the default ``out``, the committed results: it writes ``RUNS/results``).
    """
    from safetensors.torch import save_file

    from hetseg.bench.backbone_report import write_results
    from hetseg.data.items import item_splits, items_checksum
    from hetseg.engine.checkpoint import load_weights
    from hetseg.io_atomic import write_atomic, write_json
    from hetseg.methods import get_method, train
    from hetseg.methods.pretrain import item_logits
    from hetseg.models.backbone import backbone_state, load_backbone

    if budget != "default" and Path(out) == Path("benchmarks/results"):
        out = str(Path(runs) / "results")  # a test-sized run never replaces the committed results either
    recipe = RECIPES[family]
    cfg = Config(run_dir=runs, seed=0).override([*recipe, *BUDGETS[budget]])
    if fashion_mnist_dir:
        cfg.data.fashion_mnist_dir = fashion_mnist_dir
    t0 = time.perf_counter()
    summary = train(cfg, ("pre",), progress=False)["pre"]
    # Re-measure on the weights as shipped (float16-rounded), not only on the run's float32 ones.
    net = get_method(cfg.model.name).build(cfg)
    load_weights(net, Path(runs))
    halved = {k: (v.half() if v.is_floating_point() else v) for k, v in backbone_state(net).items()}
    _, held_out = item_splits(cfg.data.fashion_mnist_dir or None, net.input_size, cfg.seed, cfg.data.pretrain_holdout)
    logits = item_logits(net, runs)
    acc32 = accuracy(logits, held_out)
    load_backbone(net, {k: v.float() for k, v in halved.items()})  # the score layer / head stays the run's
    acc16 = accuracy(logits, held_out)
    dest = Path(dest) if dest is not None else (backbone_dir(family) if budget == "default" else Path(runs) / "shipped")
    # the package's own file (named as in the repository, however the command was run), else where it went
    file = (f"src/hetseg/zoo/{backbone_dir(family).name}/backbone.safetensors" if budget == "default"
            else str(dest / "backbone.safetensors"))
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "backbone.safetensors", lambda tmp: save_file(halved, tmp))
    sha = file_sha256(dest / "backbone.safetensors")
    command = ("hetseg bench backbone" + ("" if family == "vgg" else f" --family {family}")
               + ("" if budget == "default" else f" --budget {budget}")
               + ("" if runs == default_runs(family) else f" --runs {runs}"))
    record = {"command": command, "file": file, "family": family, "model": cfg.model.name, "seed": cfg.seed, "sha256": sha,
              "dtype": "float16", "recipe": recipe,
              "data": {"items": "Fashion-MNIST train items only (never t10k, which make the val scenes)",
                       "train_items": summary["train_samples"], "held_out_items": len(held_out),
                       "held_out_sha256": items_checksum(held_out),
                       "image_size": net.input_size},
              "steps": summary["steps"], "effective_batch": summary["effective_batch"],
              # A resumed stage times its last invocation only (the engine keeps no clock across kills).
              "wall_s": summary["wall_s"], "resumed": bool(summary.get("resumed_from")), "held_out_acc": round(acc32, 4), "held_out_acc_float16": round(acc16, 4),
              "curve": curve(Path(runs) / "pre"), "run_dir": runs, "total_wall_s": round(time.perf_counter() - t0, 1)}
    write_json(dest / "backbone.json", record)  # after the weights: the json says they are complete
    paths = write_results(record, out, "backbone" if family == "vgg" else f"backbone_{family}")
    print(f"[backbone] held-out acc {acc32 * 100:.1f} % (float16 {acc16 * 100:.1f} %), sha256 {sha[:12]}; "
          f"shipped {dest}; results {', '.join(map(str, paths))}", flush=True)
    return 0
