"""Config: load deep-merges exactly as override does; every field is type- and range-checked."""

from __future__ import annotations

import pytest

from hetseg.cli import main
from hetseg.config import Config
from hetseg.errors import HetsegError


def test_load_and_override_give_the_same_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cls: {steps: 600}\nmodel: {scale: paper}\ntransfer: {att: {lr: 0.002}}\n")
    loaded = Config.load(p)
    overridden = Config().override(["cls.steps=600", "model.scale=paper", "transfer.att.lr=0.002"])
    assert loaded == overridden
    # the partly given section keeps *its own* defaults (cls is Adam), not StageConfig's class defaults
    assert loaded.cls.optimizer == "adam" and loaded.cls.lr == Config().cls.lr
    assert loaded.transfer.att.steps == Config().transfer.att.steps


@pytest.mark.parametrize("text, key", [
    ("cls: {steps: abc}", "cls.steps"), ("cls: {batch_size: 0}", "cls.batch_size"),
    ("data: {num_classes: 0}", "data.num_classes"), ("cls: 5", "cls"), ("seg: {steps: 1.5}", "seg.steps"),
    ("cls: {optimizer: adamw}", "cls.optimizer"), ("model: {scale: huge}", "model.scale"),
    ("seg: {lr: -1}", "seg.lr"), ("cls: {stpes: 3}", "cls.stpes"), ("eval: {threshold: .nan}", "eval.threshold"),
    ("seed: true", "seed"), ("data: {class_names: [1, 2]}", "data.class_names[]"),
    ("cls: {lr: .inf}", "cls.lr"), ("crops: {max_scale: .inf}", "crops.max_scale"),
    ("eval: {threshold: -5}", "eval.threshold"), ("1: a\nfoo: b", "key '1'"), ("cls: {1: 2, x: 3}", "key 'cls.1'"),
    ("[" * 5000 + "]" * 5000, "cannot read config"),  # nesting deep enough to exhaust the recursion limit
    ("seg:\n  lr: 0.5\nseg:\n  momentum: 0.8", "the key 'seg' twice"),  # the first seg was dropped
    ("seed: 1:30", "seed"), ("seed: 010", "seed"),  # YAML 1.1 base 60 (was seed 90) and octal (was 8)
    ("false", "got bool"), ("[]", "got list"), ("0", "got int"),  # were read as an empty config
    ("", "empty config"), ("# only a comment", "empty config"),  # a failed copy trained the defaults
    ("seg: {precision: 33}", "seg.precision"), ("data: {num_classes: 256}", "data.num_classes"),
    ("cls:\n\tsteps: 3", "cannot read config (line 2, column 1: found character"),  # where: review s16, 12
])
def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path, text, key):
    p = tmp_path / "bad.yaml"
    p.write_text(text + "\n")
    with pytest.raises(HetsegError) as e:
        Config.load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)) and key in msg and "fix:" in msg


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path):
    """Nested anchors build a value whose repr grows 9x a level: the error echoed it whole (312 MB at 9 levels)."""
    inner = "&b0 [" + ", ".join(['"lol"'] * 9) + "]"
    for i in range(1, 7):
        inner = f"&b{i} [" + ", ".join([inner] + [f"*b{i - 1}"] * 8) + "]"
    p = tmp_path / "bomb.yaml"
    p.write_text("transfer:\n  target_classes: " + inner + "\n")
    with pytest.raises(HetsegError, match="transfer.target_classes.*expected an integer") as e:
        Config.load(p)
    assert len(str(e.value)) < 400 and "\n" not in str(e.value)


def test_a_config_that_is_a_pipe_is_refused_without_blocking(tmp_path):
    """``--config`` naming a FIFO blocked in read_text() for ever (no writer ever comes)."""
    import os

    import signal

    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)

    def hung(*_):  # were the check to break, fail here rather than hang the suite
        raise TimeoutError("Config.load blocked on a pipe")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(HetsegError, match="not a regular file") as e:
            Config.load(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert str(e.value).startswith(str(fifo)) and "\n" not in str(e.value) and "fix:" in str(e.value)


@pytest.mark.parametrize("item", ["cls.steps=abc", "cls.steps=1.5", "cls.batch_size=0", "cls=5", "nope.x=1", "cls.steps",
                                  "seed=-1", "seed=4294967296", "cls={1: 2, x: 3}", "cls.lr=.inf", "eval.threshold=-5",
                                  "data.root=", "data.val_split= ", "eval.split="])  # empty: read the current folder
def test_bad_override_is_one_line_naming_it(item):
    with pytest.raises(HetsegError) as e:
        Config().override([item])
    assert "\n" not in str(e.value) and str(e.value).startswith(item)


def test_cli_reports_config_errors_on_one_line(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("cls: {steps: abc}\n")
    assert main(["train", "--config", str(p), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hetseg: error: ") and "cls.steps" in err[0]
    assert not (tmp_path / "run").exists()  # nothing written for a refused config


def test_numbers_are_decimal_and_a_numeric_choice_may_be_written_bare():
    cfg = Config().override(["seg.precision=32", "seed=1_000", "cls.lr=1e-3", "cls.steps=+7"])
    assert (cfg.seg.precision, cfg.seed, cfg.cls.lr, cfg.cls.steps) == ("32", 1000, 1e-3, 7)
    with pytest.raises(HetsegError, match="expected one of auto"):
        Config().override(["seg.precision=33"])


def test_saved_config_round_trips(tmp_path):
    cfg = Config().override(["cls.steps=7", "transfer.target_classes=[2, 3]"])
    cfg.save(tmp_path / "config.json")
    assert Config.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("argv, names", [
    ([], "COMMAND"), (["data"], "DATASET"), (["predict"], "--input, --output"), (["bench", "tabel1"], "BENCH"),
    (["bench", "table1", "--seeds", "-1"], "--seeds"), (["bench", "table1", "--seeds", "x"], "--seeds"),
    (["bench", "table1", "--seeds", "0", "0"], "--seeds"), (["bench", "table1", "--jobs", "0"], "--jobs"),
    (["data", "splits", "--split", "s.txt", "--per-class", "0"], "--per-class"), (["train", "--nope"], "--nope"),
    (["score", "--pred", "p", "--gt", "g"], "--num-classes | --classes: one of them is required"),
    (["demo", "--seed", "-3"], "--seed"), (["train", "--nope"], "not an argument of 'hetseg train'"),
    (["score", "--pred", "p", "--gt", "g", "--num-classes", "100000"], "--num-classes"),  # a 75 GiB matrix
    (["data", "scenes", "--out", "s", "--num-train", "0"], "--num-train"),
    (["data", "scenes", "--out", "s", "--size", "100000"], "--size"),
    (["predict", "--checkpoint", "r", "--input", "a", "--input", "b", "--output", "o"], "--input: given twice"),
    (["eval", "--checkpoint", "r", "--threshold", "0.3", "--threshold", "0.7"], "--threshold: given twice"),
    (["predict", "--checkpoint", "r", "--input", "", "--output", "o"], "--input: empty value"),  # was the cwd
    (["predict", "--checkpoint", "r", "--input", "a", "--output", " "], "--output: empty value"),
    (["bench"], "error: BENCH: required but missing"),  # said 'BENCH, overrides', which are optional
    # review s16 (findings 7, 12): the last of two settings of one key won without a word; a --method typo
    # was reported as model.name
    (["train", "--run-dir", "r", "cls.steps=2", "cls.steps=3"], "cls.steps=3: cls.steps is set twice (also by cls.steps=2)"),
    (["train", "--method", "deconvnet", "model.name=dis", "--run-dir", "r"], "also by --method deconvnet"),
    (["train", "--run-dir", "r", "run_dir=s"], "run_dir=s: run_dir is set twice (also by --run-dir r)"),
    (["train", "--run-dir", "r", "seg={steps: 3}", "seg.steps=4"], "seg.steps is set twice"),
    (["train", "--method", "decouplenet", "--run-dir", "r"], "error: --method decouplenet: unknown method"),
    (["bench", "dis", "dis.t_train=2", "dis.t_train=3"], "dis.t_train is set twice"),
])
def test_command_line_mistakes_are_one_line_and_start_nothing(tmp_path, monkeypatch, capsys, argv, names):
    """argparse's usage block and a bench that starts workers on ``--seeds -1`` both broke the contract."""
    monkeypatch.chdir(tmp_path)  # a bench that did start would write runs/ here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hetseg: error: ") and "; fix: " in err, err
    assert names in err and "usage:" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_overrides_may_sit_between_options():
    """argparse took only the first run of key=value positionals; the rest were refused as unknown arguments."""
    from hetseg.cli_parser import UsageError, build_parser

    ns = build_parser().parse_args(["train", "--method", "deconvnet", "cls.steps=2", "--run-dir", "r", "seg.steps=3",
                                    "--no-progress", "deconv.lr=0.1"])
    assert ns.overrides == ["cls.steps=2", "seg.steps=3", "deconv.lr=0.1"] and ns.run_dir == "r" and ns.method == "deconvnet"
    ns = build_parser().parse_args(["bench", "dis", "dis.t_train=2", "--jobs", "1", "dis.t_test=3", "--seeds", "0"])
    assert ns.overrides == ["dis.t_train=2", "dis.t_test=3"]
    with pytest.raises(UsageError, match=r"^--bogus: not an argument of 'hetseg bench'"):  # not the overrides too
        build_parser().parse_args(["bench", "dis", "--bogus", "dis.t_train=2"])


def test_a_path_the_file_system_refuses_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    out = blocker / "scenes"  # a folder under a plain file cannot be made
    assert main(["data", "scenes", "--out", str(out), "--num-train", "2", "--num-val", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hetseg: error: {out}") and "Traceback" not in err, err
    assert "in the way" in err and blocker.read_text() == "not a folder\n"
    with pytest.raises(NotADirectoryError):  # -v: the traceback, for a report
        main(["-v", "data", "scenes", "--out", str(out), "--num-train", "2", "--num-val", "1"])


def test_version(capsys):
    from hetseg import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"hetseg {__version__}"


def test_small_floats_load_from_yaml_json_and_overrides(tmp_path):
    """PyYAML reads YAML 1.1, where 1e-3 is a string: `lr: 1e-3`, `seg.lr=1e-3` and a run's own config.json
    with an lr below 1e-4 (json writes 1e-05) were all refused as "expected a number"."""
    cfg = Config().override(["seg.lr=0.00001", "cls.lr=1e-3", "seg.weight_decay=5E-4", "deconv.lr=2.5e+2"])
    assert (cfg.seg.lr, cfg.cls.lr, cfg.seg.weight_decay, cfg.deconv.lr) == (1e-5, 1e-3, 5e-4, 250.0)
    cfg.save(tmp_path / "config.json")
    assert "1e-05" in (tmp_path / "config.json").read_text() and Config.load(tmp_path / "config.json") == cfg
    (tmp_path / "c.yaml").write_text("seg: {lr: 1e-3, weight_decay: 5e-4}\nrun_dir: runs/1e-3\n")
    c = Config.load(tmp_path / "c.yaml")
    assert (c.seg.lr, c.seg.weight_decay, c.run_dir) == (1e-3, 5e-4, "runs/1e-3")
    c = Config().override(["run_dir=1e3", "seg.momentum=+.5e-1"])
    assert (c.run_dir, c.seg.momentum) == ("1e3", 0.05)  # no signed exponent: a name; a signed leading dot


def test_one_override_given_as_a_string_is_one_override():
    assert Config().override("seg.steps=3").seg.steps == 3  # was read character by character ("s: not key=value")


def test_an_unknown_option_is_blamed_alone_not_with_its_value():
    """``train --data d --out r`` named all four words as one unknown argument."""
    from hetseg.cli_parser import UsageError, build_parser

    with pytest.raises(UsageError, match=r"^--data: not an argument of 'hetseg train'"):
        build_parser().parse_args(["train", "--data", "d", "--out", "r"])


def test_a_key_twice_in_an_override_is_named():
    """It was blamed on the section ("expected a section (mapping)")."""
    with pytest.raises(HetsegError, match=r"^seg=\{steps: 3, steps: 4\}: found the key 'steps' twice; fix: "):
        Config().override(["seg={steps: 3, steps: 4}"])
