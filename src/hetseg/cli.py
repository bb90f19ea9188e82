"""``hetseg`` command line. Each subcommand is a thin layer over a library function."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hetseg.errors import HetsegError

_SEED_MAX = 2**32 - 1  # numpy's seeding accepts [0, 2**32 - 1]


class _UsageError(Exception):
    """A command line argparse refuses; :func:`main` prints it as hetseg's one error line."""


class _Parser(argparse.ArgumentParser):
    """argparse with hetseg's error contract: one line ``hetseg: error: <argument>: <problem>; fix: <fix>``
    instead of the usage block (docs/GUARANTEES.md). Subcommand parsers inherit it (add_subparsers
    builds them with ``type(self)``)."""

    def error(self, message: str):
        what, _, problem = message.partition(": ")
        if what.startswith("argument "):
            what = what[len("argument "):]
        elif what == "the following arguments are required":
            what, problem = problem, "required but missing"
        elif what == "unrecognized arguments":
            what, problem = problem, "not an argument of this command"
        elif message.startswith("one of the arguments ") and message.endswith(" is required"):
            what = " | ".join(message[len("one of the arguments "):-len(" is required")].split())
            problem = "one of them is required"
        else:
            what, problem = self.prog, message
        raise _UsageError(f"{what}: {problem}; fix: see '{self.prog} --help'")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        """As argparse's, but leftovers are blamed on the subcommand that did not take them (argparse
        reports them from the top-level parser, whose --help does not list that command's options)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            cmd = " ".join(str(c) for c in (self.prog, getattr(ns, "cmd", None), getattr(ns, "data_cmd", None)) if c)
            raise _UsageError(f"{' '.join(extras)}: not an argument of '{cmd}'; fix: see '{cmd} --help'")
        return ns


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


_SEED = _int_in(0, _SEED_MAX)


def _version() -> str:
    from hetseg import __version__

    return __version__


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="build datasets and split files").add_subparsers(
        dest="data_cmd", required=True, metavar="DATASET", help="scenes | splits | voc-aug | coco")
    sc = data.add_parser("scenes", help="generate the embedded fashion-scenes dataset (VOC layout)")
    sc.add_argument("--out", required=True)
    sc.add_argument("--seed", type=_SEED, default=0)
    sc.add_argument("--num-train", type=int, default=10000)
    sc.add_argument("--num-val", type=int, default=1000)
    sc.add_argument("--size", type=int, default=96)
    sc.add_argument("--fashion-mnist-dir", default=None)
    sp = data.add_parser("splits", help="k strong images per class from a masked split (docs/DECISIONS.md, Data)")
    sp.add_argument("--split", required=True, help="source split file (lines with masks are eligible)")
    sp.add_argument("--per-class", type=_int_in(1), required=True)
    sp.add_argument("--seed", type=_SEED, default=0)
    sp.add_argument("--root", default=None, help="dataset root (default: inferred from the split path)")
    sp.add_argument("--num-classes", type=_int_in(2), default=None)
    sp.add_argument("--out", default=None, help="output split file (default: <root>/splits/strong_<K>_s<S>.txt)")
    va = data.add_parser("voc-aug", help="SegmentationClassAug + train_aug from VOC2012 and SBD")
    va.add_argument("--voc-root", required=True, help=".../VOCdevkit/VOC2012")
    va.add_argument("--sbd-root", required=True, help=".../benchmark_RELEASE (or its dataset/ folder)")
    va.add_argument("--out-mask-dir", default="SegmentationClassAug")
    va.add_argument("--expect-count", type=_int_in(0), default=10582,
                    help="refuse a train_aug of another size (10,582 on the real datasets; 0 = no check)")
    co = data.add_parser("coco", help="COCO instances -> VOC layout with a category remap (TransferNet's COCO-60)")
    co.add_argument("--ann", required=True, help="COCO instances JSON, e.g. instances_train2014.json")
    co.add_argument("--images", required=True, help="folder with that JSON's images")
    co.add_argument("--out", required=True, help="dataset root to write into (e.g. VOC2012: labels.json is merged)")
    co.add_argument("--remap", default="coco60_transfernet", help="shipped remap name or a remap JSON path")
    co.add_argument("--name", default=None, help="split name: OUT/splits/<name>.txt (default: the JSON's stem)")
    co.add_argument("--keep-voc", action="store_true", help="keep images containing a VOC class (default: drop them)")
    co.add_argument("--keep-empty", action="store_true", help="keep images with no mapped category")
    co.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hetseg", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log more; show a traceback for file-system errors")
    p.add_argument("--version", action="version", version=f"hetseg {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_data(sub)

    s = sub.add_parser("score", help="VOC devkit mIoU of a prediction folder against ground truth")
    s.add_argument("--pred", required=True)
    s.add_argument("--gt", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--num-classes", type=_int_in(2))
    g.add_argument("--classes", help="file with one class name per line (index = line number)")
    s.add_argument("--json", default=None)

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
    e.add_argument("--split", default="val", help="val | weak | strong, a split name, or a split file (read "
                   "against its own dataset root)")
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
    b.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    b.add_argument("--seeds", type=_SEED, nargs="+", default=[0])
    b.add_argument("--out", default="benchmarks/results")
    b.add_argument("--data", default="data/fashion-scenes")
    b.add_argument("--runs", default=None, help="run directories (default: runs/<name>)")
    b.add_argument("--init", default="pretrained", choices=["pretrained", "scratch"],
                   help="table1: every network from the shared pretrained backbone (paper protocol) or from scratch")
    b.add_argument("--jobs", type=_int_in(1), default=2,
                   help="cells trained at once, one single-thread process each (2 suits a 2-core machine)")
    b.add_argument("--ks", nargs="+", default=None, metavar="K",
                   help="table1: the mask budgets to run, images per class or 'full' (default: 5 10 25 full)")
    b.add_argument("--budget", default="default", choices=["default", "tiny"],
                   help="backbone: 'tiny' is the tests' few-step run")
    b.add_argument("--family", default="vgg", choices=["vgg", "resnet"],
                   help="backbone: vgg (DecoupledNet, DeconvNet, TransferNet) or resnet (DIS's encoder)")
    b.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    return p


# Which benches read each bench option: a set option that the chosen bench would not read is refused,
# not silently ignored (a user passing --budget tiny to table1 expects a short run and would get 3 h).
_BENCH_OPTIONS = {
    "voc_root": ("--voc-root", {"voc-real"}), "scale": ("--scale", {"table1", "transfer", "dis"}),
    "seeds": ("--seeds", {"table1", "transfer", "dis", "voc-real"}),
    "data": ("--data", {"table1", "transfer", "dis"}), "init": ("--init", {"table1"}),
    "jobs": ("--jobs", {"table1", "transfer", "dis", "voc-real"}), "ks": ("--ks", {"table1"}),
    "budget": ("--budget", {"backbone"}), "family": ("--family", {"backbone"}), "overrides": ("key=value overrides", {"table1", "transfer", "dis", "voc-real"}),
}


def _check_bench_options(args: argparse.Namespace) -> None:
    """Raise HetsegError for a bench option given a non-default value that ``args.name`` does not read."""
    default = _build_parser().parse_args(["bench", args.name])  # the defaults, as parsed
    twice = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if twice:  # two cells of one seed would train into the same run dir at once
        raise HetsegError(f"--seeds: seed {twice[0]} given twice; fix: list each seed once")
    for dest, (flag, readers) in _BENCH_OPTIONS.items():
        if args.name not in readers and getattr(args, dest) != getattr(default, dest):
            names = sorted(readers)
            who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            raise HetsegError(f"{flag}: not read by 'hetseg bench {args.name}' (only {who} read{'s' * (len(names) == 1)} it); "
                              f"fix: drop {flag}")


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "data":
        if args.data_cmd == "scenes":
            from hetseg.data.scenes import cli_scenes

            return cli_scenes(args.out, args.seed, args.num_train, args.num_val, args.size, args.fashion_mnist_dir)
        if args.data_cmd == "splits":
            from hetseg.data.splits_cli import cli_splits

            return cli_splits(args.split, args.per_class, args.seed, args.root, args.num_classes, args.out)
        if args.data_cmd == "coco":
            from hetseg.data.coco import build_coco_split

            s = build_coco_split(args.ann, args.images, args.out, args.remap, drop_if_any=not args.keep_voc,
                                 name=args.name, keep_empty=args.keep_empty, link=not args.copy)
            print(f"{len(s)} images -> {Path(args.out) / 'splits' / (s.name + '.txt')} (sha256 {s.meta['checksum'][:12]}); "
                  f"skipped {s.meta['skipped_dropped']} with a dropped class, {s.meta['skipped_empty']} without a mapped one")
            return 0
        from hetseg.data.sbd import cli_voc_aug

        return cli_voc_aug(args.voc_root, args.sbd_root, args.out_mask_dir, args.expect_count or None)
    if args.cmd == "score":
        from hetseg.metrics import cli_score

        return cli_score(args.pred, args.gt, args.num_classes, args.classes, args.json)
    if args.cmd == "train":
        from hetseg.config import Config
        from hetseg.methods import train

        cfg = Config.load(args.config) if args.config else Config()
        pre = ([f"run_dir={args.run_dir}"] if args.run_dir else []) + ([f"model.name={args.method}"] if args.method else [])
        cfg = cfg.override(pre + args.overrides)
        stages = None if args.stage == "all" else (args.stage,)
        for name, summary in train(cfg, stages, args.resume, args.init_from, not args.no_progress).items():
            m = summary.get("metrics") or {}
            extra = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
            print(f"stage {name}: {summary['steps']} steps in {summary['wall_s']} s" + (f" ({extra})" if extra else ""))
        print(f"model: {Path(cfg.run_dir) / 'model.safetensors'}")
        return 0
    if args.cmd == "eval":
        from hetseg.engine.evaluate import evaluate_run
        from hetseg.metrics import format_table

        scores, report = evaluate_run(args.checkpoint, args.split, args.threshold, args.gt_labels, root=args.root)
        print(format_table(scores, list(report["scores"]["iou"])))
        print(f"mIoU={scores.miou * 100:.1f} on {report['split']} ({report['images']} images); "
              f"results: {Path(args.checkpoint) / ('eval_' + Path(args.split).stem + ('_gt' if args.gt_labels else ''))}.json")
        return 0
    if args.cmd == "predict":
        from hetseg.engine.predict import run_predict

        if args.model is not None:
            from hetseg import zoo

            args.checkpoint = str(zoo.resolve(args.model))
        recs = run_predict(args.checkpoint, args.input, args.output, args.overlay, args.threshold)
        print(f"predicted {len(recs)} images into {args.output}")
        return 0
    if args.cmd == "models":
        from hetseg import zoo

        shipped = zoo.names()
        for name in shipped:
            print(f"{name}: {zoo.describe(name).get('summary', '')}")
        if not shipped:
            print("no shipped models")
        return 0
    if args.cmd == "ship":
        from hetseg import zoo

        about = zoo.read_about(args.about) if args.about else {}
        print(f"shipped: {zoo.ship(args.run, args.name, about, replace=args.replace)}")
        return 0
    if args.cmd == "demo":
        from hetseg.demo import run_demo

        return run_demo(args.data, args.run_dir, args.seed, args.fashion_mnist_dir)
    if args.cmd == "bench":
        _check_bench_options(args)
        if args.name == "backbone":
            from hetseg.bench.backbone import run_backbone

            runs = args.runs or ("runs/backbone" if args.family == "vgg" else f"runs/backbone_{args.family}")
            return run_backbone(runs, args.out, budget=args.budget, family=args.family)
        if args.name == "voc-real":
            from hetseg.bench.voc_real import run_voc_real

            if not args.voc_root:
                raise HetsegError("--voc-root: missing; fix: hetseg bench voc-real --voc-root …/VOC2012")
            return run_voc_real(args.voc_root, args.out, args.runs or "runs/voc_real", args.seeds,
                                overrides=args.overrides, jobs=args.jobs)
        if args.name == "dis":
            from hetseg.bench.dis import run_dis

            return run_dis(args.scale, args.seeds, args.out, args.data, args.runs, overrides=args.overrides,
                           jobs=args.jobs)
        if args.name == "transfer":
            from hetseg.bench.transfer import run_transfer

            return run_transfer(args.scale, args.seeds, args.out, args.data, args.runs or "runs/transfer",
                                overrides=args.overrides, jobs=args.jobs)
        from hetseg.bench.table1 import KS, run_table1

        return run_table1(args.scale, args.seeds, args.out, args.data, args.runs, ks=args.ks or KS,
                          overrides=args.overrides, jobs=args.jobs, init=args.init)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command line; bad input ends in one ``hetseg: error:`` line on stderr and exit status 2."""
    verbose = False
    try:
        args = _build_parser().parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
        return _run(args)
    except (HetsegError, _UsageError) as e:
        print(f"hetseg: error: {e}", file=sys.stderr)
    except OSError as e:
        path = e.filename2 or e.filename  # a rename's failure is about its destination
        if path is None or verbose:  # not about a path, or asked for the detail: keep the traceback
            raise
        # e.g. --out where a parent cannot be made or written: the file system's refusal, named by its path
        print(f"hetseg: error: {path}: {e.strerror or type(e).__name__}; fix: {_os_fix(e)}", file=sys.stderr)
    return 2


def _os_fix(e: OSError) -> str:
    """The fix for a file-system refusal, by its errno (``hetseg -v`` shows the traceback)."""
    import errno

    if e.errno == errno.ENOSPC:
        return "free disk space and rerun"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a place you may write to, or fix its permissions"
    if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return "a file or folder of that name is in the way: move it, or choose another path"
    if e.errno == errno.ENOENT:
        return "check the path (a parent may be missing or a file in it may have gone)"
    return "check the path and rerun with -v for the details"


if __name__ == "__main__":
    raise SystemExit(main())
