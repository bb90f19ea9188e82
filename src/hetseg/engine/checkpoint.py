"""Portable model files: weights in safetensors + a JSON sidecar (config, classes, palette, version).

Lightning checkpoints are only for resuming. Loading a model never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

import hetseg
from hetseg.config import Config
from hetseg.errors import HetsegError
from hetseg.palette import voc_colormap


def build_model(cfg: Config) -> nn.Module:
    """The network a config describes (no weights loaded)."""
    from hetseg.models import create_model

    name = cfg.model.name
    if name == "decouplednet":
        return create_model(name, num_classes=cfg.data.num_classes - 1, scale=cfg.model.scale,
                            weight_pool=cfg.model.weight_pool)
    if name == "deconvnet":
        return create_model(name, num_classes=cfg.data.num_classes, scale=cfg.model.scale)
    raise HetsegError(f"unknown model '{name}' in config; fix: model.name=decouplednet|deconvnet")


def save_model(run_dir: str | Path, net: nn.Module, cfg: Config, class_names: list[str], meta: dict) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``run_dir``; returns the weights path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = run_dir / "model.safetensors"
    save_file(state, str(path))
    info = {"hetseg_version": hetseg.__version__, "config": cfg.to_dict(), "class_names": class_names,
            "palette": voc_colormap(len(class_names)).tolist(), **meta}
    (run_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def load_weights(net: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights (``--init-from``): a run dir or a ``.safetensors`` file."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix != ".safetensors" or not p.is_file():
        raise HetsegError(f"{p}: no safetensors weights here; fix: pass a run directory or a .safetensors file")
    missing, unexpected = net.load_state_dict(load_file(str(p)), strict=False)
    if strict and (missing or unexpected):
        raise HetsegError(f"{p}: weights do not fit this model (missing {missing[:3]}..., unexpected "
                          f"{unexpected[:3]}...); fix: check model.name/model.scale/data.num_classes")


def load_model(run: str | Path) -> tuple[nn.Module, Config, dict]:
    """Rebuild a trained model from a run directory (``model.json`` + ``model.safetensors``)."""
    run = Path(run)
    if run.is_file():
        run = run.parent
    meta_path = run / "model.json"
    if not meta_path.is_file():
        raise HetsegError(f"{run}: no model.json; fix: pass a run directory written by 'hetseg train'")
    info = json.loads(meta_path.read_text())
    cfg = Config.from_dict(info["config"])
    net = build_model(cfg)
    load_weights(net, run / "model.safetensors")
    net.eval()
    return net, cfg, info


__all__ = ["build_model", "save_model", "load_weights", "load_model"]
