"""What a bench checks before it makes a folder or trains: inputs that would otherwise stop it hours in.

A bench reads its val split after every cell has trained, a k's strong split when that cell starts and
TransferNet's class lists when its second stage builds; at paper scale that is after a 5,500- to
15,000-step stage on a GPU (a review's finding, docs/DECISIONS.md "The benches' paper-scale recipes").
Each bench calls :func:`check_inputs` once, after its configs are built and before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hetseg.config import Config
from hetseg.engine.context import load_split, require_imagenet
from hetseg.errors import HetsegError


def check_inputs(cfg: Config, family: str, splits: Sequence[tuple[str, str, str, bool]]) -> None:
    """Refuse in one line a paper-scale run without its ImageNet file (``family``: "vgg" | "resnet") and
    any split of ``splits`` that is missing or does not load.

    ``splits``: (option the user sets, path relative to ``cfg.data.root`` or absolute, fix, load) tuples;
    ``load`` reads the whole split (masks and labels checked), else only its existence is checked (the
    weak set is read by the first stage anyway, and without labels.json reading it decodes every mask).
    """
    require_imagenet(cfg, family)
    root = Path(cfg.data.root)
    for option, rel, fix, load in splits:
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if not path.is_file():
            raise HetsegError(f"{option}: no split file {path}; fix: {fix}")
        if load:
            split = load_split(cfg, str(path))
            if not split.records:
                raise HetsegError(f"{option}: {path} lists no image; fix: {fix}")
