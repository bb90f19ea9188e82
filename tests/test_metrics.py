"""The VOC devkit metric: known answers, a port of VOCevalseg.m, torchmetrics agreement, bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hetseg.errors import DataError
from hetseg.metrics import ConfusionMatrix, cli_score, format_table, score_dirs
from hetseg.palette import save_index_png


def devkit_voc_evalseg(pairs, nclasses_plus_bg: int) -> np.ndarray:
    """Direct port of VOCevalseg.m's arithmetic (percent IoU per class).

    MATLAB: ``locs = gtim < 255; sumim = 1 + gtim + resim*num; hs = histc(sumim(locs), 1:num*num);
    confcounts(:) = confcounts(:) + hs(:)``, then per class ``gtj = sum(confcounts(j,:))``,
    ``resj = sum(confcounts(:,j))``, ``100*gtjresj/(gtj+resj-gtjresj)``. ``confcounts(:)`` is
    column-major, hence ``order='F'``; histc over 1..num*num of 1+k is bincount of k.
    """
    num = nclasses_plus_bg
    confcounts = np.zeros((num, num), np.int64)
    for gtim, resim in pairs:
        locs = gtim < 255
        sumim = gtim.astype(np.int64) + resim.astype(np.int64) * num  # 0-based: sumim - 1
        hs = np.bincount(sumim[locs], minlength=num * num)
        confcounts += hs.reshape(num, num, order="F")
    acc = np.zeros(num)
    for j in range(num):
        gtj = confcounts[j, :].sum()
        resj = confcounts[:, j].sum()
        gtjresj = confcounts[j, j]
        acc[j] = 100 * gtjresj / (gtj + resj - gtjresj)
    return acc


def random_pair(rng, C, shape=(13, 17), classes=None, void=0.1):
    classes = np.arange(C) if classes is None else np.asarray(classes)
    gt = rng.choice(classes, shape).astype(np.uint8)
    # predictions agree with gt 60% of the time, otherwise a random allowed class
    pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(classes, shape)).astype(np.uint8)
    gt[rng.random(shape) < void] = 255
    return pred, gt


def test_known_answer_with_ignore_and_absent_class():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])  # the pixel under gt 255 is skipped
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    s = cm.compute()
    np.testing.assert_array_equal(s.confusion[:3, :3], [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_allclose(s.iou[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(s.iou[3]) and s.absent == [3]
    assert s.miou == pytest.approx(1 / 3)  # class 3 excluded, class 2 (in gt, never right) counts 0
    assert s.pixel_acc == pytest.approx(3 / 5)
    assert s.mean_acc == pytest.approx((1 / 2 + 1 + 0) / 3)
    d = s.to_dict(["bg", "a", "b", "c"])
    assert d["iou"]["c"] is None and d["absent"] == ["c"]
    json.dumps(d)  # JSON-safe
    table = format_table(s, ["bg", "a", "b", "c"])
    assert "33.3" in table and "66.7" in table and "absent" in table and table.splitlines()[0].split()[-1] == "mean"


def test_class_predicted_but_absent_from_gt_scores_zero_and_counts():
    gt = np.zeros((2, 2), np.uint8)
    pred = np.array([[0, 1], [0, 0]], np.uint8)
    s = ConfusionMatrix(3)
    s.update(pred, gt)
    r = s.compute()
    assert r.iou[1] == 0.0 and r.absent == [2]
    assert r.miou == pytest.approx((3 / 4 + 0) / 2)


def test_matches_devkit_port_on_random_cases():
    rng = np.random.default_rng(0)
    for C in (3, 6, 21):
        pairs = [random_pair(rng, C, shape=tuple(rng.integers(5, 30, 2))) for _ in range(5)]
        cm = ConfusionMatrix(C)
        for p, g in pairs:
            cm.update(p, g)
        ref = devkit_voc_evalseg([(g, p) for p, g in pairs], C)
        np.testing.assert_allclose(100 * cm.compute().iou, ref, atol=1e-9)
        assert 100 * cm.compute().miou == pytest.approx(ref.mean(), abs=1e-9)


def test_agrees_with_torchmetrics_macro_jaccard_with_absent_classes():
    from torchmetrics.classification import MulticlassJaccardIndex

    rng = np.random.default_rng(1)
    C = 8
    tm = MulticlassJaccardIndex(num_classes=C, ignore_index=255, average="macro")
    cm = ConfusionMatrix(C)
    for _ in range(6):
        p, g = random_pair(rng, C, classes=[0, 1, 2, 4, 5])  # 3, 6, 7 never occur anywhere
        tm.update(torch.from_numpy(p).long()[None], torch.from_numpy(g).long()[None])
        cm.update(torch.from_numpy(p)[None], g[None])  # torch and numpy inputs, (N, H, W)
    s = cm.compute()
    assert s.absent == [3, 6, 7] and s.num_images == 6
    assert s.miou == pytest.approx(float(tm.compute()), abs=1e-6)


def test_dataset_accumulation_differs_from_mean_of_per_image_miou():
    # image 1: large, mostly right; image 2: tiny object missed. Per-image averaging weighs them equally.
    g1 = np.zeros((10, 10), np.uint8); g1[:5] = 1
    p1 = g1.copy()
    g2 = np.zeros((10, 10), np.uint8); g2[0, 0] = 1
    p2 = np.zeros_like(g2)
    cm = ConfusionMatrix(2)
    per_image = []
    for p, g in ((p1, g1), (p2, g2)):
        cm.update(p, g)
        one = ConfusionMatrix(2)
        one.update(p, g)
        per_image.append(one.compute().miou)
    dataset = cm.compute().miou
    assert dataset == pytest.approx((149 / 150 + 50 / 51) / 2)  # bg: TP 149, gt 149, pred 150
    assert abs(dataset - np.mean(per_image)) > 0.2  # (1 + (99/100 + 0)/2) / 2 = 0.7475 vs 0.985


def test_merge_equals_single_accumulator_and_bad_updates_raise():
    rng = np.random.default_rng(2)
    pairs = [random_pair(rng, 5) for _ in range(4)]
    a, b, whole = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for i, (p, g) in enumerate(pairs):
        (a if i % 2 else b).update(p, g)
        whole.update(p, g)
    np.testing.assert_array_equal(a.merge(b).matrix, whole.matrix)
    assert a.num_images == 4
    with pytest.raises(ValueError, match="prediction values"):
        whole.update(np.full((2, 2), 5), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        whole.update(np.zeros((2, 3)), np.zeros((2, 2)))


@pytest.fixture()
def pngs(tmp_path):
    rng = np.random.default_rng(3)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    pairs = {}
    for sid in ("a", "b", "c"):
        p, g = random_pair(rng, 4, shape=(9, 11))
        save_index_png(gt_dir / f"{sid}.png", g)
        pred_dir.mkdir(exist_ok=True)
        Image.fromarray(p, mode="L").save(pred_dir / f"{sid}.png")  # greyscale predictions are fine
        pairs[sid] = (p, g)
    return pred_dir, gt_dir, pairs


def test_score_dirs_and_cli(pngs, tmp_path, capsys):
    pred_dir, gt_dir, pairs = pngs
    cm = ConfusionMatrix(4)
    for p, g in pairs.values():
        cm.update(p, g)
    (gt_dir / "zzz.png").mkdir()  # a folder is no ground truth (it was "ground-truth file not found")
    s = score_dirs(pred_dir, gt_dir, 4)
    np.testing.assert_array_equal(s.confusion, cm.matrix)
    assert s.num_images == 3
    (tmp_path / "classes.txt").write_text("background\nx\ny\nz\n")
    assert cli_score(pred_dir, gt_dir, classes_file=tmp_path / "classes.txt", json_out=tmp_path / "s.json") == 0
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["miou"] == pytest.approx(s.miou) and set(out["iou"]) == {"background", "x", "y", "z"}
    assert "background" in capsys.readouterr().out


def test_score_dirs_bad_inputs_name_the_file(pngs):
    pred_dir, gt_dir, _ = pngs
    (pred_dir / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png.*not found") as e:
        score_dirs(pred_dir, gt_dir, 4)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((9, 10), np.uint8), mode="L").save(pred_dir / "b.png")
    with pytest.raises(DataError, match=r"b\.png.*10x9.*11x9"):
        score_dirs(pred_dir, gt_dir, 4)
    Image.fromarray(np.full((9, 11), 7, np.uint8), mode="L").save(pred_dir / "b.png")
    with pytest.raises(DataError, match=r"b\.png: values \[7\] outside 0\.\.3"):
        score_dirs(pred_dir, gt_dir, 4)
    Image.fromarray(np.zeros((9, 11), np.uint8), mode="L").save(pred_dir / "b.png")
    save_index_png(gt_dir / "c.png", np.full((9, 11), 9, np.uint8))
    with pytest.raises(DataError, match=r"c\.png: mask has values \{9\}"):
        score_dirs(pred_dir, gt_dir, 4)
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(pred_dir / "b.png")
    with pytest.raises(DataError, match=r"b\.png: mask is RGB"):
        score_dirs(pred_dir, gt_dir, 4)


def test_float_label_maps_are_refused_not_truncated():
    """0.7 used to count as class 0."""
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="prediction must hold integer class indices, got float64 values such as 0.7"):
        cm.update(np.full((2, 2), 0.7), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="ground truth must hold integer class indices"):
        cm.update(np.zeros((2, 2), np.int64), np.full((2, 2), 1.5, np.float32))
    cm.update(np.ones((2, 2)), np.zeros((2, 2), np.float32))  # whole numbers in a float array are indices
    assert cm.matrix[0, 1] == 4


def test_a_classes_file_not_utf8_a_folder_or_with_a_name_twice_is_one_error_line(tmp_path):
    """read_classes_file (score, eval) and the run's own class list (train, eval) both read UTF-8."""
    from hetseg.config import Config
    from hetseg.engine.context import class_names
    from hetseg.errors import HetsegError
    from hetseg.metrics import read_classes_file

    bad = tmp_path / "classes.txt"
    bad.write_bytes(b"background\n\xff\xfecat\n")
    with pytest.raises(DataError, match="UTF-8") as e:
        read_classes_file(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(DataError, match="a folder, not a classes file"):
        read_classes_file(tmp_path)
    (tmp_path / "twice.txt").write_text("background\ncat\ndog\ncat\n")
    with pytest.raises(DataError, match="'cat' on lines 2 and 4"):
        read_classes_file(tmp_path / "twice.txt")
    with pytest.raises(HetsegError, match="UTF-8") as e:
        class_names(Config().override([f"data.root={tmp_path}", "data.num_classes=2"]))
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


@pytest.mark.parametrize("n", [1, 256])
def test_a_classes_file_holds_as_many_classes_as_num_classes_may_be(tmp_path, n):
    """score --classes took a 1-line file (background only) and a 300-line one, where --num-classes refuses
    anything outside [2, 255]: masks are 8-bit with 255 void."""
    from hetseg.metrics import read_classes_file

    f = tmp_path / "classes.txt"
    f.write_text("".join(f"c{i}\n" for i in range(n)))
    with pytest.raises(DataError, match=f"{n} class names?, expected 2 to 255") as e:
        read_classes_file(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    f.write_text("".join(f"c{i}\n" for i in range(255)))
    assert len(read_classes_file(f)) == 255


def test_the_runs_own_classes_file_with_a_blank_line_inside_is_refused_not_shifted(tmp_path):
    """A blank line inside ROOT/classes.txt used to be skipped by the run's reader, so 'dog' named class 2
    while score and eval (read_classes_file) refused the file: one reader now, trailing blank lines allowed."""
    from hetseg.config import Config
    from hetseg.engine.context import class_names
    from hetseg.errors import HetsegError

    cfg = Config().override([f"data.root={tmp_path}", "data.num_classes=3"])
    (tmp_path / "classes.txt").write_text("background\ncat\n\ndog\n")
    with pytest.raises(HetsegError, match="blank line inside") as e:
        class_names(cfg)
    assert "\n" not in str(e.value) and "classes.txt" in str(e.value)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n\n")
    assert class_names(cfg) == ["background", "cat", "dog"]
    # names given in the config twice: refused before training, since model.json refuses them on load
    with pytest.raises(HetsegError, match="data.class_names: 'cat' is given twice"):
        class_names(cfg.override(["data.class_names=[background, cat, cat]"]))


def test_classifier_val_map_skips_a_class_without_positives_and_says_nothing(recwarn):
    """Review s16 (finding 10): torchmetrics' macro mean counted a class absent from val as AP 0, with a warning
    on the console, so a val split missing one of three classes capped mAP at 0.67 for a perfect classifier."""
    import torch
    from torchmetrics.classification import MultilabelAveragePrecision

    from hetseg.methods.decouplednet.stages import mean_ap_over_present

    metric = MultilabelAveragePrecision(num_labels=3, average="none")
    metric.update(torch.tensor([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3]]), torch.tensor([[1, 0, 0], [0, 1, 0]]))
    assert float(mean_ap_over_present(metric)) == 1.0
    assert not [w for w in recwarn if "positive" in str(w.message)]
    g = torch.Generator().manual_seed(0)  # every class present: the macro mean, unchanged
    p, t = torch.rand(50, 3, generator=g), (torch.rand(50, 3, generator=g) > 0.5).long()
    metric.reset()
    metric.update(p, t)
    macro = MultilabelAveragePrecision(num_labels=3, average="macro")(p, t)
    assert torch.isclose(mean_ap_over_present(metric), macro)
