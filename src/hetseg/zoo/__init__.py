"""Shipped, named models: trained runs a user can predict with right after installation.

A shipped model is a run directory in this package (``hetseg/zoo/<name>/``): ``model.safetensors``
(float tensors stored as float16 to keep the wheel small; loading casts them back to the model's
float32) and ``model.json`` (the run's own, plus a ``shipped`` block: the source run, its training
splits with checksums, the command that trained it and its scores). ``hetseg predict --model <name>``
resolves the name here; ``hetseg models`` lists them; ``hetseg ship`` writes one from a run.
How the shipped real-photo model was made and what it scores: README, "Real photos".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import save_file

from hetseg.engine.checkpoint import load_model, read_model_json
from hetseg.errors import HetsegError, path_problem
from hetseg.io_atomic import parse_json, write_atomic, write_json

ZOO_DIR = Path(__file__).parent


def names() -> list[str]:
    """The shipped model names (folders here holding a model.json), sorted."""
    return sorted(p.parent.name for p in ZOO_DIR.glob("*/model.json"))


def _plain(name: str) -> bool:
    """A model name is one folder of the zoo: letters, digits, '-' or '_', not starting with '-' or '_'
    (so never a path, a hidden folder or ``__pycache__``)."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) is not None


def resolve(name: str) -> Path:
    """A shipped model's run directory; one error line naming the choices for an unknown name."""
    run = ZOO_DIR / name
    if not _plain(name) or not (run / "model.json").is_file():
        raise HetsegError(f"--model {name}: no shipped model of that name (have: {', '.join(names()) or 'none'}); "
                          "fix: pick one of them, or pass --checkpoint RUN_DIR of your own run")
    return run


def describe(name: str) -> dict:
    """The ``shipped`` block of a model's model.json (source, splits, command, scores)."""
    return read_model_json(resolve(name)).get("shipped", {})


BACKBONE_DIR = ZOO_DIR / "backbone-cpu"                # VGG-16 family: DecoupledNet, DeconvNet, TransferNet
RESNET_BACKBONE_DIR = ZOO_DIR / "backbone-cpu-resnet"  # DIS's ResNet encoder


def backbone_dir(family: str = "vgg") -> Path:
    """The shipped backbone's folder for a model's ``backbone_family`` (hetseg.models.backbone)."""
    return RESNET_BACKBONE_DIR if family == "resnet" else BACKBONE_DIR


def shipped_backbone(scale: str, family: str = "vgg") -> Path:
    """``model.backbone=shipped``: the committed CPU-scale backbone file of ``family`` ("vgg" or
    "resnet"), made by ``hetseg bench backbone [--family resnet]``.

    Only CPU scale ships one -- paper scale starts from ImageNet weights (``model.vgg_weights``;
    DIS: ``model.resnet_weights``).
    """
    path = backbone_dir(family) / "backbone.safetensors"
    if scale != "cpu":
        raise HetsegError(f"model.backbone=shipped: only model.scale=cpu has a shipped backbone; fix: at "
                          f"scale {scale} give the torchvision ImageNet file (model.{'resnet' if family == 'resnet' else 'vgg'}"
                          f"_weights=FILE) or a backbone path")
    if not path.is_file():
        raise HetsegError(f"{path}: the shipped backbone is missing; fix: run 'hetseg bench backbone"
                          f"{' --family resnet' if family == 'resnet' else ''}' (or reinstall hetseg)")
    return path


def _not_json(word: str) -> None:
    """json.loads' hook for NaN / Infinity: Python reads them, JSON has none (model.json would carry them on)."""
    raise ValueError(f"{word} is not JSON (write null or a string)")


def read_about(path: str | Path) -> dict:
    """The ``--about`` JSON object of ``hetseg ship``; a bad file is one error line, and so are the keys
    ship writes itself (``name``, ``dtype``: an --about of its own overrode them) and a non-string summary."""
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():  # a pipe would block read_text() for ever
        raise HetsegError(f"{p}: {path_problem(p, '--about file')}; fix: pass a JSON object file")
    try:
        obj = parse_json(p.read_text(encoding="utf-8"), parse_constant=_not_json)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise HetsegError(f"{p}: not a readable JSON file ({str(e)[:100]}); fix: pass a JSON object file") from None
    if not isinstance(obj, dict):
        raise HetsegError(f"{p}: expected a JSON object; fix: pass a JSON object file")
    own = sorted(k for k in ("name", "dtype") if k in obj)
    if own:
        raise HetsegError(f"{p}: sets {', '.join(own)}, which ship records itself (the --name and float16); fix: "
                          "drop those keys")
    if not isinstance(obj.get("summary", ""), str):
        raise HetsegError(f"{p}: 'summary' is not a string (hetseg models prints it); fix: give one line of text")
    return obj


def ship(run: str | Path, name: str, shipped: dict, dest: str | Path | None = None, replace: bool = False) -> Path:
    """Copy a trained run into ``dest/name`` (default: the package's zoo) as a shipped model; returns its directory.

    Float tensors are halved (float16); integer buffers (BN's step counters) stay as they are.
    ``shipped`` (source, splits, command, scores...) is stored in model.json. The weights are
    written before model.json, each atomically, so a half-written copy is never a model.
    """
    run, out = Path(run), Path(dest if dest is not None else ZOO_DIR) / name
    if not _plain(name):
        raise HetsegError(f"--name {name!r}: not a plain name; fix: use letters, digits, '-' or '_', starting with a "
                          "letter or digit")
    if out.exists() and not (out / "model.json").is_file():  # the shipped backbones' folders, a stray file
        raise HetsegError(f"--name {name}: {out} exists and is not a shipped model; fix: choose another --name")
    if (out / "model.json").is_file() and not replace:
        raise HetsegError(f"{out}: a model named {name} is already shipped; fix: pass --replace to overwrite it, "
                          "or choose another --name")
    if not run.is_dir():
        raise HetsegError(f"--run {run}: not a run directory; fix: pass the folder holding model.json and "
                          "model.safetensors")
    # Rebuilt and loaded as predict will: a run predict would refuse (damaged, NaN or misfitting
    # weights) is never shipped.
    net, _, info = load_model(run)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "model.safetensors", lambda tmp: save_file(half, tmp))
    # Without --about, `hetseg models` still says what the model is, and that nothing more was given.
    what = info.get("method", info.get("model"))
    summary = f"{what} from run {run.name} (no --about: scores and provenance not given)"
    own = {"name": name, "dtype": "float16"}  # what ship wrote: ``shipped`` never overrides it (keys keep this order)
    info["shipped"] = {**own, "summary": summary, **shipped, **own}
    write_json(out / "model.json", json.loads(json.dumps(info)))
    return out


__all__ = ["BACKBONE_DIR", "RESNET_BACKBONE_DIR", "backbone_dir", "ZOO_DIR", "shipped_backbone", "describe", "names", "read_about", "resolve", "ship"]
