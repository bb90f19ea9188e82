"""``hetseg bench table1`` end to end on a tiny generated dataset with the "tiny" budget.

One module-scoped bench run (k in {5, full}, one seed) feeds every test; a rerun must skip all
finished cells; the DecoupledNet cells must share one classifier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hetseg.bench.provenance import check_recipe
from hetseg.bench.table1 import run_table1
from hetseg.bench.table1_recipe import KS, METHODS, base_config, cell_config, strong_split_file
from hetseg.bench.table1_report import PAPER, claims, markdown, summarise
from hetseg.data.records import read_split
from hetseg.errors import HetsegError

from conftest import FMNIST_DIR, REPO

TEST_KS = (5, "full")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from hetseg.data.scenes import generate_scenes

    torch.set_num_threads(1)  # 2 shared cores: do not oversubscribe them
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, seed=1, num_train=120, num_val=16, size=96, fashion_mnist_dir=FMNIST_DIR, workers=1)
    return out


@pytest.fixture(scope="module")
def bench(scenes, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("bench")
    out, runs = base / "results", base / "runs"
    assert run_table1("cpu", [0], str(out), str(scenes), str(runs), budget="tiny", ks=TEST_KS) == 0
    return {"out": out, "runs": runs, "data": scenes, "report": json.loads((out / "table1.json").read_text())}


def test_results_files_have_the_required_fields(bench):
    rep, out = bench["report"], bench["out"]
    for key in ("command", "scale", "seeds", "dataset", "machine", "total_wall_s", "compute_wall_s", "paper",
                "equal_effort", "summary", "cells", "budget", "claims"):
        assert key in rep, key
    assert rep["command"].startswith("hetseg bench table1 --scale cpu --seeds 0")
    assert rep["command"].endswith(" --ks 5 full") and rep["ks"] == [5, "full"]  # a subset of KS is recorded
    assert rep["dataset"]["meta_sha256"] and rep["machine"]["cpu_count"] and rep["machine"]["torch"]
    assert rep["paper"]["decouplednet"]["5"] == 53.1 and rep["paper"]["deconvnet"]["25"] == 38.6
    assert len(rep["cells"]) == len(METHODS) * len(TEST_KS)
    assert rep["stages_wall_last_session_only"] == 0  # nothing was resumed
    names = (bench["data"] / "classes.txt").read_text().split("\n")[:11]
    for c in rep["cells"]:
        assert 0.0 <= c["miou"] <= 1.0 and list(c["iou"]) == names
        assert c["eval_split"]["images"] == 16 and len(c["eval_split"]["checksum"]) == 64
        assert c["train_splits"]["strong"]["checksum"] and c["train_splits"]["strong"]["images"] > 0
        assert c["wall_s"]["eval"] is not None and c["config"]["seed"] == 0
        assert c["config"]["data"]["strong_split"] == strong_split_file(c["k"])
        # Label classifiers' cost: the same run scored with val's true labels (not for DeconvNet).
        assert (c["miou_gt"] is None) == (c["method"] == "deconvnet")
        if c["miou_gt"] is not None:
            assert 0.0 <= c["miou_gt"] <= 1.0
            assert (Path(c["run_dir"]) / "eval_val_gt.json").is_file()
        # Loss curves, one point per tenth (tiny: fewer steps than ten): the classifier's (the shared
        # one for DecoupledNet) and the decoder stage's.
        want = ["deconv"] if c["method"] == "deconvnet" else ["cls", "seg"]
        assert list(c["train_loss"]) == want
        for stage, pts in c["train_loss"].items():
            assert pts and pts[-1][0] == c["steps"][stage] and all(v > 0 for _, v in pts)
    assert set(rep["summary"]) == set(METHODS) and set(rep["summary"]["deconvnet"]) == {"5", "full"}
    assert set(rep["summary_gt"]) == {"decouplednet", "decouplednet-str"}
    assert [c["claim"].split(" (")[0] for c in rep["claims"]] == [  # k = 5 and full were run
        "DecoupledNet > DecoupledNet-Str > DeconvNet at k = 5", "DecoupledNet's lead over DeconvNet shrinks as masks grow",
        "parity at full masks"]
    md = (out / "table1.md").read_text()
    for text in ("| strong / class |", "## Equal effort", "## Per-class IoU", "53.1", rep["command"], "T-shirt/top",
                 "## Predicted vs true image labels", "DecoupledNet, true labels", "## The paper's claims", "## Training loss per stage", "(weak-set classifier) | all | 0 | cls"):
        assert text in md, text
    assert (out / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decouplednet_cells_share_one_classifier(bench):
    runs, rep = bench["runs"] / "seed0", bench["report"]
    assert (runs / "weak_classifier" / "cls" / "done.json").is_file()
    for k in TEST_KS:  # the cls stage ran once, in weak_classifier, not in any DecoupledNet cell
        assert not (runs / f"decouplednet_k{k}" / "cls").exists()
        assert (runs / f"decouplednet_k{k}" / "seg" / "done.json").is_file()
    dn = [c for c in rep["cells"] if c["method"] == "decouplednet"]
    assert all(c["cls_shared"] and c["steps"]["cls"] == 4 for c in dn)
    assert len({c["train_splits"]["weak"]["checksum"] for c in dn}) == 1
    assert dn[0]["train_splits"]["weak"]["images"] == 120  # the whole weak set


def test_str_classifier_sees_only_the_strong_images(bench):
    rep, runs = bench["report"], bench["runs"] / "seed0"
    s5 = next(c for c in rep["cells"] if c["method"] == "decouplednet-str" and c["k"] == 5)
    strong = s5["train_splits"]["strong"]
    assert not s5["cls_shared"] and s5["train_splits"]["weak"]["images"] == strong["images"] < 120
    done = json.loads((runs / "decouplednet-str_k5" / "cls" / "done.json").read_text())
    assert done["train_samples"] == strong["images"]
    # at "full" the strong images are the weak set: the cell is DecoupledNet's, not retrained
    sf = next(c for c in rep["cells"] if c["method"] == "decouplednet-str" and c["k"] == "full")
    dnf = next(c for c in rep["cells"] if c["method"] == "decouplednet" and c["k"] == "full")
    assert sf["same_as"] == "decouplednet" and sf["miou"] == dnf["miou"]
    assert not (runs / "decouplednet-str_kfull").exists()


def test_equal_effort_budget(bench):
    cells = bench["report"]["cells"]
    for c in cells:
        cfg = c["config"]
        total = sum(v for v in c["steps"].values() if v)
        assert total == cfg["cls"]["steps"] + cfg["seg"]["steps"], (c["method"], c["steps"])
        # DeconvNet: seg's batch and crops, the classifiers' optimizer (both protocols)
        opt_keys = ("optimizer", "lr", "momentum", "weight_decay", "lr_step")
        assert bench["report"]["init"] == "pretrained" and cfg["model"]["backbone"]
        assert {k: cfg["deconv"][k] for k in opt_keys} == {k: cfg["cls"][k] for k in opt_keys}
        assert {k: v for k, v in cfg["deconv"].items() if k not in (*opt_keys, "steps")} == \
               {k: v for k, v in cfg["seg"].items() if k not in (*opt_keys, "steps")}
    base = base_config("cpu", 0, "data/fashion-scenes")  # the rule on the real defaults (from scratch)
    assert base.deconv.steps == base.seg.steps + base.cls.steps and base.deconv.batch_size == base.seg.batch_size
    assert base.deconv.optimizer == base.cls.optimizer == "adam" and not base.model.backbone
    pre = base_config("cpu", 0, "data/fashion-scenes", init="pretrained", backbone="runs/x/backbone")
    assert pre.model.backbone == "runs/x/backbone" and (pre.cls.steps, pre.cls.lr, pre.seg.steps) == (3000, 2e-3, 2400)
    assert pre.deconv.steps == 2400 + 3000 and (pre.deconv.optimizer, pre.deconv.lr) == ("adam", pre.cls.lr)
    assert base_config("cpu", 0, "d", init="pretrained").model.backbone == "shipped"  # the committed one
    assert not base_config("paper", 0, "d", overrides=["model.vgg_weights=vgg.pth"], init="pretrained").model.backbone


def test_every_network_starts_from_the_one_shared_backbone(bench):
    """The shipped backbone (hetseg bench backbone) is where every network of the pretrained protocol starts."""
    import hashlib

    from hetseg.zoo import BACKBONE_DIR

    rep, runs = bench["report"], bench["runs"]
    b, shipped = rep["backbone"], BACKBONE_DIR / "backbone.safetensors"
    assert (Path.cwd() / b["file"]).resolve() == shipped.resolve()  # recorded relative to the working directory
    assert b["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert b["sha256"] == json.loads((BACKBONE_DIR / "backbone.json").read_text())["sha256"]
    assert b["command"] == "hetseg bench backbone" and b["held_out_acc"] > 0.5
    trained_fresh = [c for c in rep["cells"] if not c.get("same_as")]
    assert all(c["config"]["model"]["backbone"] == "shipped" for c in trained_fresh)
    shared = json.loads((runs / "seed0" / "weak_classifier" / "config.json").read_text())
    assert shared["model"]["backbone"] == "shipped"
    md = (bench["out"] / "table1.md").read_text()
    assert "Initialisation `pretrained`" in md and b["sha256"][:12] in md
    # ...and the config is acted on: a fresh net of a cell config carries the backbone's weights
    from safetensors.torch import load_file

    from hetseg.engine.context import init_weights
    from hetseg.methods import get_method

    state = load_file(str(shipped))
    for method in ("deconvnet", "decouplednet-str"):
        cfg = cell_config(base_config("cpu", 0, str(bench["data"]), "tiny", init="pretrained"), method, 5,
                          bench["runs"] / "fresh")
        net = get_method(cfg.model.name).build(cfg)
        init_weights(net, cfg, None)
        enc = net.encoder if method == "deconvnet" else net.classifier.encoder
        assert all(torch.equal(v, state[f"encoder.{k}"].to(v.dtype)) for k, v in enc.state_dict().items())
    assert rep["command"].split("--init ")[1].startswith("pretrained")


def test_paper_scale_pretrained_without_imagenet_weights_is_one_line(tmp_path, scenes):
    """No shipped backbone at paper scale: refused before anything trains, naming the fix."""
    with pytest.raises(HetsegError, match="at paper scale every network starts from ImageNet VGG-16.*vgg_weights") as e:
        run_table1("paper", [0], str(tmp_path / "out"), str(scenes), str(tmp_path / "runs"), budget="tiny", ks=(5,))
    assert "\n" not in str(e.value) and not (tmp_path / "runs").exists()


def test_rerun_skips_finished_cells(bench, capsys):
    runs = bench["runs"]
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.name in ("eval_val.json", "done.json",
                                                                            "model.safetensors")}
    assert len(stamps) >= 10
    capsys.readouterr()
    assert run_table1("cpu", [0], str(bench["out"]), str(bench["data"]), str(runs), budget="tiny", ks=TEST_KS) == 0
    log = capsys.readouterr().out
    assert log.count("done, skipped") == 5  # 6 cells, one of them DecoupledNet's "full" reported twice
    assert ": stages (" not in log and "weak-set classifier" not in log  # nothing trained
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    rep = json.loads((bench["out"] / "table1.json").read_text())
    assert [c["miou"] for c in rep["cells"]] == [c["miou"] for c in bench["report"]["cells"]]


def test_a_runs_dir_kept_without_weights_still_reports_every_cell(bench, tmp_path, capsys):
    """What git keeps of a runs dir (.gitignore: no weights, checkpoints or predictions): seeds trained in separate sessions
    are reported together without retraining anything (docs/BENCHMARKS.md, "Seeds across sessions")."""
    import shutil

    runs, out = tmp_path / "runs", tmp_path / "results"
    shutil.copytree(bench["runs"], runs, ignore=shutil.ignore_patterns("*.safetensors", "*.ckpt", "predictions_*"))
    capsys.readouterr()
    assert run_table1("cpu", [0], str(out), str(bench["data"]), str(runs), budget="tiny", ks=TEST_KS) == 0
    log = capsys.readouterr().out
    assert "weak-set classifier" not in log and ": stages (" not in log and log.count("done, skipped") == 5
    assert not list(runs.rglob("*.safetensors"))  # nothing was trained
    rep = json.loads((out / "table1.json").read_text())
    keys = ("method", "k", "miou", "miou_gt", "train_loss", "steps", "train_splits")
    assert [[c[x] for x in keys] for c in rep["cells"]] == [[c[x] for x in keys] for c in bench["report"]["cells"]]
    # The classifier's own record gone while every cell needs only it: refused, never a new classifier.
    cls_json = runs / "seed0" / "weak_classifier" / "model.json"
    kept = cls_json.read_bytes()
    cls_json.unlink()
    with pytest.raises(HetsegError, match="weak_classifier/model.json: missing"):
        run_table1("cpu", [0], str(out), str(bench["data"]), str(runs), budget="tiny", ks=TEST_KS)
    assert not list(runs.rglob("*.safetensors"))
    cls_json.write_bytes(kept)
    # A missing DecoupledNet cell needs the shared classifier's weights: refused, never silently retrained
    # (a new classifier would differ from the one behind the seed's other cells).
    shutil.rmtree(runs / "seed0" / "decouplednet_k5")
    with pytest.raises(HetsegError, match="weak_classifier/model.safetensors: missing"):
        run_table1("cpu", [0], str(out), str(bench["data"]), str(runs), budget="tiny", ks=TEST_KS)


def test_a_cell_killed_between_training_and_evaluation_is_evaluated_not_refused(bench, tmp_path, capsys):
    """Its stages are trained, so it must not be handed the classifier as --init-from again (Method.train
    refuses weights it would ignore): the rerun evaluates it from its own weights."""
    import shutil

    runs, out = tmp_path / "runs", tmp_path / "results"
    shutil.copytree(bench["runs"], runs)
    cell = runs / "seed0" / "decouplednet_k5"
    weights = (cell / "model.safetensors").read_bytes()
    (cell / "eval_val.json").unlink()
    capsys.readouterr()
    assert run_table1("cpu", [0], str(out), str(bench["data"]), str(runs), budget="tiny", ks=TEST_KS) == 0
    assert "decouplednet k=5 seed 0: stages ('seg',)" in capsys.readouterr().out
    assert (cell / "model.safetensors").read_bytes() == weights and (cell / "eval_val.json").is_file()
    rep = json.loads((out / "table1.json").read_text())
    assert [c["miou"] for c in rep["cells"]] == [c["miou"] for c in bench["report"]["cells"]]


def test_other_recipe_in_same_runs_dir_is_refused(bench):
    base = base_config("cpu", 0, str(bench["data"]), "tiny", ["seg.steps=5"])
    cfg = cell_config(base, "deconvnet", 5, bench["runs"])
    with pytest.raises(HetsegError, match="another recipe"):
        check_recipe(cfg)


def test_strong_split_labels_json_equals_mask_labels(scenes):
    """DecoupledNet-Str trains its classifier on labels.json labels: they must be the masks' labels.
    (On the generated set; the data the benches use is made by the same generator.)"""
    root = scenes
    for k in KS:
        path = root / strong_split_file(k)
        from_json = read_split(path, root, num_classes=11)
        from_masks = read_split(path, root, labels={}, num_classes=11)  # {}: every label from its mask
        assert [r.labels for r in from_json.records] == [r.labels for r in from_masks.records]
        assert all(r.mask for r in from_json.records)


def test_summary_and_markdown_with_several_seeds():
    cell = lambda m, k, s, v: {"method": m, "k": k, "seed": s, "miou": v, "iou": {"background": v},  # noqa: E731
                               "wall_s": {"seg": 1.0, "eval": 0.5}, "steps": {"seg": 3}, "cls_shared": False,
                               "train_splits": {"strong": {"images": 3}}, "eval_split": {"images": 16},
                               "run_dir": "r", "same_as": None}
    cells = [cell("decouplednet", 5, 0, 0.50), cell("decouplednet", 5, 1, 0.60), cell("deconvnet", 5, 0, 0.2)]
    s = summarise(cells)
    assert s["decouplednet"]["5"]["mean"] == 55.0 and s["decouplednet"]["5"]["n"] == 2
    assert abs(s["decouplednet"]["5"]["std"] - 7.07) < 0.01 and s["deconvnet"]["5"]["std"] is None
    rep = {"ks": [5], "summary": s, "seeds": [0, 1], "command": "c", "budget": "tiny", "overrides": [],
           "scale": "cpu", "dataset": {"root": "d", "meta_sha256": "0" * 64}, "total_wall_s": 60,
           "compute_wall_s": 60, "machine": {"cpu": "x", "usable_cpus": 2, "torch": "t"},
           "equal_effort": "rule", "cells": cells}
    md = markdown(rep)
    assert "55.0 ± 7.1" in md and "| 5 | 55.0 ± 7.1 | 53.1 |" in md and f"{PAPER['deconvnet'][5]}" in md
    assert "lower bound" not in md
    assert "(a lower bound: 2 resumed stages count their last session only)" in markdown(
        {**rep, "stages_wall_last_session_only": 2})


def test_a_stage_resumed_before_walls_spanned_sessions_is_marked(tmp_path):
    """cell_record names the stages whose done.json wall is one session's: resumed, without the
    wall_s_before_resume that the engine now writes (docs/GUARANTEES.md)."""
    from hetseg.bench.table1_report import cell_record

    stages = {"seg": {"wall_s": 9.0, "resumed_from": "last.ckpt"},
              "cls": {"wall_s": 5.0, "resumed_from": "last.ckpt", "wall_s_before_resume": 2.0},
              "pre": {"wall_s": 1.0, "resumed_from": None}}
    (tmp_path / "model.json").write_text(json.dumps({"stages": stages}))
    assert cell_record(tmp_path, "decouplednet", 5, 0)["wall_last_session_only"] == ["seg"]


def test_the_report_says_which_precision_and_device_each_seed_trained_on(tmp_path):
    """`precision: auto` resolves per machine, and seeds of one table may train on different machines (or one
    stage across two): the report counts the sessions of every stage once -- a shared classifier once per
    seed -- by precision and device, and says where a stage trained before sessions were recorded."""
    from hetseg.bench.table1_report import cell_record, write_results

    avx2, bf16 = "AMD EPYC (avx2)", "AMD EPYC (avx2, avx512f, avx512_bf16)"
    cls = tmp_path / "cls"
    cls.mkdir()
    (cls / "model.json").write_text(json.dumps({"stages": {"cls": {"wall_s": 5.0, "precision": "32-true", "sessions": [
        {"from_step": 0, "precision": "32-true", "device": avx2},
        {"from_step": 40, "precision": "bf16-mixed", "device": bf16}]}}}))
    cells = []
    for seed, k in ((0, 5), (0, 10), (1, 5)):
        run = tmp_path / f"s{seed}k{k}"
        run.mkdir()
        seg = ({"wall_s": 2.0, "precision": "bf16-mixed"} if seed else
               {"wall_s": 2.0, "precision": "32-true", "sessions": [{"from_step": 0, "precision": "32-true",
                                                                    "device": avx2}]})
        (run / "model.json").write_text(json.dumps({"stages": {"seg": seg}}))
        (run / "eval_val.json").write_text(json.dumps({"scores": {"miou": 0.5, "iou": {"a": 0.5}}, "split": "val",
                                                            "split_checksum": "0" * 64, "images": 3}))
        cells.append(cell_record(run, "decouplednet", k, seed, cls_run=cls if seed == 0 else None))
    write_results(cells, tmp_path / "out", "c", "cpu", [0, 1], tmp_path, tmp_path, 1.0, "rule",
                  {"ks": [5, 10], "budget": "b", "overrides": []})
    report = json.loads((tmp_path / "out" / "table1.json").read_text())
    last_only = "bf16-mixed on a device not recorded (its stage's last session; earlier ones unknown)"
    assert report["trained_as"] == {"0": {f"32-true on {avx2}": 3, f"bf16-mixed on {bf16}": 1}, "1": {last_only: 1}}
    md = (tmp_path / "out" / "table1.md").read_text()
    assert f"seed 0: 32-true on {avx2} × 3, bf16-mixed on {bf16} × 1; seed 1: {last_only} × 1." in md
    from hetseg.bench.provenance import trained_as_phrase

    assert trained_as_phrase({"0": {}}).endswith("device: seed 0: not recorded.")  # a seed without any: said so


def test_claims_are_judged_on_the_means_and_only_where_run():
    """Ordering per k, a shrinking lead, parity at full: each judged from the summary it is given."""
    summ = lambda **by_k: {m: {k: {"mean": v[i]} for k, v in by_k.items()}  # noqa: E731
                           for i, m in enumerate(("decouplednet", "decouplednet-str", "deconvnet"))}
    got = claims(summ(**{"5": (30, 20, 10), "10": (31, 32, 15), "full": (40, 40, 37)}))
    by = {c["claim"]: c["holds"] for c in got}
    assert by["DecoupledNet > DecoupledNet-Str > DeconvNet at k = 5"] is True
    assert by["DecoupledNet > DecoupledNet-Str > DeconvNet at k = 10"] is False  # -Str ahead at 10
    assert not any("k = 25" in c for c in by)  # not run: left out, not guessed
    assert by["DecoupledNet's lead over DeconvNet shrinks as masks grow (k = 5, 10, full)"] is True  # 20 > 16 > 3
    assert by["parity at full masks (all within 5 points)"] is True
    worse = {c["claim"]: c["holds"] for c in claims(summ(**{"5": (30, 20, 10), "full": (40, 40, 30)}))}
    assert worse["DecoupledNet's lead over DeconvNet shrinks as masks grow (k = 5, full)"] is True
    assert worse["parity at full masks (all within 5 points)"] is False
    only = [c["claim"] for c in claims(summ(**{"5": (30, 20, 10)}))]  # one k: ordering only
    assert only == ["DecoupledNet > DecoupledNet-Str > DeconvNet at k = 5"]


def test_an_ordering_must_hold_on_every_seed_to_be_shown():
    """A mean gap inside the seed spread is 'not shown' (None), not 'holds' -- e.g. the transfer
    bench's TransferNet 60.6 vs BaselineNet 60.2 over three seeds, ahead on two of them."""
    from hetseg.bench.table1_report import claim_lines, ordering

    assert ordering([60.6, 60.2], [(61.2, 59.8), (58.8, 61.2), (61.8, 59.6)]) == (None, "; on 2 of 3 seeds")
    assert ordering([60.6, 46.7], [(61.2, 46.9), (58.8, 46.3), (61.8, 46.9)]) == (True, "; on 3 of 3 seeds")
    assert ordering([40.0, 45.0], [(41, 44), (39, 46)])[0] is False  # fails on the means: does not hold
    assert ordering([30, 20, 10]) == (True, "")  # one seed: the means decide
    line = claim_lines([{"claim": "A > B", "paper": "2 > 1", "here": "60.6 vs 60.2; on 2 of 3 seeds", "holds": None}])
    assert line == ["- **not shown** (within the seed spread): A > B (paper 2 > 1; here 60.6 vs 60.2; on 2 of 3 seeds)"]
    summ = {m: {"5": {"mean": v}} for m, v in zip(("decouplednet", "decouplednet-str", "deconvnet"), (30, 20, 10))}
    seeds = {"decouplednet": {"5": {0: 31, 1: 29}}, "decouplednet-str": {"5": {0: 19, 1: 30}},
             "deconvnet": {"5": {0: 10, 1: 10}}}
    (c,) = claims(summ, seeds)
    assert c["holds"] is None and c["here"].endswith("on 1 of 2 seeds")


def test_ks_from_the_command_line_are_validated(scenes, tmp_path, capsys):
    """Refused before anything is written (the recorded --ks is checked on the bench fixture)."""
    from hetseg.cli import main

    # Out and runs in tmp, two-step stages: were validation to break, nothing long runs in the checkout.
    where = ["--data", str(scenes), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    assert main(["bench", "table1", "cls.steps=2", "seg.steps=2", "--ks", "5", "0", *where]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hetseg: error: --ks: '0' is not a mask budget; fix: give images per class (5, 10, 25) or 'full'"]
    assert main(["bench", "table1", "cls.steps=2", "seg.steps=2", "--ks", "\u00b2", *where]) == 2  # "²".isdigit()
    assert capsys.readouterr().err.strip().splitlines() == [f"hetseg: error: --ks: '\u00b2' is not a mask budget; fix: "
                                                           "give images per class (5, 10, 25) or 'full'"]
    assert main(["bench", "table1", "cls.steps=2", "seg.steps=2", "--ks", "full", "full", *where]) == 2
    assert "repeats a budget" in capsys.readouterr().err and not list(tmp_path.iterdir())


# Each case carries a guard so that, were the check to break, it fails fast instead of training: a bad
# config key, or the backbone's 4-step budget. (Positional overrides go first: argparse cannot take
# them after an option.)
@pytest.mark.parametrize("argv, flag, readers", [
    (["table1", "nosuch.key=1", "--budget", "tiny"], "--budget", "only backbone reads it"),
    (["transfer", "nosuch.key=1", "--ks", "5"], "--ks", "only table1 reads it"),
    (["dis", "nosuch.key=1", "--init", "scratch"], "--init", "only table1 reads it"),
    (["dis", "nosuch.key=1", "--family", "resnet"], "--family", "only backbone reads it"),
    (["backbone", "--budget", "tiny", "--seeds", "1"], "--seeds", "only dis, table1, transfer and voc-real read it"),
    (["backbone", "cls.steps=2", "--budget", "tiny"], "key=value overrides",
     "only dis, table1, transfer and voc-real read it"),
])
def test_a_bench_option_the_bench_does_not_read_is_refused(argv, flag, readers, tmp_path, capsys):
    """Silently ignoring e.g. --budget tiny on table1 would start hours of training the user did not ask for."""
    from hetseg.cli import main

    assert main(["bench", *argv, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hetseg: error: {flag}: not read by 'hetseg bench {argv[0]}' ({readers}); fix: drop {flag}"]
    assert not list(tmp_path.iterdir())


def test_bf16_channels_last_speed_reaches_every_stage_from_scratch(scenes, tmp_path):
    """Also the --init scratch protocol: no backbone, DeconvNet with the classifiers' optimizer,
    results under table1_scratch.*."""
    out, runs = tmp_path / "results", tmp_path / "runs"
    assert run_table1("cpu", [0], str(out), str(scenes), str(runs), budget="tiny", ks=(5,), speed="bf16+cl",
                      init="scratch") == 0
    assert not (out / "table1.json").exists() and (out / "table1_scratch.png").is_file()
    rep = json.loads((out / "table1_scratch.json").read_text())
    assert rep["speed"] == "bf16+cl" and rep["precision"] == "bf16-mixed" and rep["channels_last"] is True
    assert rep["init"] == "scratch" and rep["backbone"] is None and not (runs / "backbone").exists()
    for c in rep["cells"]:  # part of the recipe of every stage, so resuming checks it
        for st in ("cls", "seg", "deconv"):
            assert c["config"][st]["precision"] == "bf16-mixed" and c["config"][st]["channels_last"] is True
        assert 0.0 <= c["miou"] <= 1.0 and c["config"]["model"]["backbone"] == ""
        assert c["config"]["deconv"]["optimizer"] == c["config"]["cls"]["optimizer"]
    trained = [json.loads(p.read_text()) for p in runs.rglob("*/done.json")]  # what the trainer really used
    assert {d["stage"] for d in trained} == {"cls", "seg", "deconv"}
    assert all(d["precision"] == "bf16-mixed" for d in trained), [(d["stage"], d["precision"]) for d in trained]
    with pytest.raises(HetsegError, match="another recipe"):  # same runs dir, fp32: refused before training
        run_table1("cpu", [0], str(out), str(scenes), str(runs), budget="tiny", ks=(5,), speed="fp32", init="scratch")
    assert base_config("cpu", 0, "d", speed="fp32").deconv.precision == "32-true"


def test_parallel_cells_match_sequential(scenes, bench, tmp_path):
    """jobs=2: cells in two single-thread processes; same cells, same order, one shared classifier."""
    out, runs = tmp_path / "results", tmp_path / "runs"
    assert run_table1("cpu", [0], str(out), str(scenes), str(runs), budget="tiny", ks=TEST_KS, jobs=2) == 0
    rep = json.loads((out / "table1.json").read_text())
    seq = bench["report"]["cells"]
    assert [(c["method"], c["k"]) for c in rep["cells"]] == [(c["method"], c["k"]) for c in seq]
    assert len(list(runs.rglob("cls/done.json"))) == 2  # the shared classifier + DecoupledNet-Str k=5
    for a, b in zip(rep["cells"], seq):  # same recipe, data and seed: same splits, budgets and scores
        assert a["train_splits"] == b["train_splits"] and a["steps"] == b["steps"]
        assert a["miou"] == b["miou"], (a["method"], a["k"])  # one thread in both: bit-identical training


def test_demo_starts_from_the_shipped_backbone():
    """`make demo` is the pretrained protocol's recipe, shortened: the shipped backbone, the same
    classifier optimizer as Table 1's fine-tuning (its lr is the demo's own, docs/DECISIONS.md "Demo recipe")."""
    from hetseg.demo import demo_config

    cfg = demo_config("data/fashion-scenes", "runs/demo")
    pre = base_config("cpu", 0, "data/fashion-scenes", init="pretrained")
    assert cfg.model.backbone == pre.model.backbone == "shipped" and cfg.cls.optimizer == pre.cls.optimizer
    assert cfg.cls.steps < pre.cls.steps and cfg.seg.steps < pre.seg.steps and cfg.data.root == "data/fashion-scenes"


def test_a_recipe_change_blocks_only_the_runs_that_read_it(tmp_path):
    """Changing DIS's budgets must not refuse a finished Table 1 cell, but must refuse a DIS run; a
    change in a section every method reads (cls) refuses both."""
    from hetseg.config import Config

    for name in ("decouplednet", "dis"):
        run = tmp_path / name
        run.mkdir()
        cfg = Config(run_dir=str(run)).override([f"model.name={name}"])
        cfg.save(run / "config.json")
        check_recipe(cfg)  # the same recipe: accepted
        dis_changed = cfg.override(["dis.joint.steps=7"])
        if name == "dis":
            with pytest.raises(HetsegError, match=r"another recipe \(differs in \['dis\.joint\.steps'\]\)"):
                check_recipe(dis_changed)
        else:
            check_recipe(dis_changed)
        with pytest.raises(HetsegError, match=r"differs in \['cls\.steps'\]"):
            check_recipe(cfg.override(["cls.steps=7"]))
        check_recipe(cfg.override(["data.workers=3", "cls.checkpoint_every=7", "seg.val_every=5"]))  # never the weights
        older = cfg.to_dict()
        del older["model"]["decoder_stride"]  # a run saved before that field existed trained with its default
        assert cfg.recipe_difference(older) == []


def test_one_worker_runs_a_seeds_decouplednet_cells_first():
    """--jobs 1 ran cells in grid order, so -Str k=5 (no classifier needed) went before DecoupledNet k=10."""
    from hetseg.bench.table1 import sequential_order

    todo = [(s, k, m) for s in (0, 1) for k in (5, 10, "full") for m in METHODS]
    got = sequential_order(todo, 1)
    assert got[:3] == [(1, 5, "decouplednet"), (1, 10, "decouplednet"), (1, "full", "decouplednet")]
    assert sorted(got, key=str) == sorted((t for t in todo if t[0] == 1), key=str)
    assert got[3:] == [t for t in todo if t[0] == 1 and t[2] != "decouplednet"]


def test_decouplednet_cells_are_queued_before_the_cells_that_need_no_classifier():
    """--jobs 2, seeds 0 and 1: seed 0's classifier is already done (a rerun), seed 1's trains. A
    classifier's weights do not outlive a session, so its DecoupledNet cells go first -- but no
    worker may sit idle while seed 1's classifier trains: a DeconvNet cell must start beside it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hetseg.bench.table1 import queue_cells

    started, lock, beside = [], threading.Lock(), threading.Event()

    def task(name, blocks=False):
        with lock:
            started.append(name)
        if name[2] in ("deconvnet", "decouplednet-str"):
            beside.set()
        if blocks and not beside.wait(10):  # nobody was started beside this classifier: an idle worker
            started.append("idle")
        return f"cls{name[0]}" if name[2] == "cls" else name

    todo = [(s, k, m) for s in (0, 1) for k in (5, 10) for m in METHODS]
    with ThreadPoolExecutor(2) as pool:
        futs = queue_cells(lambda s: pool.submit(task, (s, 0, "cls"), s == 1),
                           lambda t, cls_run: pool.submit(task, (*t, cls_run)), (0, 1), todo, 2)
        got = {t: f.result() for t, f in futs.items()}
    assert "idle" not in started and sorted(got) == sorted(todo)
    assert all(got[t][3] == (f"cls{t[0]}" if t[2] == "decouplednet" else None) for t in todo)
    pos = {n[:3]: i for i, n in enumerate(started) if n != "idle"}
    for s in (0, 1):  # every DecoupledNet cell after its classifier
        assert all(pos[(s, k, "decouplednet")] > pos[(s, 0, "cls")] for k in (5, 10))
    first_other = min(pos[t] for t in todo if t[2] != "decouplednet")
    assert all(pos[(0, k, "decouplednet")] < first_other for k in (5, 10))  # seed 0's classifier was ready first


def test_the_table1_figure_draws_a_data_folder_name_as_typed(tmp_path):
    """The title names the data set (meta.json's name, else the folder's); a `$` in it went to matplotlib's
    TeX parser, which raised at the end of a finished bench (here on the malformed math between the `$`s)."""
    from hetseg.bench.table1_report import figure

    report = {"summary": {}, "ks": [5, "full"], "dataset": {"name": "cars$_{$2"}, "scale": "cpu", "seeds": [0]}
    figure(report, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
