"""Data loading for training and the checks made before resuming from a Lightning checkpoint.

Resume reads checkpoints with ``torch.load(weights_only=True)``: a checkpoint is tensors,
numbers, strings and containers; anything else (a pickled object, e.g. a crafted payload) makes
the load fail and the resume is refused with a one-line error. Nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from hetseg.errors import HetsegError


def loader(ds: Dataset, batch_size: int, workers: int, shuffle: bool, seed: int) -> DataLoader:
    """The stage's DataLoader: shuffling drawn from a generator seeded by the run's seed."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, num_workers=workers,
                      generator=g, persistent_workers=False, pin_memory=torch.cuda.is_available())


def check_checkpoint(path: str | Path) -> None:
    """Refuse a checkpoint that is missing, not a Lightning checkpoint, corrupt, or that would need
    unpickling, before Lightning touches it (it then loads the same file with weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise HetsegError(f"{p}: no such checkpoint; fix: give a RUN/<stage>/checkpoints/last.ckpt file")
    try:
        # mmap: the tensors are not read (Lightning reads the file once more, for real).
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure means "do not trust this file"
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise HetsegError(f"{p}: not a loadable checkpoint ({why}); fix: delete it to restart the stage "
                          "from its beginning, or pass --resume with a checkpoint hetseg wrote") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise HetsegError(f"{p}: not a Lightning checkpoint written by hetseg; fix: delete it to restart "
                          "the stage")
