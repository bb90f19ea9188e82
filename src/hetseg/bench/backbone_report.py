"""Results of ``hetseg bench backbone``: ``backbone.json``, ``.md`` and the curve ``backbone.png``."""

from __future__ import annotations

from pathlib import Path

from hetseg.bench.provenance import machine_info
from hetseg.io_atomic import write_atomic, write_json, write_text
from hetseg.zoo import backbone_dir


def markdown(r: dict) -> str:
    """The Markdown page for one backbone record ``r`` (as ``benchmarks/results/backbone*.json``): recipe,
    data, held-out curve and checksum."""
    loss, acc = r["curve"]["train_loss"], r["curve"]["held_out_acc"]
    family = r.get("family", "vgg")  # results written before the resnet family name none
    folder = backbone_dir(family).name
    what = {"vgg": "VGG-16 family: DecoupledNet, DeconvNet, TransferNet", "resnet": "DIS's ResNet encoder"}[family]
    lines = [
        f"# Shipped CPU-scale backbone, {family} (our ImageNet stand-in; {what})", "",
        f"Command: `{r['command']}` (seed {r['seed']}); {r['steps']} steps x {r['effective_batch']} on "
        f"{r['data']['train_items']:,} Fashion-MNIST **train** items ({r['data']['image_size']} px, one item on "
        f"clutter); held out: the last {r['data']['held_out_items']:,} train items"
        + (f" (sha256 of their pixels and labels `{r['data']['held_out_sha256'][:12]}…`)"
           if r["data"].get("held_out_sha256") else "") + ". No t10k item is seen.",  # older records lack it
        f"Wall time {r['wall_s'] / 60:.1f} min on {r['machine']['usable_cpus']} CPUs ({r['machine']['cpu']})"
        + (" in the last invocation, which resumed from a checkpoint (earlier invocations are not timed)."
           if r.get("resumed") else "."), "",
        f"**Held-out item accuracy {r['held_out_acc'] * 100:.1f} %** (float32 run); "
        f"{r['held_out_acc_float16'] * 100:.1f} % with the shipped float16 weights.",
        f"File: `{r.get('file') or f'src/hetseg/zoo/{folder}/backbone.safetensors'}`, sha256 `{r['sha256']}`.", "",
        "| step | train loss (mean of the last 100 steps) | held-out acc |", "|---:|---:|---:|",
    ]
    accs = dict((s, a) for s, a in acc)
    marks = sorted({s for s, _ in loss if s % 500 == 0} | set(accs))
    lmap = dict((s, v) for s, v in loss)
    for s in marks:
        lines.append(f"| {s} | {lmap.get(s, float('nan')):.3f} | "
                     f"{'' if s not in accs else f'{accs[s] * 100:.1f} %'} |")
    shipped = not r.get("file") or r["file"].startswith("src/hetseg/zoo/")
    lines += ["", f"Retrain: `{r['command']}`" + (f" (then commit the two files under src/hetseg/zoo/{folder}/)."
                                                  if shipped else " (a test-sized run: the shipped files are untouched).")]
    return "\n".join(lines) + "\n"


def figure(r: dict, path: Path) -> None:
    """Write the record's training-loss and held-out-accuracy curves side by side to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    s, v = zip(*r["curve"]["train_loss"])
    ax[0].plot(s, v)
    ax[0].set(xlabel="step", ylabel="train loss (100-step mean)", title="stage pre: training loss")
    if r["curve"]["held_out_acc"]:
        s, a = zip(*r["curve"]["held_out_acc"])
        ax[1].plot(s, [x * 100 for x in a], marker="o")
    ax[1].set(xlabel="step", ylabel="held-out item accuracy (%)", title="held-out train items")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_results(record: dict, out: str | Path, stem: str = "backbone") -> list[Path]:
    """``OUT/<stem>.{json,md,png}`` of one backbone record; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r = {**record, "machine": machine_info()}
    paths = [write_json(out / f"{stem}.json", r), write_text(out / f"{stem}.md", markdown(r))]
    figure(r, out / f"{stem}.png")
    return [*paths, out / f"{stem}.png"]
