"""Paper-scale checks on one GPU: what the CPU machines here cannot measure (README, "GPU set-up").

For every method (DecoupledNet, DecoupledNet-Str, DeconvNet, TransferNet, BaselineNet,
DecoupledNet-transfer, DIS) at *paper scale* (VGG-16 at 320 px, DIS's ResNet-101 at 360 px) with the
paper configs' batches (configs/*_paper.yaml: batch x accumulate per optimizer step, bf16-mixed):

* training throughput (crops per second) and peak GPU memory of every stage, through the real
  pipeline (``hetseg.methods.train``: Lightning, DataLoader, the stage's crops), a few dozen
  micro-batches each, the first ones not timed;
* a few hundred optimizer steps of two real stages (DecoupledNet ``cls`` and DIS ``labelmap``) and
  their training-loss curves (:mod:`hetseg.bench.curves`);
* inference ms/image at batch 1 through ``predict_images`` (preprocessing included), DIS at
  t = 0 and t = 30 iterative-inference steps beside the 140 ms that docs/DIS.md's review quotes.

Data: a small fashion-scenes set (``hetseg data scenes --out .gpu/fashion-scenes --num-train 1200
--num-val 100 --seed 0``; 96 px scenes, resized to the paper input by the pipeline), since no VOC
and no ImageNet weights exist on the GPU machine: every network starts from random weights, so the
loss curves show that the stages train, not what ImageNet-initialised networks reach.

Usage: ``make bench-gpu`` on a GPU machine with internet (it sets up .venv and the data); on an
offline one, build ``.gpu/fashion-scenes`` elsewhere, copy it over with the checkout and run
``python3 benchmarks/gpu_check.py --data .gpu/fashion-scenes --out OUT`` with any python that has
torch, Lightning, torchmetrics, safetensors, PyYAML and matplotlib (the script puts src/ on the
path; pycocotools is not needed). On a CPU,
``--smoke cpu`` (CPU scale) or ``--smoke paper`` (paper scale at batch 1) runs the same code for 2
float32 steps, a check of the script; ``--report OUT/gpu.json`` rewrites gpu.md and gpu.png from a
JSON. docs/BENCHMARKS.md, "Paper scale on a GPU".
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]  # runs from a plain checkout (PYTHONPATH-free)

from hetseg.config import Config  # noqa: E402

# label -> (paper config, the CPU config whose data section fits fashion-scenes, stages, overrides)
METHODS: dict[str, tuple[str, str, tuple[str, ...], list[str]]] = {
    "DecoupledNet": ("decouplednet_voc_paper", "decouplednet_cpu", ("cls", "seg"), []),
    "DecoupledNet-Str": ("decouplednet_voc_paper", "decouplednet_cpu", ("cls", "seg"),
                         ["data.weak_split=splits/strong_5.txt"]),
    "DeconvNet": ("deconvnet_voc_paper", "deconvnet_cpu", ("deconv",), []),
    "TransferNet": ("transfernet_coco_paper", "transfernet_cpu", ("cls", "att", "joint"), []),
    "BaselineNet": ("baselinenet_coco_paper", "baselinenet_cpu", ("cls", "baseline"), []),
    "DecoupledNet-transfer": ("decouplednet_transfer_coco_paper", "decouplednet_transfer_cpu", ("cls", "seg"), []),
    "DIS": ("dis_voc_paper", "dis_cpu", ("labelmap", "recon", "joint"), []),
}
REAL = {"DecoupledNet": "cls", "DIS": "labelmap"}  # the stages trained for a few hundred steps
# What runs first when time is short: DIS and DecoupledNet (speed, then their real stages), then the
# baselines. A task starts only while the run is inside --budget-s.
ORDER = [("speed", "DIS"), ("speed", "DecoupledNet"), ("real", "DIS"), ("real", "DecoupledNet"),
         ("speed", "DeconvNet"), ("speed", "TransferNet"), ("speed", "BaselineNet"),
         ("speed", "DecoupledNet-transfer"), ("speed", "DecoupledNet-Str")]
DIS_PAPER_MS = 140.0
REAL_BUDGET_S = 75.0  # seconds of training per real stage at its measured speed
WORKERS = 12  # DataLoader workers on the 16-core GPU machine
MICRO = 32  # micro-batches per stage for the speed rows (the first third is warm-up)


def stage_config(cfg: Config, stage: str):
    """The StageConfig object of ``stage`` inside ``cfg`` (cls/seg/deconv, transfer.*, dis.*)."""
    if cfg.model.name == "dis":
        return getattr(cfg.dis, stage)
    return getattr(cfg.transfer if stage in ("att", "joint", "baseline") else cfg, stage)


def method_config(label: str, data: Path, run_dir: Path, smoke: str = "") -> tuple[Config, tuple[str, ...]]:
    """The CPU config's data on fashion-scenes, the paper config's model scale, stages and crops.
    ``smoke``: "cpu" (CPU scale) or "paper" (paper scale, batch 1), float32 and no workers: a
    quick run of this script on a CPU."""
    paper_name, cpu_name, stages, extra = METHODS[label]
    paper = Config.load(ROOT / "configs" / f"{paper_name}.yaml")
    cfg = Config.load(ROOT / "configs" / f"{cpu_name}.yaml").override(extra)
    cfg.run_dir, cfg.data.root = str(run_dir), str(data)
    cfg.data.workers = 0 if smoke else WORKERS
    cfg.model.vgg_weights, cfg.model.backbone = "", ""  # no ImageNet weights on that machine
    cfg.model.imagenet = smoke == "cpu"  # paper scale from random weights, on purpose (throughput, not accuracy)
    cfg.model.scale = "cpu" if smoke == "cpu" else "paper"
    cfg.crops = paper.crops
    for name in ("cls", "seg", "deconv"):
        setattr(cfg, name, getattr(paper, name))
    for name in ("att", "joint", "baseline"):
        setattr(cfg.transfer, name, getattr(paper.transfer, name))
    cfg.transfer.feature_scale = paper.transfer.feature_scale
    for name in ("labelmap", "recon", "joint", "t_train", "t_test"):
        setattr(cfg.dis, name, getattr(paper.dis, name))
    if smoke:
        cfg.dis.t_train = 2
        for stage in stages:
            sc = stage_config(cfg, stage)
            sc.precision = "32-true"
            if smoke == "paper":
                sc.batch_size, sc.accumulate = 1, 1
    return cfg, stages


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock(L.Callback):
    """Wall time at the end of every micro-batch (GPU synchronised), the peak memory of the stage."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.peak_gib = 0.0

    def on_train_start(self, trainer, module) -> None:
        self.marks = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        sync()
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, module) -> None:
        if torch.cuda.is_available():
            self.peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30

    def crops_per_s(self, rows: int) -> float | None:
        """Crops per second over the micro-batches after the first third (warm-up: cuDNN autotune,
        worker start); None when fewer than 4 were timed."""
        warm = len(self.marks) // 3
        if len(self.marks) - warm < 4:
            return None
        return rows * (len(self.marks) - 1 - warm) / (self.marks[-1] - self.marks[warm])


def fix_budgets(cfg: Config, plan: dict[str, int]) -> None:
    """Every planned stage's steps, set before the first one trains: a run dir holds one config, and
    hetseg refuses another once a stage there is done (methods/run_state.py: refuse_other_recipe)."""
    for stage, steps in plan.items():
        sc = stage_config(cfg, stage)
        sc.steps, sc.checkpoint_every = steps, 10 ** 6


def train_stage(cfg: Config, stage: str, steps: int) -> dict:
    """Train ``stage`` of ``cfg.model.name`` for ``steps`` optimizer steps; its speed and memory."""
    from hetseg.methods import train

    fix_budgets(cfg, {stage: steps})
    sc = stage_config(cfg, stage)
    clock = StepClock()
    t0 = time.perf_counter()
    summary = train(cfg, [stage], progress=False, callbacks=[clock])[stage]
    # Paired stages (TransferNet att/joint, DIS) see two rows per batch_size unit; the method says so.
    rows = summary.get("rows_per_step", sc.batch_size * sc.accumulate) // sc.accumulate
    return {"stage": stage, "batch": sc.batch_size, "accumulate": sc.accumulate, "rows_per_micro_batch": rows,
            "steps": steps, "micro_batches": len(clock.marks), "crops_per_s": clock.crops_per_s(rows),
            "peak_gib": round(clock.peak_gib, 2), "wall_s": round(time.perf_counter() - t0, 1),
            "precision": sc.precision, "optimizer": sc.optimizer, "lr": sc.lr}


def inference_ms(run_dir: Path, n: int, predict_kwargs: dict | None = None) -> dict:
    """Median ms/image of ``predict_images`` at batch 1 on ``n`` val images (3 warm-up calls)."""
    from hetseg.data.io import read_image
    from hetseg.engine.checkpoint import load_model
    from hetseg.engine.evaluate import predict_images
    from hetseg.methods import load_split

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net, cfg, _ = load_model(run_dir, device=device)
    split = load_split(cfg, "val")
    images = [read_image(split.path(r.image)) for r in split.records[:n]]
    times = []
    for i, im in enumerate(images[:1] * 3 + images):
        sync()
        t0 = time.perf_counter()
        predict_images(net, [im], cfg.eval.threshold, predict_kwargs=predict_kwargs)
        sync()
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
    return {"ms_per_image": round(statistics.median(times), 2), "images": len(times),
            "input_size": int(net.input_size), "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            **({"predict": predict_kwargs} if predict_kwargs else {})}


def real_stage(label: str, stage: str, data: Path, work: Path, steps: int, smoke: str) -> dict:
    """``steps`` optimizer steps of one stage (after the stages before it, briefly) and its loss curve."""
    from hetseg.bench.curves import late_change, loss_by_parts

    cfg, stages = method_config(label, data, work / f"real_{label}", smoke)
    fix_budgets(cfg, {**{before: 2 for before in stages[:stages.index(stage)]}, stage: steps})
    for before in stages[:stages.index(stage)]:
        train_stage(cfg, before, 2)
    out = train_stage(cfg, stage, steps)
    parts = loss_by_parts(Path(cfg.run_dir) / stage)
    return {**out, "method": label, "loss_tenths": parts, "late_change": late_change(parts),
            "first_tenth": parts[0][1] if parts else None, "last_tenth": parts[-1][1] if parts else None}


def small_shm_fallback() -> str:
    """DataLoader workers pass batches through /dev/shm; a VM with a small one (bus errors) gets
    torch's file_system sharing instead. Returns the strategy in use."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        free = 0
    if free < 2 * 2 ** 30:
        torch.multiprocessing.set_sharing_strategy("file_system")
    return torch.multiprocessing.get_sharing_strategy()


def device_info() -> dict:
    """The bench's machine record (hetseg.bench.provenance.machine_info) plus the GPU's."""
    from hetseg.bench.provenance import machine_info

    info = {**machine_info(), "cuda_version": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), memory_gib=round(p.total_memory / 2 ** 30, 1),
                    multiprocessors=p.multi_processor_count)
    else:
        info["device"] = f"CPU ({info['cpu']})"
    return info


def speed(res: dict, label: str, data: Path, work: Path, smoke: str) -> None:
    """Every stage of ``label`` for MICRO micro-batches, then its inference; rows into ``res``."""
    cfg, stages = method_config(label, data, work / label, smoke)
    res["training"][label] = rows = []
    plan = {st: 2 if smoke else max(3, math.ceil(MICRO / stage_config(cfg, st).accumulate)) for st in stages}
    fix_budgets(cfg, plan)
    for stage in stages:
        rows.append(train_stage(cfg, stage, plan[stage]))
        print(f"[gpu] {label} {stage}: {rows[-1]}", flush=True)
    kw = [{"steps": 0}, {"steps": cfg.dis.t_test}] if label == "DIS" else [None]
    res["inference"][label] = [inference_ms(Path(cfg.run_dir), 1 if smoke else 20, k) for k in kw]
    print(f"[gpu] {label} inference: {res['inference'][label]}", flush=True)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # paper-scale VGG runs are ~1.2 GB each


def real(res: dict, label: str, data: Path, work: Path, smoke: str, real_steps: int) -> None:
    """The real stage of ``label``: ``real_steps``, or fewer where its measured speed would not fit
    REAL_BUDGET_S seconds."""
    stage, steps = REAL[label], real_steps
    measured = next((r for r in res["training"].get(label, []) if r["stage"] == stage), None)
    if measured and measured["crops_per_s"] and not smoke:
        per_step = measured["rows_per_micro_batch"] * measured["accumulate"] / measured["crops_per_s"]
        steps = min(real_steps, max(30, int(REAL_BUDGET_S / per_step)))
    res["real"][label] = real_stage(label, stage, data, work, 10 if smoke else steps, smoke)
    print(f"[gpu] real {label} {stage}: {res['real'][label]['loss_tenths']}", flush=True)


def run(data: Path, out: Path, smoke: str, budget_s: float, real_steps: int, only: list[str] | None = None) -> dict:
    """Every measurement, the JSON rewritten after each so a timeout keeps what finished."""
    from hetseg.bench.provenance import dataset_info
    from hetseg.io_atomic import write_json

    res = {"command": " ".join(["python3", "benchmarks/gpu_check.py", *sys.argv[1:]]), "scale": "cpu" if smoke == "cpu" else "paper",
           "seed": 0, "machine": device_info(), "training": {}, "inference": {}, "real": {},
           "dataset": dataset_info(data), "workers": 0 if smoke else WORKERS,
           "sharing_strategy": small_shm_fallback(), "real_budget_s": REAL_BUDGET_S, "skipped": [], "errors": [], "dis_paper_ms": DIS_PAPER_MS}
    t_start = time.perf_counter()

    def save() -> None:
        res["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_json(out / "gpu.json", res)

    with tempfile.TemporaryDirectory() as tmp:
        for kind, label in [t for t in ORDER if not only or t[1] in only]:
            name = label if kind == "speed" else f"real {label} {REAL[label]}"
            if time.perf_counter() - t_start > budget_s:
                res["skipped"].append(name)
                continue
            try:  # one failure must not cost the other numbers (the GPU run gets one try)
                if kind == "speed":
                    speed(res, label, data, Path(tmp), smoke)
                else:
                    real(res, label, data, Path(tmp), smoke, real_steps)
            except Exception as e:  # noqa: BLE001 - recorded in the report, traceback in the log
                traceback.print_exc()
                res["errors"].append(f"{name}: {type(e).__name__}: {e}")
            save()
    save()
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".gpu" / "fashion-scenes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", choices=("cpu", "paper"), default="",
                    help="2 steps of float32 on a CPU (paper: at batch 1): a check of this script")
    ap.add_argument("--budget-s", type=float, default=360.0, help="start no new method after this many seconds")
    ap.add_argument("--real-steps", type=int, default=300)
    ap.add_argument("--methods", nargs="*", choices=list(METHODS), help="only these (default: all)")
    ap.add_argument("--report", type=Path, help="only rewrite gpu.md/gpu.png beside this gpu.json")
    a = ap.parse_args()
    from gpu_report import write_report  # noqa: E402  (benchmarks/gpu_report.py)

    if a.report:
        write_report(json.loads(a.report.read_text()), a.report.parent)
    else:
        torch.manual_seed(0)
        write_report(run(a.data, a.out, a.smoke, a.budget_s, a.real_steps, a.methods), a.out)
