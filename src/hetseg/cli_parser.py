"""The ``hetseg`` argument parser: every subcommand's options, and argparse's errors as hetseg's one line
(docs/GUARANTEES.md, "Bad input is one line"). ``hetseg.cli`` runs what it parses."""

from __future__ import annotations

import argparse

from hetseg.config_check import SEED_MAX
from hetseg.data.classes import IGNORE_INDEX


class UsageError(Exception):
    """A command line argparse refuses; :func:`main` prints it as hetseg's one error line."""


class _StoreOnce(argparse._StoreAction):
    """``store``, refusing an option given twice (``--input a --input b`` kept only b, without a word) and an
    empty value (``--input ""`` read the current folder): argparse's ArgumentError, so one line."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        seen = namespace.__dict__.setdefault("_given", set())
        if self.dest in seen:
            raise argparse.ArgumentError(self, "given twice (only the last would be read)")
        seen.add(self.dest)
        if any(isinstance(v, str) and not v.strip() for v in (values if isinstance(values, list) else [values])):
            raise argparse.ArgumentError(self, "empty value")
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """argparse with hetseg's error contract: one line ``hetseg: error: <argument>: <problem>; fix: <fix>``
    instead of the usage block (docs/GUARANTEES.md). Subcommand parsers inherit it (add_subparsers
    builds them with ``type(self)``), and so does :class:`_StoreOnce` for every valued option."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str):
        what, _, problem = message.partition(": ")
        if what.startswith("argument "):
            what = what[len("argument "):]
        elif what == "the following arguments are required":
            # argparse lists optional positionals (nargs * or ?, e.g. overrides) once one before them is
            # missing; only the required ones are blamed
            optional = {str(a.metavar or a.dest) for a in self._actions
                        if not a.option_strings and a.nargs in ("*", "?")}
            names = [n for n in problem.split(", ") if n not in optional]
            what, problem = ", ".join(names or problem.split(", ")), "required but missing"
        elif message.startswith("one of the arguments ") and message.endswith(" is required"):
            what = " | ".join(message[len("one of the arguments "):-len(" is required")].split())
            problem = "one of them is required"
        else:
            what, problem = self.prog, message
        raise UsageError(f"{what}: {problem}; fix: see '{self.prog} --help'")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        """As argparse's, but overrides may sit between options, and other leftovers are blamed on the
        subcommand that did not take them (argparse reports them from the top-level parser, whose --help
        does not list that command's options)."""
        ns, extras = self.parse_known_args(args, namespace)
        # argparse takes one run of positionals, so key=value overrides after an option (train --method m
        # a=1 --run-dir r b=2) come back as leftovers: they are overrides too, in command-line order.
        if extras and isinstance(getattr(ns, "overrides", None), list):
            def is_override(e: str) -> bool:
                return "=" in e and not e.startswith("-")

            ns.overrides = ns.overrides + [e for e in extras if is_override(e)]
            extras = [e for e in extras if not is_override(e)]  # only these are blamed
        if extras:
            cmd = " ".join(str(c) for c in (self.prog, getattr(ns, "cmd", None), getattr(ns, "data_cmd", None)) if c)
            # blame the first unknown option, not its value too (train --data d read as '--data d')
            bad = next((e for e in extras if e.startswith("-")), extras[0])
            raise UsageError(f"{bad}: not an argument of '{cmd}'; fix: see '{cmd} --help'")
        ns.__dict__.pop("_given", None)  # _StoreOnce's bookkeeping, not an argument
        return ns


MAX_CLASSES = IGNORE_INDEX  # masks are 8-bit: classes 0..254, 255 void (a larger count was a 75 GiB matrix)
MAX_SCENE_SIZE = 1024  # scenes of 28 px items; a typo above this would fill memory before the first file


def _int_in(lo: int, hi: int | None = None):
    """An argparse ``type``: an integer in [lo, hi], refused in one line otherwise (e.g. --seeds -1 would
    otherwise start a bench whose worker processes then fail inside numpy's seeding)."""
    want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {v}")
        return v

    return parse


_SEED = _int_in(0, SEED_MAX)


def _version() -> str:
    from hetseg import __version__

    return __version__


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="build datasets and split files").add_subparsers(
        dest="data_cmd", required=True, metavar="DATASET", help="scenes | splits | voc-aug | coco | check")
    sc = data.add_parser("scenes", help="generate the embedded fashion-scenes dataset (VOC layout)")
    sc.add_argument("--out", required=True)
    sc.add_argument("--seed", type=_SEED, default=0)
    sc.add_argument("--num-train", type=_int_in(1), default=10000)
    sc.add_argument("--num-val", type=_int_in(1), default=1000)
    sc.add_argument("--size", type=_int_in(32, MAX_SCENE_SIZE), default=96)
    sc.add_argument("--fashion-mnist-dir", default=None)
    sp = data.add_parser("splits", help="k strong images per class from a masked split (docs/DECISIONS.md, Data)")
    sp.add_argument("--split", required=True, help="source split file (lines with masks are eligible)")
    sp.add_argument("--per-class", type=_int_in(1), required=True)
    sp.add_argument("--seed", type=_SEED, default=0)
    sp.add_argument("--root", default=None, help="dataset root (default: inferred from the split path)")
    sp.add_argument("--num-classes", type=_int_in(2, MAX_CLASSES), default=None)
    sp.add_argument("--out", default=None, help="output split file, refused if it exists with other lines "
                    "(default: <root>/splits/strong_<K>_s<S>.txt); its checksum goes beside it as <name>.sha256")
    va = data.add_parser("voc-aug", help="SegmentationClassAug + train_aug from VOC2012 and SBD")
    va.add_argument("--voc-root", required=True, help=".../VOCdevkit/VOC2012")
    va.add_argument("--sbd-root", required=True, help=".../benchmark_RELEASE (or its dataset/ folder)")
    va.add_argument("--out-mask-dir", default="SegmentationClassAug")
    va.add_argument("--expect-count", type=_int_in(0), default=10582,
                    help="refuse a train_aug of another size (10,582 on the real datasets; 0 = no check)")
    ck = data.add_parser("check", help="decode every image and mask a run's splits name, before training")
    ck.add_argument("--config", default=None, help="YAML/JSON config (default: the built-in one)")
    ck.add_argument("--method", default=None, help="whose splits (sets model.name; default: the config's)")
    ck.add_argument("--split", action="append", default=None, help="check this split instead (weak | strong | "
                    "val, a path under data.root or a split file); repeatable")
    ck.add_argument("--workers", type=_int_in(1, 64), default=2, help="decoding threads")
    ck.add_argument("overrides", nargs="*", help="dotted key=value, e.g. data.root=/data/mine")
    co = data.add_parser("coco", help="COCO instances -> VOC layout with a category remap (TransferNet's COCO-60)")
    co.add_argument("--ann", required=True, help="COCO instances JSON, e.g. instances_train2014.json")
    co.add_argument("--images", required=True, help="folder with that JSON's images")
    co.add_argument("--out", required=True, help="dataset root to write into (e.g. VOC2012: labels.json is merged)")
    co.add_argument("--remap", default="coco60_transfernet", help="shipped remap name or a remap JSON path")
    co.add_argument("--name", default=None, help="split name: OUT/splits/<name>.txt (default: the JSON's stem)")
    co.add_argument("--keep-voc", action="store_true", help="keep images containing a VOC class (default: drop them)")
    co.add_argument("--keep-empty", action="store_true", help="keep images with no mapped category")
    co.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")


def build_parser() -> argparse.ArgumentParser:
    """The ``hetseg`` argument parser with every subcommand; its errors are the one-line ``hetseg: error:`` form."""
    p = _Parser(prog="hetseg", description="``hetseg`` command line. Each subcommand is a thin layer over a "
                "library function.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more; show a traceback for file-system errors")
    p.add_argument("--version", action="version", version=f"hetseg {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_data(sub)

    s = sub.add_parser("score", help="VOC devkit mIoU of a prediction folder against ground truth")
    s.add_argument("--pred", required=True)
    s.add_argument("--gt", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--num-classes", type=_int_in(2, MAX_CLASSES))
    g.add_argument("--classes", help="file with one class name per line (index = line number)")
    s.add_argument("--json", default=None, help="also write the scores as JSON (an existing file is replaced "
                   "only if an earlier 'hetseg score' wrote it)")

    t = sub.add_parser("train", help="train a method (all its stages, or one with --stage)")
    t.add_argument("--config", default=None, help="YAML/JSON config (see configs/)")
    t.add_argument("--method", default=None, help="decouplednet | deconvnet | transfernet | baselinenet | "
                   "decouplednet_transfer | dis (sets model.name; default: the config's)")
    t.add_argument("--stage", default="all", help="all, or one stage of the method (e.g. pre, cls, seg, deconv, att)")
    t.add_argument("--run-dir", default=None)
    t.add_argument("--resume", default=None, help="Lightning checkpoint to resume (default: RUN/<stage>/checkpoints/last.ckpt)")
    t.add_argument("--init-from", default=None, help="weights only (run dir or .safetensors); steps start at 0")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("overrides", nargs="*", help="dotted key=value, e.g. seg.steps=200 model.scale=paper")

    e = sub.add_parser("eval", help="full-resolution predictions of a split, scored by the devkit metric")
    e.add_argument("--checkpoint", required=True, help="run directory")
    e.add_argument("--split", default=None, help="val | weak | strong, a split name, or a split file (read "
                   "against its own dataset root); default: the run's eval.split (val unless set)")
    e.add_argument("--root", default=None, help="dataset root of --split (default: inferred from its path)")
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--gt-labels", action="store_true", help="use ground-truth image labels (the -GT variant)")

    pr = sub.add_parser("predict", help="label maps for images or folders")
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a run directory written by 'hetseg train'")
    which.add_argument("--model", help="a shipped model's name ('hetseg models' lists them)")
    pr.add_argument("--input", required=True, nargs="+")
    pr.add_argument("--output", required=True)
    pr.add_argument("--overlay", action="store_true", help="also write figures/<name>.png: image | prediction + legend")
    pr.add_argument("--threshold", type=float, default=None)

    ex = sub.add_parser("export", help="a trained run as one ONNX file (checked against the model with onnxruntime)")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a run directory written by 'hetseg train'")
    which.add_argument("--model", help="a shipped model's name ('hetseg models' lists them)")
    ex.add_argument("--out", required=True, help="the .onnx file; its contract goes to <out>.json beside it")
    ex.add_argument("--replace", action="store_true", help="overwrite an existing --out and its .json")
    ex.add_argument("--inference-steps", type=_int_in(0), default=None, metavar="T",
                    help="DIS: export at t_ts = T iterative-inference steps instead of the run's (only 0 exports)")

    sub.add_parser("models", help="list the shipped models (hetseg predict --model NAME)")
    sh = sub.add_parser("ship", help="copy a trained run into the package as a shipped model (float16)")
    sh.add_argument("--run", required=True)
    sh.add_argument("--name", required=True)
    sh.add_argument("--about", default=None, help="JSON file whose object is stored as model.json's 'shipped' block")
    sh.add_argument("--replace", action="store_true", help="overwrite a shipped model of the same name")

    d = sub.add_parser("demo", help="DecoupledNet end to end on fashion-scenes (CPU scale)")
    d.add_argument("--data", default="data/fashion-scenes")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument("--seed", type=_SEED, default=0)
    d.add_argument("--fashion-mnist-dir", default=None)

    b = sub.add_parser("bench", help="benchmarks that write results files")
    b.add_argument("name", metavar="BENCH", choices=["table1", "transfer", "dis", "voc-real", "backbone"],
                   help="table1 | transfer | dis | voc-real | backbone")
    b.add_argument("--voc-root", default=None, help="voc-real: a VOC-layout root (…/VOC2012)")
    b.add_argument("--scale", default="cpu", choices=["cpu", "paper"],
                   help="cpu: the committed CPU recipes; paper: the configs/*_paper.yaml recipes (hetseg.bench.paper), "
                        "ImageNet weights required")
    b.add_argument("--seeds", type=_SEED, nargs="+", default=[0])
    b.add_argument("--out", default=None,
                   help="results folder (default: benchmarks/results; at --scale paper benchmarks/results/paper)")
    b.add_argument("--data", default="data/fashion-scenes")
    b.add_argument("--runs", default=None, help="run directories (default: runs/<name>, at --scale paper runs/<name>_paper "
                   "(transfer: runs/transfer/paper_s<S>); voc-real: runs/voc_real; backbone --family resnet: runs/backbone_resnet)")
    b.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"],
                   help="table1: every network from the shared pretrained backbone (paper protocol) or from scratch")
    b.add_argument("--jobs", type=_int_in(1), default=None,
                   help="cells trained at once, one single-thread process each (default 2, which suits a 2-core "
                        "machine; 1 at --scale paper, one cell at a time on the GPU)")
    b.add_argument("--ks", nargs="+", default=None, metavar="K",
                   help="table1: the mask budgets to run, images per class or 'full' (default: 5 10 25 full)")
    b.add_argument("--budget", default="default", choices=["default", "tiny"],
                   help="backbone: 'tiny' is the tests' few-step run")
    b.add_argument("--family", default="vgg", choices=["vgg", "resnet"],
                   help="backbone: vgg (DecoupledNet, DeconvNet, TransferNet) or resnet (DIS's encoder)")
    b.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    return p
