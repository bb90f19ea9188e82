"""The README's result tables are the committed results (mission: "the README's numbers are the ones a
fresh clone reproduces"). The benches write ``benchmarks/results/*.json``; the README's tables are typed
by hand beside them, so a re-run bench whose README section was not updated -- or a README edit that
drifted from the JSON -- fails here. Every number is compared as the README prints it (one decimal)."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUM = r"-?\d+(?:\.\d+)?"


def _section(heading_start: str) -> list[str]:
    """The README lines under the first ``### `` heading starting with ``heading_start``, to the next heading."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### " + heading_start))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start + 1:end]


def _rows(lines: list[str]) -> list[list[str]]:
    """Cells of every Markdown table body row (header and ``|---|`` lines dropped), bold marks removed."""
    rows = [[c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
            for line in lines if line.startswith("|") and not line.startswith("|---")]
    return rows[1:] if rows else rows  # the first row is the header


def _mean_std(cell: str) -> tuple[float, float]:
    m = re.match(rf"({NUM}) ± ({NUM})", cell)
    assert m, f"not 'mean ± std': {cell!r}"
    return float(m[1]), float(m[2])


def _r(x: float) -> float:
    return round(x, 1)


def _results(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / name).read_text())


def test_table1_table_is_table1_json() -> None:
    d = _results("table1.json")
    rows = {r[0]: r for r in _rows(_section("Table 1 "))}
    assert set(rows) == {"5", "10", "25", "full"}, rows.keys()
    for k, r in rows.items():
        s, g = d["summary"], d["summary_gt"]
        assert _mean_std(r[1]) == (_r(s["decouplednet"][k]["mean"]), _r(s["decouplednet"][k]["std"])), k
        assert _mean_std(r[2]) == (_r(g["decouplednet"][k]["mean"]), _r(g["decouplednet"][k]["std"])), k
        assert _mean_std(r[7]) == (_r(s["deconvnet"][k]["mean"]), _r(s["deconvnet"][k]["std"])), k
        if k != "full":  # at full -Str is the DecoupledNet cell itself (the README says so instead of repeating it)
            assert _mean_std(r[4]) == (_r(s["decouplednet-str"][k]["mean"]), _r(s["decouplednet-str"][k]["std"])), k
            assert _mean_std(r[5]) == (_r(g["decouplednet-str"][k]["mean"]), _r(g["decouplednet-str"][k]["std"])), k
        for col, method in ((3, "decouplednet"), (6, "decouplednet-str"), (8, "deconvnet")):
            assert float(r[col]) == d["paper"][method][k], (k, method)


def test_table1_per_seed_line_is_table1_json() -> None:
    """The "Per seed (0 / 1 / 2)" paragraph under the table, method by method, k by k."""
    d = _results("table1.json")
    text = " ".join(_section("Table 1 "))
    para = text[text.index("Per seed (0 / 1 / 2):"):]
    by = {(c["method"], str(c["k"]), c["seed"]): _r(c["miou"] * 100) for c in d["cells"]}
    for label, method, ks in (("DecoupledNet", "decouplednet", ("5", "10", "25", "full")),
                              ("-Str", "decouplednet-str", ("5", "10", "25")),
                              ("DeconvNet", "deconvnet", ("5", "10", "25", "full"))):
        m = re.search(rf"{re.escape(label)} ((?:{NUM}\s*[/,]?\s*)+)", para)
        assert m, label
        got = [float(x) for x in re.findall(NUM, m[1])][:3 * len(ks)]
        want = [by[(method, k, s)] for k in ks for s in (0, 1, 2)]
        assert got == want, (label, got, want)


def test_transfer_table_is_transfer_json() -> None:
    d = _results("transfer.json")["methods"]
    rows = {r[0]: r for r in _rows(_section("TransferNet "))}
    for name, key in (("TransferNet", "transfernet"), ("BaselineNet", "baselinenet"),
                      ("DecoupledNet-transfer", "decouplednet_transfer")):
        r, m, gt = rows[name], d[key], d[key + "_gt"]
        assert _mean_std(r[1]) == (_r(m["mean"] * 100), _r(m["std"] * 100)), name
        per_seed = [float(x) for x in re.findall(NUM, r[1].split("(", 1)[1])]
        assert per_seed == [_r(x * 100) for x in m["miou"]], name
        assert _mean_std(r[2]) == (_r(gt["mean"] * 100), _r(gt["std"] * 100)), name
        assert float(re.match(NUM, r[3])[0]) == m["paper_val_miou"], name
    assert rows["TransferNet"][3].endswith(f"GT {d['transfernet_gt']['paper_val_miou']}")


def test_dis_table_is_dis_json() -> None:
    """One README row per (k, t_tr); "0 = 5" at full is one row for two summary entries, which must then agree
    (at full no image is tag-only, so t_tr changes nothing: docs/DIS.md)."""
    d = _results("dis.json")
    cols = [str(t) for t in d["t_test"]] + ["gt_t0"]
    summary = {(str(s["k"]), s["t_train"]): s["values"] for s in d["summary"]}
    covered = set()
    for r in _rows(_section("DIS ")):
        for t_tr in (int(t) for t in re.findall(r"\d+", r[1])):
            v = summary[(r[0], t_tr)]
            covered.add((r[0], t_tr))
            for cell, col in zip(r[2:], cols, strict=True):
                assert _mean_std(cell) == (_r(v[col]["mean"]), _r(v[col]["std"])), (r[:2], col)
    assert covered == set(summary)


def test_backbone_accuracy_and_checksum_are_backbone_json() -> None:
    text = " ".join(_section("Shipped CPU-scale backbone"))
    for name in ("backbone.json", "backbone_resnet.json"):
        d = _results(name)
        assert f"{_r(d['held_out_acc'] * 100)} %" in text, name
        assert f"sha256 `{d['sha256'][:12]}…`" in text, name


def test_backbone_curve_size_and_wall_are_the_records() -> None:
    """The held-out curve, steps x batch, file sizes and the ResNet's wall time as the README prints them."""
    text = " ".join(" ".join(_section("Shipped CPU-scale backbone")).split()).replace("**", "")
    vgg, res = _results("backbone.json"), _results("backbone_resnet.json")
    # half up, as the README prints 0.785 (1,570 of 2,000 items): 79
    curve = " → ".join(str((Decimal(str(a)) * 100).quantize(Decimal(1), ROUND_HALF_UP))
                       for _, a in vgg["curve"]["held_out_acc"])
    assert f"every {vgg['curve']['held_out_acc'][0][0]} steps {curve} %" in text
    assert f"{vgg['steps']:,} steps × {vgg['effective_batch']}" in text
    for family, d in (("backbone-cpu", vgg), ("backbone-cpu-resnet", res)):
        f = ROOT / "src/hetseg/zoo" / family / "backbone.safetensors"
        assert f"({d['dtype']}, {f.stat().st_size / 1e6:.1f} MB, sha256 `{d['sha256'][:12]}…`" in text, family
    assert not res["resumed"] and f"{res['wall_s'] / 60:.1f} min on 2 cores" in text


def test_voc_real_table_is_voc_real_json() -> None:
    d = _results("voc_real.json")
    by = {(r["method"], r["k"]): r for r in d["records"] if r["seed"] == 0}
    rows = {r[0]: r for r in _rows(_section("Real photos "))}
    for name, method, key in (("DecoupledNet", "decouplednet", "miou"),
                              ("DecoupledNet-Str", "decouplednet-str", "miou"),
                              ("masks-only (DeconvNet's role)", "maskonly", "miou"),
                              ("DecoupledNet, true image labels", "decouplednet", "miou_gt"),
                              ("DecoupledNet-Str, true image labels", "decouplednet-str", "miou_gt")):
        got = [float(c) for c in rows[name][1:1 + len(d["ks"])]]
        assert got == [_r(by[(method, k)][key] * 100) for k in d["ks"]], name


def test_table1_prose_numbers_are_the_results() -> None:
    """The classifier mAP per seed, and the seed-0 3x diagnostic's four-k line (table1_3x_seed0.json)."""
    text = " ".join(" ".join(_section("Table 1 ")).split()).replace("**", "")  # wrapped anywhere, bold dropped
    maps = {c["seed"]: c["cls_val_metrics"]["val/mAP"] for c in _results("table1.json")["cells"]
            if c["method"] == "decouplednet" and c["k"] == 5}
    assert "val mAP " + " / ".join(f"{maps[s]:.3f}" for s in (0, 1, 2)) in text
    strs = {k: [c["cls_val_metrics"]["val/mAP"] for c in _results("table1.json")["cells"]
                if c["method"] == "decouplednet-str" and c["k"] == k] for k in (5, 10, 25)}
    means = " / ".join(f"{sum(v) / len(v):.2f}" for v in strs.values())
    spread = max(abs(x - sum(v) / len(v)) for v in strs.values() for x in v)
    assert f"-Str's own classifiers {means} at k = 5 / 10 / 25, each within ±0.03 across seeds" in text
    assert all(len(v) == 3 for v in strs.values()) and spread <= 0.03, spread
    rows = _results("table1_3x_seed0.json")["rows"]

    def line(key: str, sep: str = " / ") -> str:
        return sep.join(f"{r[key]:.1f}" for r in rows)
    assert f"DecoupledNet scores {line('decouplednet')} (true labels {line('decouplednet_gt')})" in text
    assert f"DeconvNet {line('deconvnet')} at k = 5 / 10 / 25 / full" in text
    assert line("lead", " → ") in text


def test_voc_real_prose_numbers_are_the_results() -> None:
    """Classifier mAPs from voc_real.json; the shipped voc-lite0's scores from its own model.json."""
    text = " ".join(" ".join(_section("Real photos ")).split()).replace("**", "")
    recs = {(r["method"], r["k"]): r for r in _results("voc_real.json")["records"] if r["seed"] == 0}
    assert f"weak-set classifier (380 images) {recs[('decouplednet', 3)]['cls_mAP_eval']:.3f}" in text
    strs = " / ".join(f"{recs[('decouplednet-str', k)]['cls_mAP_eval']:.3f}" for k in (3, 5, 10))
    assert f"own classifier {strs} at k = 3 / 5 / 10" in text
    scores = json.loads((ROOT / "src/hetseg/zoo/voc-lite0/model.json").read_text())["shipped"]["scores"]
    assert f"it scores {scores['eval_miou'] * 100:.1f} mIoU on the {scores['eval_images']} held-out" in text
    assert f"({scores['eval_miou_gt_labels'] * 100:.1f} when given their true labels)" in text


def test_demo_numbers_are_demo_json() -> None:
    """The AVX-512 BF16 record a fresh clone's `make demo` wrote (benchmarks/results/demo.json)."""
    d = _results("demo.json")
    text = " ".join(" ".join(_section("Demo ")).split()).replace("**", "")
    b = d["baselines"]
    assert (f"{d['miou'] * 100:.1f}, true labels {d['miou_gt_labels'] * 100:.1f}, baselines "
            f"{b['all_background'] * 100:.1f} / {b['best_global_threshold'] * 100:.1f}") in text
    assert f"demo: mIoU={d['miou'] * 100:.1f}" in text and "avx512_bf16" in d["machine"]["cpu_flags"]
    wall = round(d["total_wall_s"])
    assert f"{wall // 60} min {wall % 60} s in all by its total_wall_s" in text.replace("`", "")
    rows = {r[0]: r[1] for r in _rows(_section("Demo "))}
    assert rows["all background"] == f"{b['all_background'] * 100:.1f}"  # the same on either machine
    best = rows["best single global threshold (chosen on val) + oracle image labels"]
    assert best == f"{b['best_global_threshold'] * 100:.1f}"
    # the table's first column is this record (the second is the AVX2 machine's printed run)
    dn = next(v for k, v in rows.items() if k.startswith("DecoupledNet, 5 strong per class"))
    gt = next(v for k, v in rows.items() if k.startswith("same model with ground-truth image labels"))
    assert (dn, gt) == (f"{d['miou'] * 100:.1f}", f"{d['miou_gt_labels'] * 100:.1f}")
