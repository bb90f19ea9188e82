"""Should ``hetseg bench table1`` use bf16 autocast and/or channels_last on this CPU? (issue 4, item 5)

At CPU scale, on real fashion-scenes batches (random tensors if the dataset is missing), for the
three kinds of training step the benchmark runs -- the classifier (stage cls), DecoupledNet's
segmentation stage (frozen classifier + saliency + bridge + decoder, forward + backward) and the
DeconvNet -- this script

1. trains one init on the same batches for N steps in four modes -- fp32, bf16 autocast (what
   Lightning's ``precision="bf16-mixed"`` does on CPU), channels_last fp32, channels_last + bf16 --
   the modes taking turns step by step (fair timing on a shared machine), and times each
   optimizer step (forward, backward, SGD);
2. compares the loss curves. channels_last is the same fp32 arithmetic in another kernel order, so
   its divergence from fp32 is the *noise floor* of a training run; bf16 is material only if it
   diverges clearly more than that floor;
3. compares one forward pass in bf16 vs fp32 on the trained weights (argmax agreement of the
   segmentation outputs), since evaluation would run under the same autocast.

Usage: ``.venv/bin/python benchmarks/precision_check.py [--steps 10] [--threads 1]``; writes
``benchmarks/results/precision_check.json`` and ``.md``. Keep it short (<= 3 min on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import torch

from hetseg.config import Config
from hetseg.io_atomic import write_json, write_text
from hetseg.methods import get_method
from hetseg.methods.deconvnet import DeconvStage
from hetseg.methods.decouplednet.stages import ClsStage, SegStage
from hetseg.models.scales import get_scale

MODES = ("fp32", "bf16", "channels_last", "channels_last+bf16")


def _batches(kind: str, cfg: Config, n: int, batch: int, seed: int = 0) -> tuple[list[tuple], str]:
    """``n`` fixed batches for a stage kind, prepared up front so data loading is never timed, and where
    they came from (the split and its sha256, or why random tensors stood in)."""
    from hetseg.data.datasets import CropDataset, ImageLabelDataset
    from hetseg.methods import load_split

    size, C = get_scale(cfg.model.scale).input_size, cfg.data.num_classes
    g = torch.Generator().manual_seed(seed)
    try:
        split = load_split(cfg, "weak" if kind == "cls" else "strong")
        if kind == "cls":
            ds = ImageLabelDataset(split.weak(), C, size, train=True, seed=seed)
        else:
            ds = CropDataset(split, C, size, 200, 0.1, 1.6, False,
                             "binary" if kind == "seg" else "multiclass", seed=seed)
        idx = torch.randperm(len(ds), generator=g)[: n * batch].tolist()
        items = [ds[i] for i in idx]
        source = (f"{cfg.data.weak_split if kind == 'cls' else cfg.data.strong_split} ({len(split)} images, "
                  f"sha256 {split.checksum()})")
        return [tuple(torch.stack(col) for col in zip(*items[b * batch:(b + 1) * batch])) for b in range(n)], source
    except Exception as e:  # no dataset here: random tensors still time the arithmetic
        print(f"[precision] {kind}: real data unavailable ({e}); using random tensors")
        source = f"random tensors (real data unavailable: {e})"
        x = lambda: torch.randn(batch, 3, size, size, generator=g)  # noqa: E731
        if kind == "cls":
            return [(x(), (torch.rand(batch, C - 1, generator=g) < 0.2).float()) for _ in range(n)], source
        sub = lambda: (torch.rand(batch, C - 1, generator=g) < 0.3).float()  # noqa: E731
        hi = 2 if kind == "seg" else C
        return [(x(), sub(), torch.randint(0, hi, (batch, size, size), generator=g)) for _ in range(n)], source


def _module(kind: str, cfg: Config, seed: int = 0):
    """A stage LightningModule with fresh weights of ``seed`` (the classifier is random for seg:
    its values do not matter for timing, and both precisions see the same one)."""
    cfg = cfg.override([f"seed={seed}"])  # Method.build seeds the init with cfg.seed

    def build(c: Config):
        return get_method(c.model.name).build(c)

    if kind == "deconv":
        net = build(cfg.override(["model.name=deconvnet"]))
        mod = DeconvStage(net, cfg.deconv)
    elif kind == "cls":
        mod = ClsStage(build(cfg), cfg.cls, cfg.data.num_classes - 1)
    else:
        mod = SegStage(build(cfg), cfg.seg)
    mod.log = lambda *a, **k: None  # the stage's training_step logs; there is no Trainer here
    return mod


def _to_mode(mod, batches: list[tuple], mode: str) -> list[tuple]:
    if "channels_last" not in mode:
        return batches
    mod.to(memory_format=torch.channels_last)
    return [(b[0].contiguous(memory_format=torch.channels_last), *b[1:]) for b in batches]


def _autocast(mode: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in mode else contextlib.nullcontext()


def _train_interleaved(mods: dict, batches: dict, steps: int) -> tuple[dict, dict]:
    """``steps`` SGD steps per mode, the modes taking turns step by step so that load from other
    processes on a shared machine hits every mode alike; -> ({mode: losses}, {mode: s per step})."""
    opts = {m: mod.configure_optimizers()["optimizer"] for m, mod in mods.items()}
    losses: dict = {m: [] for m in mods}
    times: dict = {m: [] for m in mods}
    for mod in mods.values():
        mod.train()
    for i in range(steps):
        for m, mod in mods.items():
            b = batches[m][i % len(batches[m])]
            t0, c0 = time.perf_counter(), time.process_time()
            with _autocast(m):
                loss = mod.training_step(b, i)
            opts[m].zero_grad(set_to_none=True)
            loss.backward()
            opts[m].step()
            times[m].append((time.perf_counter() - t0, time.process_time() - c0))
            losses[m].append(float(loss.detach()))
    return losses, times


@torch.no_grad()
def _forward_agreement(kind: str, mod, batch: tuple) -> dict:
    """One eval-mode forward in fp32 vs bf16 autocast on the same weights."""
    mod.eval()
    x = batch[0]
    net = mod.net

    def out():
        if kind == "cls":
            return net.classifier(x).logits_avg.float()
        if kind == "seg":
            return net.predict(x).probs.float()
        return net(x).float()

    a = out()
    with _autocast("bf16"):
        b = out()
    res = {"max_abs_diff": float((a - b).abs().max()), "rel_l2": float((a - b).norm() / a.norm().clamp_min(1e-12))}
    if kind == "cls":
        res["label_agreement"] = float(((a > 0) == (b > 0)).float().mean())  # sigmoid > 0.5
    else:
        res["pixel_argmax_agreement"] = float((a.argmax(1) == b.argmax(1)).float().mean())
    return res


def _curve_gap(a: list[float], b: list[float]) -> dict:
    d = [abs(x - y) for x, y in zip(a, b)]
    tail = max(1, len(a) // 4)
    return {"max_abs": round(max(d), 5), "mean_abs": round(sum(d) / len(d), 5),
            "final_quarter_mean": [round(sum(a[-tail:]) / tail, 5), round(sum(b[-tail:]) / tail, 5)]}


def check(kind: str, cfg: Config, steps: int, batch: int, warmup: int = 2, seed: int = 0) -> dict:
    """All four modes trained from one init on the same batches, interleaved: timings + curves."""
    batches, source = _batches(kind, cfg, n=min(steps, 6), batch=batch, seed=seed)
    init = _module(kind, cfg, seed=seed)
    mods = {m: copy.deepcopy(init) for m in MODES}
    per_mode = {m: _to_mode(mods[m], batches, m) for m in MODES}
    curves, times = _train_interleaved(mods, per_mode, steps)
    # First steps build oneDNN kernels: not timed. Medians; "cpu" is the process CPU time, which
    # other processes on a shared machine do not inflate (with 1 thread it is the 1-core wall time).
    med = lambda v: round(sorted(v)[len(v) // 2], 4)  # noqa: E731
    res: dict = {
        "batch": batch, "timed_steps": steps - warmup, "batches_from": source,
        "timing_s_per_step": {m: med([c for _, c in t[warmup:]]) for m, t in times.items()},
        "wall_s_per_step": {m: med([w for w, _ in t[warmup:]]) for m, t in times.items()},
        "curves": {m: [round(v, 6) for v in c] for m, c in curves.items()},
        "forward_bf16_vs_fp32": _forward_agreement(kind, mods["fp32"], batches[0]),
    }
    res["gap_bf16_vs_fp32"] = _curve_gap(curves["fp32"], curves["bf16"])
    res["gap_channels_last+bf16_vs_fp32"] = _curve_gap(curves["fp32"], curves["channels_last+bf16"])
    res["gap_channels_last_vs_fp32 (noise floor)"] = _curve_gap(curves["fp32"], curves["channels_last"])
    fp = res["timing_s_per_step"]["fp32"]
    res["speedup_vs_fp32"] = {m: round(fp / t, 2) for m, t in res["timing_s_per_step"].items()}
    return res


def _markdown(report: dict) -> str:
    lines = ["# bf16 autocast / channels_last on this CPU (issue 4, item 5)", "",
             f"{report['machine']} ({', '.join(report['machine_info']['cpu_flags'])}); torch {report['torch']}, "
             f"{report['threads']} threads; "
             f"{report['steps']} training steps per curve; command `{report['command']}`; seed {report['seed']} "
             f"(batches and initial weights); scale cpu; data `{report['data']['root']}` (meta sha256 "
             f"`{str(report['data']['meta_sha256'])[:12]}…`); batches from: "
             + "; ".join(f"{k}: {r['batches_from']}" for k, r in report["stages"].items()), "",
             "| step | batch | fp32 CPU s/step | bf16 | channels_last | cl+bf16 | bf16 loss gap (max / mean) "
             "| noise floor (cl vs fp32) | bf16 forward agreement |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = ("process CPU seconds per step, median of {} interleaved steps after 2 warm-up steps (wall times, "
           "which other processes on a shared machine inflate, are in the JSON)")
    for kind, r in report["stages"].items():
        t, s = r["timing_s_per_step"], r["speedup_vs_fp32"]
        g, n = r["gap_bf16_vs_fp32"], r["gap_channels_last_vs_fp32 (noise floor)"]
        f = r["forward_bf16_vs_fp32"]
        agree = f.get("pixel_argmax_agreement", f.get("label_agreement"))
        lines.append(f"| {kind} | {r['batch']} | {t['fp32']:.3f} | {t['bf16']:.3f} (x{s['bf16']}) "
                     f"| {t['channels_last']:.3f} (x{s['channels_last']}) "
                     f"| {t['channels_last+bf16']:.3f} (x{s['channels_last+bf16']}) "
                     f"| {g['max_abs']:.4f} / {g['mean_abs']:.4f} | {n['max_abs']:.4f} / {n['mean_abs']:.4f} "
                     f"| {100 * agree:.2f}% |")
    first = next(iter(report["stages"].values()))
    lines += ["", "Times: " + fmt.format(first["timed_steps"]) + ". Loss gap: |loss_bf16 - loss_fp32| per step "
              "over the curve (same init, same batches); noise floor: the same for channels_last fp32.", "",
              f"**Verdict:** {report['verdict']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/fashion-scenes")
    ap.add_argument("--steps", type=int, default=10, help="steps per mode (the first 2 are not timed)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU time per step = 1-core time, robust on a shared machine)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batches' selection and the initial weights")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    cfg = Config().override([f"data.root={args.data}"])
    stages = {}
    for kind, sc in (("cls", cfg.cls), ("seg", cfg.seg), ("deconv", cfg.deconv)):
        stages[kind] = check(kind, cfg, args.steps, sc.batch_size, seed=args.seed)
        print(f"[precision] {kind}: {stages[kind]['timing_s_per_step']} s/step; bf16 gap "
              f"{stages[kind]['gap_bf16_vs_fp32']}; floor {stages[kind]['gap_channels_last_vs_fp32 (noise floor)']}")
    from hetseg.bench.provenance import dataset_info, machine_info

    mi = machine_info()
    report = {"machine": mi["cpu"], "machine_info": mi, "seed": args.seed, "scale": "cpu",
              "data": dataset_info(args.data),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
              "command": " ".join(["python benchmarks/precision_check.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "stages": stages, "wall_s": None, "verdict": ""}
    report["verdict"] = verdict(stages)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "precision_check.json", report)
    write_text(out / "precision_check.md", _markdown(report))
    print(f"[precision] {report['verdict']} ({report['wall_s']} s) -> {out / 'precision_check.md'}")
    return 0


def verdict(stages: dict) -> str:
    """A mode is worth it if it is >= 1.15x faster than fp32 on every stage kind (the bench runs all
    three); a bf16 mode only if its loss gap stays within 3x the fp32 noise floor + 0.01 absolute."""
    lo = {m: min(r["speedup_vs_fp32"][m] for r in stages.values()) for m in MODES[1:]}
    hi = {m: max(r["speedup_vs_fp32"][m] for r in stages.values()) for m in MODES[1:]}
    ok = {m: "bf16" not in m or all(
        r[f"gap_{m}_vs_fp32"]["mean_abs"] <= 3 * r["gap_channels_last_vs_fp32 (noise floor)"]["mean_abs"] + 0.01
        for r in stages.values()) for m in MODES[1:]}
    speed = ", ".join(f"{m} x{lo[m]}..x{hi[m]}" for m in MODES[1:])
    acc = "bf16 loss curves " + ("within" if ok["bf16"] else "outside") + " 3x the fp32 noise floor + 0.01"
    use = sorted((m for m in MODES[1:] if lo[m] >= 1.15 and ok[m]), key=lambda m: -lo[m])
    if not use:
        return f"keep fp32, contiguous (no mode >= 1.15x on every stage): speed-ups vs fp32 {speed}; {acc}"
    return f"use {use[0]}: speed-ups vs fp32 {speed}; {acc}"


if __name__ == "__main__":
    raise SystemExit(main())
