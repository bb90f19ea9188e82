"""``hetseg`` command line. Each subcommand is a thin layer over a library function."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hetseg.cli_parser import UsageError
from hetseg.cli_parser import build_parser as _build_parser  # tests and _check_bench_options parse with it
from hetseg.errors import HetsegError, note, one_line, os_error_fix


# Which benches read each bench option: a set option that the chosen bench would not read is refused,
# not silently ignored (a user passing --budget tiny to table1 expects a short run and would get 3 h).
_BENCH_OPTIONS = {
    "voc_root": ("--voc-root", {"voc-real"}), "scale": ("--scale", {"table1", "transfer", "dis"}),
    "seeds": ("--seeds", {"table1", "transfer", "dis", "voc-real"}),
    "data": ("--data", {"table1", "transfer", "dis"}), "init": ("--init", {"table1"}),
    "jobs": ("--jobs", {"table1", "transfer", "dis", "voc-real"}), "ks": ("--ks", {"table1"}),
    "budget": ("--budget", {"backbone"}), "family": ("--family", {"backbone"}), "overrides": ("key=value overrides", {"table1", "transfer", "dis", "voc-real"}),
}


def bench_defaults(args: argparse.Namespace) -> None:
    """Fill ``--jobs`` and ``--out`` when not given. Paper scale runs on a GPU: one cell at a time (``--jobs N``
    is N single-thread CPU processes), its results beside, not over, the committed CPU-scale ones."""
    paper = args.scale == "paper" and args.name in ("table1", "transfer", "dis")
    args.jobs = args.jobs or (1 if paper else 2)
    args.out = args.out or ("benchmarks/results/paper" if paper else "benchmarks/results")


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


def _note_untrained(checkpoint: str) -> None:
    """eval/predict/export of a run with a stage that never trained: said once, after the work succeeded,
    so a refused command still prints exactly its one error line (docs/GUARANTEES.md)."""
    from hetseg.methods import untrained_note

    line = untrained_note(checkpoint)
    if line:
        note(line)


def _note_transfer_val(args: argparse.Namespace, report: dict) -> None:
    """A TransferNet-family run scored on the default ``--split val`` (data.val_split, every class): it
    segments its target classes only, so the source classes score 0 there. Said, with the split the
    transfer bench scores (transfer.val_split); the default is kept (docs/TRANSFERNET.md)."""
    from hetseg.config import OWN_SECTIONS, Config
    from hetseg.engine.checkpoint import read_model_json, run_dir

    if args.root is not None or report.get("model") not in OWN_SECTIONS["transfer"]:
        return
    run = run_dir(args.checkpoint)
    cfg = Config.from_dict(read_model_json(run)["config"], where=str(run / "model.json"))  # as eval read it
    if (args.split if args.split is not None else cfg.eval.split) != "val":
        return
    target = cfg.transfer.val_split
    if Path(cfg.data.root, target).resolve() == Path(cfg.data.root, cfg.data.val_split).resolve():
        return  # one split for both (e.g. VOC's val.txt): the score above is the target one
    note(f"a {report['model']} run segments its target classes only, so this score over data.val_split counts its "
         f"source classes at 0; --split {target} (transfer.val_split) scores the target classes, as hetseg bench "
         "transfer does")


def _config(args: argparse.Namespace, options: dict[str, tuple[str, str | None]] | None = None) -> tuple:
    """(the --config file's Config or None, the Config the command runs with): the file (else the defaults),
    then ``options`` (config key -> (option, value); ``--method`` sets model.name) and the dotted overrides;
    a key given both as an option and an override is refused."""
    from hetseg.config import Config
    from hetseg.config_check import refuse_repeated
    from hetseg.methods import get_method

    file_cfg = Config.load(args.config) if args.config else None
    if args.method:
        get_method(args.method, "--method ")
    given = {k: v for k, v in {**(options or {}), "model.name": ("--method", args.method)}.items() if v[1]}
    refuse_repeated(args.overrides, {k: f"{opt} {value}" for k, (opt, value) in given.items()})
    cfg = (file_cfg or Config()).override([f"{k}={value}" for k, (_, value) in given.items()] + args.overrides)
    return file_cfg, cfg


def _data_check(args: argparse.Namespace) -> int:
    """``hetseg data check``: every image and mask of the method's splits (or of --split) decoded in full."""
    from hetseg.data.check import check_splits, raise_first
    from hetseg.methods import class_names, get_method, load_config_split, load_split

    cfg = _config(args)[1]
    method = get_method(cfg.model.name)
    if args.split:  # a split's masks are held to its labels where training does so: the strong role
        named = [(f"--split {s}", load_split(cfg, s, mask_labels=False),
                  s == "strong" and "data.strong_split" in method.mask_splits(cfg)) for s in args.split]
    else:
        named = [(k, load_config_split(cfg, k, mask_labels=False), k in method.mask_splits(cfg))
                 for k in method.data_splits(cfg)]
    report = check_splits([split for _, split, _ in named], cfg.data.num_classes, args.workers,
                          [checked for _, _, checked in named])
    raise_first(report)
    if not args.split:  # what training checks before its first step: class names, each stage's data size
        class_names(cfg)
        method.check_stage_data(cfg, method.default_stages(cfg))
    for (what, _, _), split in zip(named, report.splits):
        print(f"{what}: {len(split)} images ({split.root})")
    print(f"data check: {report.images} images and {report.masks} masks decoded, no problem found")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "data":
        if args.data_cmd == "check":
            return _data_check(args)
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
        from hetseg.methods import get_method, train

        file_cfg, cfg = _config(args, {"run_dir": ("--run-dir", args.run_dir)})
        stages = None if args.stage == "all" else (args.stage,)
        method = get_method(cfg.model.name)
        method.check_overrides(args.overrides, cfg if stages is None else None)
        # A config file may serve several methods: name what this one ignores, do not refuse. Not for the run's
        # own config.json (a rerun): it records every section, and the run was told when it started.
        own = Path(cfg.run_dir) / "config.json"
        notes = []  # said by train once nothing is refused: a refused command prints its one error line only
        if file_cfg and not (own.exists() and own.resolve() == Path(args.config).resolve()):
            notes = [f"{args.config}: {line}" for line in method.unread_settings(file_cfg, cfg if stages is None else None)]
        for name, summary in train(cfg, stages, args.resume, args.init_from, not args.no_progress, notes=notes).items():
            m = summary.get("metrics") or {}
            extra = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
            when = "already trained, skipped: " if summary.get("skipped") else ""
            print(f"stage {name}: {when}{summary['steps']} steps in {summary['wall_s']} s" + (f" ({extra})" if extra else ""))
        print(f"model: {Path(cfg.run_dir) / 'model.safetensors'}")
        return 0
    if args.cmd == "eval":
        from hetseg.engine.evaluate import evaluate_run
        from hetseg.metrics import format_table

        scores, report = evaluate_run(args.checkpoint, args.split, args.threshold, args.gt_labels, root=args.root)
        print(format_table(scores, list(report["scores"]["iou"])))
        print(f"mIoU={scores.miou * 100:.1f} on {report['split']} ({report['images']} images); "
              f"results: {report['results']}")
        _note_untrained(args.checkpoint)
        _note_transfer_val(args, report)
        return 0
    if args.cmd == "predict":
        from hetseg.engine.predict import run_predict

        if args.model is not None:
            from hetseg import zoo

            args.checkpoint = str(zoo.resolve(args.model))
        recs = run_predict(args.checkpoint, args.input, args.output, args.overlay, args.threshold)
        print(f"predicted {len(recs)} image{'s' * (len(recs) != 1)} into {args.output}")
        _note_untrained(args.checkpoint)
        return 0
    if args.cmd == "export":
        from hetseg.export import export_onnx

        if args.model is not None:
            from hetseg import zoo

            args.checkpoint = str(zoo.resolve(args.model))
        meta = export_onnx(args.checkpoint, args.out, args.replace, args.verbose, args.inference_steps)
        p, s = meta["parity"], meta["input"]["shape"][2]
        images = f"{p['images']} image{'s' * (p['images'] != 1)}"
        print(f"exported {meta['model']} -> {args.out}: inputs {', '.join(meta['inputs'])} (images N x 3 x {s} x {s}), "
              f"outputs {', '.join(meta['outputs'])}; onnxruntime vs PyTorch on {images}: labels differ on "
              f"{p['label_disagreement']:.2%} of pixels, probs off by > {p['tolerance']['probs']:.2g} on "
              f"{p['probs_off']:.2%}; "
              f"contract: {args.out}.json")
        _note_untrained(args.checkpoint)
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
        from hetseg.io_atomic import check_out_dir

        _check_bench_options(args)
        bench_defaults(args)
        if args.overrides:
            from hetseg.config_check import refuse_repeated

            refuse_repeated(args.overrides)
        check_out_dir(args.out)  # before the training, not after it
        if args.name == "backbone":
            from hetseg.bench.backbone import default_runs, run_backbone

            runs = args.runs or default_runs(args.family)
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
    except (HetsegError, UsageError) as e:
        print(f"hetseg: error: {one_line(str(e))}", file=sys.stderr)
    except OSError as e:
        path = e.filename2 or e.filename  # a rename's failure is about its destination
        if path is None or verbose:  # not about a path, or asked for the detail: keep the traceback
            raise
        # e.g. --out where a parent cannot be made or written: the file system's refusal, named by its path
        line = f"hetseg: error: {path}: {e.strerror or type(e).__name__}; fix: {os_error_fix(e)}"
        print(one_line(line), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
