"""The real-photo bench on the VOC fixture photos (tiny encoder, tiny budget): the division of the
images, DecoupledNet / -Str / masks-only on a non-VGG encoder, and the results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import VOC_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ENCODER = ["model.encoder=efficientnet_lite0_tiny", "model.imagenet=false", "model.input_size=96"]


def test_division_is_fixed_disjoint_and_keeps_weak_masks_out(tmp_path):
    from hetseg.bench.voc_real import divide
    from hetseg.data.records import read_split

    a = divide(VOC_ROOT, tmp_path / "a", ks=(1,))
    b = divide(VOC_ROOT, tmp_path / "b", ks=(1,))
    assert {k: v for k, v in a.items()} == b  # same seed, same checksums
    ev = {r.id for r in read_split(tmp_path / "a" / "splits" / "eval.txt", VOC_ROOT).records}
    weak = read_split(tmp_path / "a" / "splits" / "weak.txt", VOC_ROOT,
                      labels=json.loads((tmp_path / "a" / "splits" / "labels.json").read_text()))
    strong = {r.id for r in read_split(tmp_path / "a" / "splits" / "strong_1.txt", VOC_ROOT).records}
    assert a["n_eval"] == 1 and a["images"] == 5 and not ev & ({r.id for r in weak.records} | strong)
    assert all(r.mask is None and r.labels for r in weak.records) and strong <= {r.id for r in weak.records}
    # not vacuously: every non-eval image is weak, and strong_1 names images (as many as the record says)
    assert a["n_weak"] == len(weak.records) == 4 and strong and a["n_strong_1"] == len(strong)
    # the same root again: the same files; another root into that runs folder: refused, nothing changed
    assert divide(VOC_ROOT, tmp_path / "a", ks=(1,)) == a
    import shutil

    from hetseg.errors import HetsegError

    other = tmp_path / "voc4"
    shutil.copytree(VOC_ROOT, other)
    victim = sorted((other / "JPEGImages").iterdir())[0]
    victim.unlink()
    (other / "SegmentationClass" / f"{victim.stem}.png").unlink()
    before = {p.name: p.read_bytes() for p in (tmp_path / "a" / "splits").iterdir()}
    with pytest.raises(HetsegError, match="this runs folder holds another division"):
        divide(other, tmp_path / "a", ks=(1,))
    assert {p.name: p.read_bytes() for p in (tmp_path / "a" / "splits").iterdir()} == before


def test_bench_voc_real_tiny(tmp_path):
    from hetseg.bench.voc_real import METHODS, run_voc_real

    out = tmp_path / "out"
    assert run_voc_real(str(VOC_ROOT), str(out), str(tmp_path / "runs"), ks=(1,), budget="tiny", jobs=1,
                        figure_images=1, overrides=TINY_ENCODER) == 0
    r = json.loads((out / "voc_real.json").read_text())
    assert r["command"].endswith(" " + " ".join(TINY_ENCODER))  # the overrides that made the numbers are named
    assert r["jobs"] == 1 and "(each on one thread, one at a time)" in (out / "voc_real.md").read_text()
    assert {c["method"] for c in r["records"]} == set(METHODS) and all(0 <= c["miou"] <= 1 for c in r["records"])
    # scale and the precision each stage resolved to are named (precision: auto picks per machine)
    assert r["scale"] == "cpu" and all(c["precision"] and set(c["precision"]) == set(c["steps"]) for c in r["records"])
    assert "; scale cpu; precision " in (out / "voc_real.md").read_text()
    # A rerun reports every cell from its record: nothing is evaluated (or trained) again.
    evals = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval_*.json")}
    assert evals and run_voc_real(str(VOC_ROOT), str(out), str(tmp_path / "runs"), ks=(1,), budget="tiny", jobs=1,
                                  figure_images=1, overrides=TINY_ENCODER) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("eval_*.json")} == evals
    assert json.loads((out / "voc_real.json").read_text())["records"] == r["records"]
    info = json.loads((tmp_path / "runs" / "seed0" / "maskonly_k1" / "model.json").read_text())
    assert info["model"] == "maskonly_enc" and "pretrained" not in info["model_kwargs"]
    assert info["model_kwargs"]["decoder_stride"] == 4  # the recipe's, for both decoders
    (mo_stage,) = info["stages"].values()  # equal effort: cls + seg steps, with the decoders' optimizer
    saved = json.loads((tmp_path / "runs" / "seed0" / "maskonly_k1" / "config.json").read_text())
    assert mo_stage["steps"] == saved["cls"]["steps"] + saved["seg"]["steps"]
    assert {k: saved["deconv"][k] for k in ("optimizer", "lr")} == {k: saved["seg"][k] for k in ("optimizer", "lr")}
    dn_run = str(tmp_path / "runs" / "seed0" / "decouplednet_k1")
    dn = json.loads((Path(dn_run) / "model.json").read_text())
    assert dn["model"] == "decouplednet_enc" and dn["stages"]["seg"]["steps"] == 2
    from hetseg.engine.train import resolve_precision

    assert dn["stages"]["seg"]["precision"] == resolve_precision("auto")  # "auto" is resolved and recorded
    md = (out / "voc_real.md").read_text()
    assert "masks-only" in md and "hetseg bench voc-real" in md and (out / "voc_real.png").stat().st_size > 0
    assert "DecoupledNet, ground-truth image labels" in md  # what the classifier costs, beside it
    mo = next(c for c in r["records"] if c["method"] == "maskonly")
    # The decoder's loss curve per cell (one point per tenth of its steps; tiny runs have < 10 steps).
    for c in r["records"]:
        steps = c["steps"]["deconv" if c["method"] == "maskonly" else "seg"]
        assert [s for s, _ in c["decoder_loss"]] == list(range(1, steps + 1)), c["method"]
    assert "## Training loss of the decoder" in md and f"| masks-only k=1 | {mo['decoder_loss'][0][1]:.3f}" in md
    assert all((c["miou_gt"] is None) == (c["method"] == "maskonly") for c in r["records"])
    about = json.loads((tmp_path / "runs" / "ship_about.json").read_text())  # the shipped model's record
    assert about["run"] == dn_run and about["scores"]["eval_miou"] == next(
        c["miou"] for c in r["records"] if c["run"] == dn_run)
    assert set(about["splits"]) == {"weak", "strong_1", "eval", "division_seed"}


def test_voc_real_without_the_imagenet_extra_writes_nothing(tmp_path, monkeypatch):
    """The recipe's EfficientNet-Lite0 starts from the `imagenet` extra's weights: without the package the
    bench is refused in one line before it divides the photos, so no runs folder is left half made."""
    import hetseg.models.efficientnet as eff
    from hetseg.bench.voc_real import run_voc_real
    from hetseg.errors import HetsegError

    monkeypatch.setattr(eff, "WEIGHTS_PACKAGE", "no_such_weights_package_here")
    with pytest.raises(HetsegError, match="hetseg\\[imagenet\\]"):
        run_voc_real(str(VOC_ROOT), str(tmp_path / "out"), str(tmp_path / "runs"), ks=(1,), budget="tiny", jobs=1)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
