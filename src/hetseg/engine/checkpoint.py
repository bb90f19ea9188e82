"""Portable model files for every registered model: safetensors weights + a JSON sidecar.

``model.json`` names the registered model and its constructor kwargs (``create_model`` rebuilds it
without knowing any method), plus the run's config, class names, palette, the inference threshold,
the stages and splits that trained it and the command. Both files are written atomically, the
weights first. Lightning checkpoints are only for resuming. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch
from torch import nn

import hetseg
from hetseg.config import Config
from hetseg.errors import HetsegError
from hetseg.io_atomic import parse_json, write_atomic, write_json
from hetseg.palette import voc_colormap


def save_model(run_dir: str | Path, net: nn.Module, cfg: Config, class_names: list[str], meta: dict) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``run_dir`` (each atomically).

    ``net`` must come from :func:`hetseg.models.create_model` (it carries its name and kwargs).
    """
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = write_atomic(run_dir / "model.safetensors", lambda tmp: save_file(state, tmp))
    info = {"hetseg_version": hetseg.__version__, "model": net.model_name, "model_kwargs": net.model_kwargs,
            "config": cfg.to_dict(), "class_names": class_names,
            "palette": voc_colormap(len(class_names)).tolist(), **meta}
    write_json(run_dir / "model.json", info)
    return path


def weights_file(path: str | Path) -> Path:
    """The weights file ``path`` names: a run directory's ``model.safetensors``, or the file itself."""
    p = Path(path)
    return p / "model.safetensors" if p.is_dir() else p


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file, streamed (a paper-scale weights file is ~0.5 GB): how runs and results name
    the weights they started from."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_weights(p: Path) -> dict:
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise HetsegError(f"{p}: unreadable safetensors file ({str(e).splitlines()[0][:120]}); fix: retrain, or "
                          "restore the file from the run that wrote it") from None


def load_weights(net: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights (``--init-from``): a run dir or a ``.safetensors`` file.

    Every name and shape is checked before anything is copied, so a file that does not fit
    leaves ``net`` untouched.
    """
    p = weights_file(path)
    if p.suffix != ".safetensors" or not p.is_file():
        raise HetsegError(f"{p}: no safetensors weights here; fix: pass a run directory or a .safetensors file")
    state = _read_weights(p)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    # Not strict still needs a common name: a file of another model family matched nothing and loaded
    # nothing without a word.
    if (strict and (missing or unexpected)) or bad or not set(own) & set(state):
        raise HetsegError(f"{p}: weights do not fit this model (missing {missing[:2]}, unexpected {unexpected[:2]}, "
                          f"other shape {bad[:2]}); fix: check model.name/model.scale/data.num_classes")
    # A diverged run's NaN weights predicted all background and wrote bare NaN into scores.json.
    broken = first_non_finite(state)
    if broken is not None:
        raise HetsegError(f"{p}: weights hold NaN or inf (first in {broken}): the training diverged; fix: retrain, "
                          "e.g. with a lower lr")
    net.load_state_dict(state, strict=False)


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding NaN or inf (a diverged training's), or None."""
    return next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)


def run_dir(checkpoint: str | Path) -> Path:
    """The run directory a ``--checkpoint`` names: the folder itself, or the folder of its own
    ``model.safetensors`` / ``model.json``. Any other file is refused: loading the run's
    model.safetensors in its place scored weights the user did not name."""
    p = Path(checkpoint)
    if p.is_file():
        if p.name not in ("model.safetensors", "model.json"):
            raise HetsegError(f"{p}: not a run's model.safetensors or model.json (eval, predict and export load a "
                              "run directory, not loose weights); fix: pass the run directory, or train from these "
                              "weights with 'hetseg train --init-from FILE'")
        return p.parent
    return p


def read_model_json(run: Path) -> dict:
    """``run/model.json`` parsed and checked (a tampered or truncated file is one error line)."""
    meta_path = run / "model.json"
    if not run.is_dir():  # "no model.json" read as if the folder were there
        what = "not a directory" if run.exists() else "no such directory"
        raise HetsegError(f"{run}: {what}; fix: pass a run directory written by 'hetseg train'")
    if not meta_path.is_file():
        started = sorted(run.glob("*/checkpoints/last.ckpt")) if (run / "config.json").is_file() else []
        if started:  # a run whose first stage was stopped part-way: it is one, and the rerun resumes it
            # --stage: a half-trained extra stage (pre) is not among those a plain rerun trains
            raise HetsegError(f"{run}: no stage has finished yet ({started[0]} is a half-trained stage); fix: rerun "
                              f"'hetseg train --run-dir {run} --config {run / 'config.json'} --stage "
                              f"{started[0].parent.parent.name}', which resumes it")
        if (run / "config.json").is_file():  # stopped before its first checkpoint (e.g. bad data at step 1)
            raise HetsegError(f"{run}: no stage has finished yet (config.json but no model.json); fix: rerun "
                              f"'hetseg train --run-dir {run} --config {run / 'config.json'}' to train it")
        raise HetsegError(f"{run}: no model.json; fix: pass a run directory written by 'hetseg train'")
    try:
        info = parse_json(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HetsegError(f"{meta_path}: not valid JSON ({e}); fix: restore it or retrain the run") from None
    if not isinstance(info, dict):
        raise HetsegError(f"{meta_path}: expected a JSON object; fix: restore it or retrain the run")
    for key, kind in (("model", str), ("model_kwargs", dict), ("config", dict), ("class_names", list)):
        if not isinstance(info.get(key), kind):
            raise HetsegError(f"{meta_path}: '{key}' missing or not a {kind.__name__} (written by an older or "
                              "another program?); fix: retrain the run with this hetseg")
    names = info["class_names"]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):  # scores.json is keyed by them
        raise HetsegError(f"{meta_path}: 'class_names' must be distinct strings; fix: restore the file or retrain "
                          "the run")
    for key in ("stages", "splits", "shipped"):  # optional; what trained (read by the untrained-stage note and a
        # rerun), and a shipped model's provenance (read by `hetseg models`)
        if key in info and not isinstance(info[key], dict):
            raise HetsegError(f"{meta_path}: '{key}' is {info[key]!r}, not a JSON object; fix: restore the file "
                              "or retrain the run")
    thr = info.get("threshold", 0.5)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 <= thr <= 1.0:
        raise HetsegError(f"{meta_path}: 'threshold' is {thr!r}, not a number in [0, 1]; fix: restore the file "
                          "or retrain the run")
    return info


def model_threshold(info: dict, cfg: Config) -> float:
    """The label threshold a run was trained with: model.json's (checked by :func:`read_model_json`),
    else its config's ``eval.threshold``."""
    return float(info.get("threshold", cfg.eval.threshold))


def load_model(run: str | Path, device: str | None = None) -> tuple[nn.Module, Config, dict]:
    """Rebuild a trained model from a run directory (``model.json`` + ``model.safetensors``).

    Returns (net in eval mode, on ``device`` when given, in channels_last memory format -- the
    inference layout, so ``net.state_dict()`` holds non-contiguous tensors: ``.contiguous()`` them before
    ``safetensors`` -- the run's Config, the model.json dict).
    """
    from hetseg.models import create_model

    run = run_dir(run)
    info = read_model_json(run)
    cfg = Config.from_dict(info["config"], where=str(run / "model.json"))
    try:
        net = create_model(info["model"], **info["model_kwargs"])
    except (TypeError, ValueError) as e:
        raise HetsegError(f"{run / 'model.json'}: cannot build model '{info['model']}' ({e}); "
                          "fix: retrain the run with this hetseg") from None
    names, k = info["class_names"], getattr(net, "num_classes", None)  # k object classes + background
    if isinstance(k, int) and len(names) < k + 1:  # trained before train refused it: a class index with no name
        raise HetsegError(f"{run / 'model.json'}: names {len(names)} classes but the model predicts {k + 1} "
                          f"(data.num_classes); fix: retrain the run with data.num_classes={len(names)}")
    load_weights(net, run / "model.safetensors")
    if device is not None:
        net.to(device)
    # Inference inputs are channels_last (engine/evaluate.py): measured 1.40x faster, same maths.
    net.to(memory_format=torch.channels_last)
    net.eval()
    return net, cfg, info


__all__ = ["file_sha256", "load_model", "load_weights", "model_threshold", "read_model_json", "run_dir", "save_model",
           "weights_file"]
