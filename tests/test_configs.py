"""Every shipped config loads, names a registered method, and builds that method's model (paper
scale on the meta device); configs/ has every method at both scales."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hetseg.config import Config
from hetseg.methods import METHODS, get_method

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_builds_its_model(path):
    cfg = Config.load(path)
    if not (Path(cfg.data.root) / "meta.json").is_file():  # a clone has no generated fashion-scenes
        from hetseg.data.classes import FASHION_SOURCE, FASHION_TARGET

        cfg = cfg.override([f"transfer.source_classes={list(FASHION_SOURCE)}",
                            f"transfer.target_classes={list(FASHION_TARGET)}"] if not cfg.transfer.source_classes else [])
    method = get_method(cfg.model.name)
    with torch.device("meta"):
        net = method.build(cfg)
    assert net.num_classes == cfg.data.num_classes - 1 and net.model_name == method.model


def test_every_method_has_a_config_at_both_scales():
    have = {(Config.load(p).model.name, Config.load(p).model.scale) for p in CONFIGS}
    assert {(m, s) for m in METHODS for s in ("cpu", "paper")} <= have
