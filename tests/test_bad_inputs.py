"""One test per bad input: each must raise a one-line DataError that names the offending file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import VOC_ROOT
from PIL import Image

from hetseg.data.coco import decode_segmentation, load_coco, load_remap, read_panoptic_png
from hetseg.data.io import check_pair, read_image, read_mask, read_pair, rgb_to_index
from hetseg.data.records import Record, load_cls_labels_npy, read_split
from hetseg.data.sbd import load_sbd_cls
from hetseg.data.voc import read_voc_instances, read_voc_xml, voc_split
from hetseg.errors import DataError

pytestmark = pytest.mark.usefixtures("fixtures")

JPG = VOC_ROOT / "JPEGImages" / "2007_000032.jpg"
PNG = VOC_ROOT / "SegmentationClass" / "2007_000032.png"


def raises_one_line(fn, *args, name: str, contains: str = "", **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert name in msg, msg
    assert contains in msg, msg
    return msg


def test_corrupt_image(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    raises_one_line(read_image, p, name="noise.jpg", contains="cannot decode image")


def test_truncated_image(tmp_path):
    p = tmp_path / "half.jpg"
    p.write_bytes(JPG.read_bytes()[: JPG.stat().st_size // 2])
    raises_one_line(read_image, p, name="half.jpg", contains="truncated")


def test_missing_image(tmp_path):
    raises_one_line(read_image, tmp_path / "gone.jpg", name="gone.jpg", contains="not found")


def test_a_side_too_long_a_pipe_and_a_dangling_link_are_named(tmp_path):
    """A 1 x 70000 PNG is a few hundred bytes; a pipe and a dangling link were "file not found"."""
    import os

    Image.new("L", (70000, 1)).save(tmp_path / "strip.png")
    raises_one_line(read_image, tmp_path / "strip.png", name="strip.png", contains="70000x1 (WxH), a side above 65535")
    from conftest import fails_instead_of_hanging  # reading a pipe, were the check lost, blocks for ever

    os.mkfifo(tmp_path / "pipe.jpg")
    with fails_instead_of_hanging():
        raises_one_line(read_image, tmp_path / "pipe.jpg", name="pipe.jpg", contains="not a regular file")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    raises_one_line(read_image, tmp_path / "gone.jpg", name="gone.jpg", contains="symlink that leads nowhere")
    # a split file too (both were "split file not found")
    os.mkfifo(tmp_path / "split.txt")
    with fails_instead_of_hanging():
        raises_one_line(read_split, tmp_path / "split.txt", name="split.txt", contains="not a regular file")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    raises_one_line(read_split, tmp_path / "gone.txt", name="gone.txt", contains="symlink that leads nowhere")


def test_rgb_mask(tmp_path):
    p = tmp_path / "rgb_mask.png"
    Image.open(PNG).convert("RGB").save(p)
    raises_one_line(read_mask, p, name="rgb_mask.png", contains="mask is RGB, not palette indices")


def test_rgba_mask(tmp_path):
    p = tmp_path / "rgba_mask.png"
    Image.open(PNG).convert("RGBA").save(p)
    raises_one_line(read_mask, p, name="rgba_mask.png", contains="rgb_to_index")


def test_out_of_range_mask_value(tmp_path):
    a = np.array(Image.open(PNG))
    a[0, :3] = [21, 30, 30]
    Image.fromarray(a, mode="L").save(tmp_path / "bad_values.png")
    raises_one_line(read_mask, tmp_path / "bad_values.png", num_classes=21, name="bad_values.png",
                    contains="values {21, 30} outside [0, 21)")


def test_16bit_mask_too_wide(tmp_path):
    Image.fromarray(np.full((2, 2), 300, dtype=np.uint16)).save(tmp_path / "wide.png")
    raises_one_line(read_mask, tmp_path / "wide.png", name="wide.png", contains="[300, 300]")


def test_image_mask_size_mismatch(tmp_path):
    root = tmp_path / "ds"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    shutil.copyfile(VOC_ROOT / "JPEGImages" / "2007_000033.jpg", root / "JPEGImages" / "a.jpg")  # 366 x 500
    shutil.copyfile(PNG, root / "SegmentationClass" / "a.png")  # 281 x 500
    msg = raises_one_line(read_pair, root, Record("a", "JPEGImages/a.jpg", (1,), "SegmentationClass/a.png"), 21,
                          name="a.png", contains="281x500")
    assert "a.jpg" in msg and "366x500" in msg
    raises_one_line(check_pair, "x.jpg", "y.png", np.zeros((2, 3, 3)), np.zeros((3, 2)), name="y.png")


def test_missing_file_in_split(tmp_path):
    root = tmp_path / "ds"
    (root / "JPEGImages").mkdir(parents=True)
    shutil.copyfile(JPG, root / "JPEGImages" / "a.jpg")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("JPEGImages/a.jpg\nJPEGImages/b.jpg\n")
    (root / "labels.json").write_text('{"a": [1], "b": [2]}')
    raises_one_line(read_split, root / "splits" / "train.txt", name="train.txt", contains="'JPEGImages/b.jpg'")


def test_missing_file_in_voc_image_set():
    raises_one_line(voc_split, VOC_ROOT, "val", name="val.txt", contains="2007_000042.jpg")  # fixture lists 1449 ids


def test_split_path_escaping_root(tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "evil.txt").write_text("JPEGImages/ok.jpg\n../x.jpg\n")
    raises_one_line(read_split, tmp_path / "splits" / "evil.txt", check_files=False, name="evil.txt",
                    contains="line 2: path '../x.jpg' escapes")


def test_malformed_xml(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><size><width>5</width></annotation>")
    raises_one_line(read_voc_xml, tmp_path / "bad.xml", name="bad.xml", contains="malformed XML")


def test_xml_without_size(tmp_path):
    (tmp_path / "nosize.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    raises_one_line(read_voc_xml, tmp_path / "nosize.xml", name="nosize.xml", contains="missing <size>")


def test_instance_spanning_two_classes(tmp_path):
    obj = np.array(Image.open(VOC_ROOT / "SegmentationObject" / "2007_000063.png"))
    obj[obj == 2] = 1  # merge chair into the dog instance
    Image.fromarray(obj, mode="L").save(tmp_path / "merged.png")
    raises_one_line(read_voc_instances, tmp_path / "merged.png", VOC_ROOT / "SegmentationClass" / "2007_000063.png",
                    name="merged.png", contains="instance 1 covers classes [9, 12]")


def test_not_a_mat_file(tmp_path):
    (tmp_path / "fake.mat").write_text("not a matlab file")
    raises_one_line(load_sbd_cls, tmp_path / "fake.mat", name="fake.mat", contains="cannot read MATLAB file")


def test_mat_without_gtcls(tmp_path):
    import scipy.io
    scipy.io.savemat(tmp_path / "inst.mat", {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    raises_one_line(load_sbd_cls, tmp_path / "inst.mat", name="inst.mat", contains="GTcls")


def test_mat_with_a_complex_class_map(tmp_path):
    """np.mod on complex values raised a TypeError traceback in data voc-aug."""
    import scipy.io
    scipy.io.savemat(tmp_path / "c.mat", {"GTcls": {"Segmentation": np.ones((2, 2), np.complex128)}})
    raises_one_line(load_sbd_cls, tmp_path / "c.mat", name="c.mat", contains="complex128")


def test_unknown_colour_in_rendering():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    raises_one_line(rgb_to_index, rgb, path="render.png", name="render.png", contains="(1,2,3)")


def test_corrupt_cls_labels(tmp_path):
    (tmp_path / "cls_labels.npy").write_bytes(b"\x93NUMPY garbage")
    raises_one_line(load_cls_labels_npy, tmp_path / "cls_labels.npy", name="cls_labels.npy")
    (tmp_path / "not_npy.npy").write_bytes(b"hello, not a pickle either")
    raises_one_line(load_cls_labels_npy, tmp_path / "not_npy.npy", name="not_npy.npy", contains="cannot read")
    np.save(tmp_path / "array.npy", np.zeros(3))
    raises_one_line(load_cls_labels_npy, tmp_path / "array.npy", name="array.npy")


def test_corrupt_coco_json(tmp_path):
    (tmp_path / "instances.json").write_text('{"images": [')
    raises_one_line(load_coco, tmp_path / "instances.json", name="instances.json", contains="not a COCO")


def test_bad_remap(tmp_path):
    (tmp_path / "remap.json").write_text(json.dumps({"mapping": {"1": 300}}))
    raises_one_line(load_remap, tmp_path / "remap.json", name="remap.json", contains="outside 1..254")
    raises_one_line(load_remap, "no_such_remap", name="no_such_remap", contains="coco60_transfernet")


def test_rle_of_wrong_size():
    segm = {"size": [3, 4], "counts": [12]}
    raises_one_line(decode_segmentation, segm, 4, 3, source="instances.json ann 7", name="instances.json ann 7",
                    contains="[h, w] = [4, 3]")


def test_panoptic_png_not_rgb(tmp_path):
    Image.new("P", (2, 2)).save(tmp_path / "pan.png")
    raises_one_line(read_panoptic_png, tmp_path / "pan.png", name="pan.png", contains="expected RGB")


def test_score_json_never_overwrites_a_file_it_did_not_write(tmp_path, capsys):
    """`hetseg score --json` pointed at a run's model.json or a mask is refused before the table is
    printed, and the file is kept; its own earlier scores file is replaced (atomically) on a rerun."""
    from hetseg.cli import main
    from hetseg.palette import save_index_png

    for d in ("pred", "gt"):
        save_index_png(tmp_path / d / "a.png", np.array([[0, 1], [1, 1]], np.uint8))
    argv = ["score", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--num-classes", "2", "--json"]
    model_json = tmp_path / "run" / "model.json"
    model_json.parent.mkdir()
    model_json.write_text('{"name": "decouplednet"}\n')
    mask_bytes = (tmp_path / "gt" / "a.png").read_bytes()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target, contains in ((model_json, "not a scores file written by hetseg score"),
                             (tmp_path / "gt" / "a.png", "not a scores file written by hetseg score"),
                             (tmp_path / "gt", "--json is a folder"),
                             (blocker / "s.json", "not a writable folder")):
        assert main(argv + [str(target)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("hetseg: error: ") and "; fix: " in err, err
        assert contains in err, err
    assert model_json.read_text() == '{"name": "decouplednet"}\n'
    assert (tmp_path / "gt" / "a.png").read_bytes() == mask_bytes
    scores = tmp_path / "new" / "scores.json"
    assert main(argv + [str(scores)]) == 0 and main(argv + [str(scores)]) == 0  # a rerun replaces its own file
    assert json.loads(scores.read_text())["written_by"] == "hetseg score"
    assert sorted(p.name for p in scores.parent.iterdir()) == ["scores.json"]  # no temporary left


@pytest.mark.parametrize("bench", ["table1", "dis", "transfer", "backbone"])
def test_a_bench_out_that_is_a_file_is_refused_before_any_training(bench, tmp_path, capsys):
    """table1, dis and backbone trained every cell and only then failed to write their results."""
    from hetseg.cli import main

    blocker = tmp_path / "afile"
    blocker.write_text("keep\n")
    assert main(["bench", bench, "--out", str(blocker), "--runs", str(tmp_path / "runs"),
                 *(["--budget", "tiny"] if bench == "backbone" else ["--data", str(tmp_path / "nodata")])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {blocker}: --out is a file"), err
    assert blocker.read_text() == "keep\n" and not (tmp_path / "runs").exists() and not (tmp_path / "nodata").exists()


def test_one_image_named_twice_is_predicted_once(tmp_path):
    """A folder and a file in it, or a path and a link to it: one input (the name-collision check refused
    it with 'rename one', which cannot apply to one file); two files with one stem still collide."""
    from hetseg.engine.predict import check_outputs, collect_inputs
    from hetseg.errors import HetsegError

    (tmp_path / "in").mkdir()
    a, b = tmp_path / "in" / "a.jpg", tmp_path / "in" / "b.jpg"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(a)
    got = collect_inputs([str(tmp_path / "in"), str(a), str(tmp_path / "link.jpg"), str(a)])
    assert got == [a, b]
    check_outputs(got, tmp_path / "out")  # no collision
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.png").write_bytes(b"y")
    with pytest.raises(HetsegError, match="same a.png"):
        check_outputs(collect_inputs([str(a), str(tmp_path / "other" / "a.png")]), tmp_path / "out")


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_run_stopped_in_its_first_stage_is_told_to_resume(tmp_path, capsys, command):
    """Review s16 (finding 8): a run killed in its first stage has config.json and a last.ckpt but no model.json;
    eval, predict and export said "pass a run directory written by 'hetseg train'", which it is."""
    from hetseg.cli import main
    from hetseg.config import Config

    run = tmp_path / "run"
    Config(run_dir=str(run)).save(run / "config.json")
    (run / "pre" / "checkpoints").mkdir(parents=True)  # an extra stage: a rerun without --stage would skip it
    (run / "pre" / "checkpoints" / "last.ckpt").write_bytes(b"half a stage")
    extra = {"eval": [], "predict": ["--input", str(JPG), "--output", str(tmp_path / "out")],
             "export": ["--out", str(tmp_path / "m.onnx")]}[command]
    assert main([command, "--checkpoint", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {run}: no stage has finished yet"), err
    assert f"fix: rerun 'hetseg train --run-dir {run} --config {run / 'config.json'} --stage pre', which resumes" in err
    # stopped before its first checkpoint (a user-journey review): still a run of hetseg train, said so
    (run / "pre" / "checkpoints" / "last.ckpt").unlink()
    assert main([command, "--checkpoint", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {run}: no stage has finished yet"), err
    assert "written by 'hetseg train'" not in err


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_checkpoint_folder_that_is_not_there_is_named_so(tmp_path, capsys, command):
    """A mistyped --checkpoint said "no model.json", as if the folder were there (a file in its place is
    refused by engine.checkpoint.run_dir, unless it is the run's own model file)."""
    from hetseg.cli import main

    extra = {"eval": [], "predict": ["--input", str(JPG), "--output", str(tmp_path / "out")],
             "export": ["--out", str(tmp_path / "m.onnx")]}[command]
    assert main([command, "--checkpoint", str(tmp_path / "nope"), *extra]) == 2
    err = capsys.readouterr().err
    assert err == (f"hetseg: error: {tmp_path / 'nope'}: no such directory; fix: pass a run directory written by "
                   "'hetseg train'\n"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()


DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON nested far past Python's recursion limit


@pytest.mark.parametrize("case", ["about", "coco", "remap", "model.json", "scores.json", "score --json", "labels",
                                  "saved config", "transfer meta"])
def test_json_nested_past_the_recursion_limit_is_one_line(tmp_path, case):
    """json.loads raises RecursionError (not a ValueError) on such a file: every reader gave a traceback
    (ship --about, data coco --ann / --remap, eval / predict on the run, score --json, labels.json, a run's
    config.json, the transfer split's meta.json)."""
    from hetseg.config import Config
    from hetseg.data.labels import load_labels_json
    from hetseg.engine.checkpoint import read_model_json
    from hetseg.engine.predict import previous_predictions
    from hetseg.errors import HetsegError
    from hetseg.methods.transfernet.data import transfer_classes
    from hetseg.metrics import check_json_out
    from hetseg.zoo import read_about

    f = tmp_path / ("model.json" if case == "model.json" else "scores.json" if case == "scores.json" else
                    "meta.json" if case == "transfer meta" else "x.json")
    f.write_text(DEEP)
    call = {"about": lambda: read_about(f), "coco": lambda: load_coco(f), "remap": lambda: load_remap(f),
            "model.json": lambda: read_model_json(tmp_path), "scores.json": lambda: previous_predictions(tmp_path),
            "score --json": lambda: check_json_out(f), "labels": lambda: load_labels_json(f),
            "saved config": lambda: Config().recipe_difference_from(f),
            "transfer meta": lambda: transfer_classes(Config().override([f"data.root={tmp_path}"]))}[case]
    with pytest.raises(HetsegError) as e:
        call()
    assert "\n" not in str(e.value) and str(f) in str(e.value) and "fix" in str(e.value)
    assert f.read_text() == DEEP


def test_json_nested_past_the_recursion_limit_is_unreadable_where_a_reader_may_say_so(tmp_path):
    """The readers whose contract is "None / no record when unreadable" say that, rather than a traceback."""
    from hetseg.data.scenes import read_meta
    from hetseg.engine.evaluate import check_same_split
    from hetseg.methods.run_state import _recorded_method

    (tmp_path / "meta.json").write_text(DEEP)
    assert read_meta(tmp_path) is None and _recorded_method(tmp_path / "meta.json") is None
    assert check_same_split(tmp_path / "meta.json", "0" * 64, "val.txt") is None


def test_a_corrupt_tiff_is_one_line_with_libtiffs_own_message_on_it(tmp_path, capfd):
    """libtiff prints its error ("Using code not yet in table.") on file descriptor 2 before Pillow raises:
    a second stderr line beside hetseg's. It is captured and put on the one line."""
    rng = np.random.default_rng(0)
    p = tmp_path / "bad.tif"
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), np.uint8)).save(p, compression="tiff_lzw")
    with Image.open(p) as im:
        off = im.tag_v2[273][0]  # the first strip's offset
    data = bytearray(p.read_bytes())
    data[off + 10:off + 40] = b"\xff" * 30  # garble the LZW stream
    p.write_bytes(bytes(data))
    capfd.readouterr()
    msg = raises_one_line(read_image, p, name="bad.tif", contains="cannot decode image")
    assert capfd.readouterr().err == ""  # nothing printed past Python
    assert "libtiff:" in msg, msg
    good = tmp_path / "good.tif"
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(good, compression="tiff_lzw")
    assert read_image(good).shape == (8, 8, 3)


def test_too_many_open_files_names_the_open_file_limit(monkeypatch, capsys):
    """An OSError naming a file for want of file descriptors (many DataLoader workers, a low ulimit -n) was told to
    "check the path", where nothing is wrong."""
    import errno

    import hetseg.cli

    def out_of_descriptors(args):
        raise OSError(errno.EMFILE, "Too many open files", "data/JPEGImages/a.jpg")

    monkeypatch.setattr(hetseg.cli, "_run", out_of_descriptors)
    assert hetseg.cli.main(["data", "check"]) == 2
    assert capsys.readouterr().err == ("hetseg: error: data/JPEGImages/a.jpg: Too many open files; fix: raise the "
                                       "open-file limit (ulimit -n 65536) and rerun\n")
