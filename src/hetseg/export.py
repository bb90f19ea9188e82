"""``hetseg export``: a trained run as one ONNX file that gives ``hetseg predict``'s maps.

The graph is the model's :meth:`~hetseg.models.base.Segmenter.export_forward`, a static version of
``predict`` (every class decoded, the unidentified ones masked). Its contract, written into the
sidecar ``<out>.json`` as well:

* input ``images`` (N, 3, S, S) float32: the image padded bottom/right to a square, resized to S x S
  and normalised with ImageNet mean/std (``hetseg.data.transforms.prepare``); N is dynamic, S is the
  model's input size. S is fixed because fc6 is a k x k convolution without padding -- a fully
  connected layer at the paper's 224 px (docs/REFERENCE.md §1.5) -- so each model is defined at one
  input size, and ``hetseg predict`` resizes to it as well.
* input ``threshold`` (a 0-d float32 tensor), for models with image-level scores: the label
  identification threshold (the sidecar's ``threshold`` is the run's own).
* outputs ``probs`` (N, K+1, S, S) (argmax = label map, channel 0 background) and, for models with
  image-level scores, ``class_scores`` (N, K).

Before the file is put in place it is run with onnxruntime on a batch size other than the traced one
and compared with the eager model (``export_forward`` and ``predict``); a mismatch writes nothing.
Which models export, and why DIS exports only at t_ts = 0: docs/ARCHITECTURE.md, "Export".
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from hetseg.data.transforms import MEAN, STD
from hetseg.engine.checkpoint import load_model, model_threshold
from hetseg.errors import HetsegError
from hetseg.io_atomic import check_can_write, write_atomic, write_json

OPSET = 18
ATOL = 1e-4  # probs are in [0, 1]; float32 graphs of a few hundred ops agree to ~1e-6
# Max-pool switches are argmaxes: where two activations tie to float rounding, onnxruntime may pick the
# neighbouring cell, and the unpooled decoder value moves by one pixel there. So a small share of
# pixels may differ outright (seen: 0.6 % with random weights, none with trained ones); an export bug
# changes far more. class_scores involve no switch and must agree everywhere.
MAX_OFF = 0.01
# The check's second threshold: below any score, so every class is identified and every decoder row is live
# in both runtimes. Not 0: a score that underflows to 0 in one runtime and stays 1e-35 in the other flips a
# class there (a 5-step run's scores reach 1e-39), and the check refused a faithful file.
ALL_LIVE = -1.0
# A deep float32 graph is only as exact as float32 itself: PyTorch's own result moves when only the
# memory layout changes (other conv kernels), e.g. by up to 8e-4 in DIS's probs at paper scale
# (ResNet-101, seeded weights, BN statistics calibrated), and float64 lies 1.0e-3 away. So the
# tolerance is max(ATOL, SPREAD_FACTOR x that layout spread), the spread taken as the 99th percentile
# of |difference| (a switch tie between the two layouts moves a few pixels by much more, as MAX_OFF
# allows) and capped at TOL_CAP: a model whose float32 result is that unstable is refused, not trusted.
SPREAD_FACTOR = 4.0
TOL_CAP = 1e-2


class _Graph(nn.Module):
    """The exported module: (images, threshold) -> ``net.export_forward(images, threshold)``; the
    threshold is an input (a 0-d float32 tensor) so one file serves any threshold."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor, threshold: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.net.export_forward(images, 0.5 if threshold is None else threshold)


def graph_inputs(net: nn.Module) -> list[str]:
    """The exported graph's input names: a masks-only model identifies no labels, so takes no threshold."""
    return ["images", "threshold"] if "class_scores" in net.export_outputs else ["images"]


def _need_onnx() -> None:
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            raise HetsegError(f"{mod}: not installed (hetseg export needs onnx, onnxscript and onnxruntime); "
                              "fix: pip install 'hetseg[export]'") from None


def _label_disagreement(a: Tensor, b: Tensor, margin: float = ATOL) -> float:
    """Share of pixels whose argmax differs between probs a and b (N, C, H, W), counting only pixels
    whose top-two margin in ``a`` exceeds ``margin`` (a tie may fall either way in float32)."""
    top2 = a.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > margin
    differ = (a.argmax(1) != b.argmax(1)) & decided
    return float(differ.float().mean())


def _layout_spread(graph: _Graph, images: Tensor, t: Tensor, eager: tuple[Tensor, ...]) -> list[float]:
    """99th percentile of |difference| per output between ``eager`` (contiguous input) and the same
    graph run channels_last: float32's own spread at this model. Each 4-D parameter gets its memory
    format back afterwards."""
    formats = {p: p.is_contiguous() for p in graph.net.parameters() if p.dim() == 4}
    try:
        graph.net.to(memory_format=torch.channels_last)
        with torch.no_grad():
            other = graph(images.contiguous(memory_format=torch.channels_last), t)
    finally:
        for prm, contiguous in formats.items():
            fmt = torch.contiguous_format if contiguous else torch.channels_last
            prm.data = prm.data.contiguous(memory_format=fmt)

    def p99(d: Tensor) -> float:
        d = d.flatten().float()
        return float(d.kthvalue(max(1, math.ceil(0.99 * d.numel()))).values)

    return [p99((o - e).abs()) for o, e in zip(other, eager)]


def parity(path: Path, graph: _Graph, thresholds: list[float], size: int, batch: int = 1) -> dict:
    """Run the ONNX file at ``path`` with onnxruntime on ``batch`` seeded images (N, 3, S, S) at each
    threshold and compare with the eager graph and with ``predict``. One image by default: it differs
    from the traced batch of 2 (so the dynamic batch is exercised), and at paper scale with every class live
    one image is already K+1 = 21 decoder rows at 320 px, about a third of the memory of three.
    Threshold :data:`ALL_LIVE` (-1) identifies every class, so every row of the decoder is live (random
    images rarely pass 0.5). Returns the worst numbers over the thresholds. Tolerance ``tol`` per output:
    max(ATOL, SPREAD_FACTOR x float32's own layout spread, :func:`_layout_spread`), at most TOL_CAP.
    ``ok``: the spread within the cap; class_scores and the eager graph vs ``predict`` within ``tol``
    everywhere; probs within ``tol`` and labels (ties within ATOL aside) equal on all but ``MAX_OFF``
    of the pixels (switch ties)."""
    import onnxruntime as ort

    net = graph.net
    names = graph_inputs(net)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n_out = len(net.export_outputs)
    diffs, spread, off, to_predict, disagree = [0.0] * n_out, None, 0.0, 0.0, 0.0
    for thr in thresholds if "threshold" in names else thresholds[:1]:
        t = torch.tensor(thr, dtype=torch.float32)
        with torch.no_grad():
            eager = graph(images, t)
            pred = net.predict(images, threshold=thr).probs
        if spread is None:  # once: the graph computes every row at any threshold, so float32's spread is one
            spread = _layout_spread(graph, images, t, eager)
            tol = [min(TOL_CAP, max(ATOL, SPREAD_FACTOR * s)) for s in spread]
        feed = {"images": images.numpy(), "threshold": t.numpy()}
        outs = [torch.from_numpy(o) for o in sess.run(None, {k: feed[k] for k in names})]
        if len(outs) != len(eager):
            return {"ok": False, "outputs": len(outs), "expected": len(eager)}
        diffs = [max(d, float((o - e).abs().max())) for d, o, e in zip(diffs, outs, eager)]
        off = max(off, float(((outs[0] - eager[0]).abs() > tol[0]).float().mean()))
        to_predict = max(to_predict, float((eager[0] - pred).abs().max()))
        disagree = max(disagree, _label_disagreement(eager[0], outs[0]))
    report = {"images": batch, "seed": 0, "thresholds": thresholds if "threshold" in names else [],
              "max_abs_diff": dict(zip(net.export_outputs, diffs)), "probs_off": off,
              "max_abs_diff_predict": to_predict, "label_disagreement": disagree, "atol": ATOL, "max_off": MAX_OFF,
              "float32_layout_spread": dict(zip(net.export_outputs, spread)),
              "tolerance": dict(zip(net.export_outputs, tol))}
    report["ok"] = (all(d <= x for d, x in zip(diffs[1:], tol[1:])) and to_predict <= tol[0] and off <= MAX_OFF
                    and disagree <= MAX_OFF and SPREAD_FACTOR * max(spread) <= TOL_CAP)
    return report


def _export(graph: _Graph, example: Tensor, tmp: str, verbose: bool) -> None:
    """torch.onnx (dynamo exporter) with a dynamic batch; its progress chatter only with -v."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch", min=1)
            names = graph_inputs(graph.net)
            args, shapes = (example, torch.tensor(0.5))[:len(names)], ({0: batch}, None)[:len(names)]
            program = torch.onnx.export(graph, args, None, dynamo=True, input_names=names,
                                        output_names=list(graph.net.export_outputs), dynamic_shapes=shapes,
                                        opset_version=OPSET, verbose=False)
            # One file: a model over 2 GB is refused before this (export_onnx), so no external data file
            # appears whose name would point at this temporary.
            program.save(tmp, external_data=False)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _refuse_existing(out: Path, sidecar: Path, replace: bool) -> None:
    for p in (out, sidecar):
        if (p.exists() or p.is_symlink()) and not replace:
            raise HetsegError(f"{p}: already exists; fix: choose another --out, or pass --replace to overwrite it")


def export_onnx(run: str | Path, out: str | Path, replace: bool = False, verbose: bool = False,
                inference_steps: int | None = None) -> dict:
    """Export ``run`` (a run directory or shipped model dir) to ``out`` (.onnx) plus ``<out>.json``.

    The sidecar is the completion marker: with ``replace`` the old one is removed just before the new
    ``.onnx`` is renamed into place, and the new one is written after it, so a ``.onnx`` never sits
    beside a sidecar that describes another file. Returns the sidecar's dict. Raises HetsegError (one
    line; no file at ``out`` changes) for a model without a static graph or over 2 GB, an existing
    ``out`` without ``replace``, a missing onnx package, an exporter failure or a failed parity check.
    ``inference_steps``: for a model with iterative inference (DIS's ``infer_steps``, t_ts), export at
    that many steps instead of the run's; only 0 has a static graph.
    """
    _need_onnx()
    out = Path(out)
    if out.suffix != ".onnx":  # ".onnx" alone is a hidden name without a suffix to pathlib
        raise HetsegError(f"{out}: --out must be a file name ending in .onnx; fix: e.g. --out model.onnx")
    if out.is_dir():
        raise HetsegError(f"{out}: --out is a folder; fix: name a file, e.g. {out / 'model.onnx'}")
    sidecar = out.with_name(out.name + ".json")
    if sidecar.is_dir():
        raise HetsegError(f"{sidecar}: a folder where the export's .json goes; fix: move it, or choose another --out")
    _refuse_existing(out, sidecar, replace)
    check_can_write(out, "--out")  # before the export and its parity run, not after
    net, cfg, info = load_model(run)
    if inference_steps is not None:
        if not hasattr(net, "infer_steps"):
            raise HetsegError(f"--inference-steps: model '{info['model']}' has no iterative inference; "
                              "fix: drop --inference-steps")
        net.infer_steps = int(inference_steps)
    if not net.export_outputs:  # the model says whether it has a static graph; the message says why not
        if getattr(net, "infer_steps", 0):
            raise HetsegError(f"{run}: model '{info['model']}' infers with {net.infer_steps} gradient steps on its "
                              "features (t_ts), which no static graph holds; fix: --inference-steps 0 exports its "
                              "t_ts = 0 labelmap (the sidecar records the steps)")
        raise HetsegError(f"{run}: model '{info['model']}' has no static export graph (see docs/ARCHITECTURE.md, "
                          "Export); fix: use hetseg predict for this run")
    net = net.float().to(memory_format=torch.contiguous_format).eval()
    weight_bytes = sum(t.numel() * 4 for t in net.state_dict().values())
    if weight_bytes > 1.9e9:  # protobuf's 2 GB limit on one .onnx file
        raise HetsegError(f"{run}: {weight_bytes / 1e9:.2f} GB of weights, too large for one ONNX file (2 GB); "
                          "fix: export a smaller model (every paper-scale model here is under it)")
    thr = model_threshold(info, cfg)
    graph = _Graph(net).eval()
    size = int(net.input_size)
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    checked: dict = {}
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        try:
            _export(graph, example, tmp, verbose)
            checked.update(parity(Path(tmp), graph, sorted({thr, ALL_LIVE}), size))
        except HetsegError:
            raise
        except Exception as e:  # the exporter's or onnxruntime's own failure: one line, not their traceback
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise HetsegError(f"{out}: ONNX export or its check failed ({type(e).__name__}: {first}); fix: rerun "
                              "with -v for the exporter's log and report it with the run's model.json") from None
        if not checked["ok"]:
            raise HetsegError(f"{out}: the exported graph does not reproduce the model (parity {checked}); fix: "
                              "report this with the run's model.json -- nothing was written")
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _refuse_existing(out, sidecar, replace)  # again: export took a while, a file may have appeared
        sidecar.unlink(missing_ok=True)  # only with replace; the marker goes before the file it describes

    write_atomic(out, write)
    inputs = graph_inputs(net)
    meta = {"onnx": out.name, "sha256": digest.hexdigest(), "opset": OPSET,
            "source_run": str(run), "model": info["model"],
            # the exported graph's own kwargs: --inference-steps replaces the run's infer_steps
            "model_kwargs": {**info["model_kwargs"], **({"infer_steps": net.infer_steps}
                                                       if "infer_steps" in info["model_kwargs"] else {})},
            "input": {"name": "images", "shape": ["N", 3, size, size], "dtype": "float32",
                      "preprocess": "RGB / 255; pad bottom/right with black to a square; resize to S x S "
                                    "(bilinear, antialiased when shrinking); minus mean, divided by std "
                                    "(hetseg.data.transforms.prepare)", "mean": MEAN.flatten().tolist(),
                      "std": STD.flatten().tolist()},
            "postprocess": "resize probs (bilinear) to the padded square's side, crop to the image, argmax over "
                           "channels (hetseg.data.transforms.restore_argmax)",
            "inputs": inputs, "outputs": list(net.export_outputs),
            "threshold": thr if "threshold" in inputs else None, "class_names": info["class_names"],
            "inference_steps": getattr(net, "infer_steps", None),
            "palette": info.get("palette"), "parity": checked}
    write_json(sidecar, meta)
    return meta


__all__ = ["export_onnx", "parity"]
