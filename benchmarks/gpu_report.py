"""gpu.md + gpu.png from the gpu.json of benchmarks/gpu_check.py (kept apart so a JSON brought back
from the GPU machine can be re-rendered here: ``python benchmarks/gpu_check.py --report FILE``)."""

from __future__ import annotations

from pathlib import Path

from hetseg.io_atomic import write_atomic, write_text


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _scale(res: dict) -> str:
    return "CPU" if res["scale"] == "cpu" else "Paper"


def markdown(res: dict) -> str:
    """The report: provenance, training speed and memory, inference, the real stages' loss curves."""
    m, d = res["machine"], res.get("dataset", {})
    lines = [
        f"# {_scale(res)}-scale checks on {m.get('device')}", "",
        f"Command: `{res['command']}` (seed {res['seed']}, {res['scale']} scale, wall {res.get('wall_s')} s). "
        f"torch {m.get('torch')}, CUDA {m.get('cuda_version')}, cuDNN {m.get('cudnn')}, Lightning {m.get('lightning')}, "
        f"Python {m.get('python')}.",
        f"Data: fashion-scenes `{d.get('root')}` ({d.get('num_train')} train / {d.get('num_val')} val scenes, "
        f"seed {d.get('seed')}, meta.json content sha256 `{str(d.get('meta_sha256'))[:12]}`), 96 px scenes resized "
        "to the paper input by the pipeline. Every network starts from random weights (no ImageNet file on "
        "that machine), so the numbers are speed, memory and \"does the stage train\", not accuracy.", "",
        "## Training: crops per second and peak memory per stage", "",
        f"Through `hetseg.methods.train` (Lightning, DataLoader with {res.get('workers')} workers, the stage's own crops), "
        "the paper configs' batch x accumulate and precision (configs/*_paper.yaml); crops/s over the "
        "micro-batches after the first third, each one GPU-synchronised; peak = `torch.cuda.max_memory_allocated`.", "",
        "A paired stage (TransferNet att/joint: a target and a source row; DIS: a masked and a tag-only "
        "row) sees two images per batch unit; crops/s counts images. A stage whose training set holds only "
        "a few batches (DecoupledNet-Str's classifier on the strong images) restarts the DataLoader every "
        "epoch, and its row includes those restarts, as its real training would.", "",
        "| method | stage | batch x accumulate | images / micro-batch | optimizer | precision | crops/s | peak GiB |",
        "|---|---|---|---|---|---|---|---|"]
    for label, rows in res["training"].items():
        for r in rows:
            lines.append(f"| {label} | {r['stage']} | {r['batch']} x {r['accumulate']} | {r.get('rows_per_micro_batch')} | {r['optimizer']} "
                         f"{r['lr']:g} | {r['precision']} | {_fmt(r['crops_per_s'])} | {_fmt(r['peak_gib'], '.2f')} |")
    lines += ["", "## Inference: ms per image at batch 1", "",
              "`predict_images` (resize + normalise on the CPU, the model's `predict`, argmax back at the "
              "image size), median of 20 val images after 3 warm-up calls, float32 weights.", "",
              "| method | input px | parameters (M) | ms / image |", "|---|---|---|---|"]
    for label, rows in res["inference"].items():
        for r in rows:
            t = f" (t = {r['predict']['steps']})" if r.get("predict") else ""
            lines.append(f"| {label}{t} | {r['input_size']} | {r['params_m']} | {r['ms_per_image']} |")
    lines += ["", f"The DIS review quotes {res['dis_paper_ms']:g} ms per image for inference (45.5 M "
              "parameters; GPU and t not stated; docs/DIS.md).", "",
              "## Real stages: a few hundred optimizer steps", "",
              "The stages before it get 2 steps; the stage's step count is the run's `--real-steps`, or fewer "
              f"where its measured speed would not fit {res.get('real_budget_s')} s. Training loss averaged over "
              "each tenth of the stage (hetseg.bench.curves; the change compares the last three tenths with tenths 5-7).", "",
              "| method | stage | steps | crops/s | first tenth | last tenth | late change |", "|---|---|---|---|---|---|---|"]
    for label, r in res["real"].items():
        lc = r.get("late_change")
        lines.append(f"| {label} | {r['stage']} | {r['steps']} | {_fmt(r['crops_per_s'])} | {_fmt(r['first_tenth'], '.4f')} "
                     f"| {_fmt(r['last_tenth'], '.4f')} | {'-' if lc is None else f'{100 * lc:+.1f} %'} |")
    if res.get("errors"):
        lines += ["", "Failed (traceback in the run's log): " + "; ".join(res["errors"]) + "."]
    if res.get("skipped"):
        lines += ["", f"Not measured (the run's time budget ran out): {', '.join(res['skipped'])}."]
    return "\n".join(lines) + "\n"


def figure(res: dict, path: Path) -> None:
    """Left: crops/s per stage; right: the real stages' loss per tenth."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    names = [f"{label}\n{r['stage']}" for label, rows in res["training"].items() for r in rows]
    vals = [r["crops_per_s"] or 0 for rows in res["training"].values() for r in rows]
    ax.barh(range(len(vals)), vals)
    ax.set_yticks(range(len(vals)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("training crops / s")
    for label, r in res["real"].items():
        pts = r.get("loss_tenths") or []
        bx.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label} {r['stage']}")
    bx.set_xlabel("optimizer step")
    bx.set_ylabel("training loss (mean per tenth)")
    bx.legend(fontsize=7)
    fig.suptitle(f"{_scale(res)} scale on {res['machine'].get('device')}", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def write_report(res: dict, out: Path) -> None:
    """Write ``out/gpu.md`` and ``out/gpu.png`` (each atomically, hetseg.io_atomic)."""
    write_text(Path(out) / "gpu.md", markdown(res))
    figure(res, Path(out) / "gpu.png")
