"""Exact resume: the data order as a function of (seed, epoch, position), the checks made before
resuming from a Lightning checkpoint, and the fault points the resume tests kill the process at.

Resume reads checkpoints with ``torch.load(weights_only=True)``: a checkpoint is tensors,
numbers, strings and containers; anything else (a pickled object, e.g. a crafted payload) makes
the load fail and the resume is refused with a one-line error. Nothing is ever unpickled.

The data order: :class:`EpochSampler` yields, epoch after epoch, exactly the order that
``DataLoader(shuffle=True, generator=manual_seed(seed))`` gives in one uninterrupted process, but
computed from (seed, epoch), so a resumed stage starts at the very batch where the checkpoint was
taken (the optimizer, schedule and step come back from the checkpoint; the datasets' augmentation
is seeded by (seed, epoch, index); the model draws no random numbers while training). Resume is then
bit-identical (docs/GUARANTEES.md), provided batches per epoch is a multiple of ``accumulate``.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hetseg.errors import HetsegError


class EpochSampler(Sampler[int]):
    """Indices of epoch ``epoch`` (set by Lightning through ``set_epoch``), optionally from ``skip``.

    The order replays what one seeded ``torch.Generator`` gives a shuffling DataLoader under
    Lightning per epoch: one int64 draw (the iterator's base seed), then the permutation (Lightning
    stops after len(loader) batches, so RandomSampler's remainder draw never runs) -- runs trained
    before this sampler existed keep their data order (checked on a two-epoch run).
    """

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """The sample order of ``epoch``: the same for the same seed and epoch, so a resumed run continues it."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch + 1):  # O(epoch * n) once per epoch: negligible next to a training epoch
            torch.empty((), dtype=torch.int64).random_(generator=g)
            perm = torch.randperm(self.n, generator=g)
        return perm.tolist()

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.n


def loader(ds: Dataset, batch_size: int, workers: int, shuffle: bool, seed: int) -> DataLoader:
    """The stage's DataLoader over an :class:`EpochSampler` (``drop_last`` when shuffling)."""
    return DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(ds), seed, shuffle), drop_last=shuffle,
                      num_workers=workers, generator=torch.Generator().manual_seed(seed), persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def set_epoch(dl: DataLoader, epoch: int) -> None:
    """Tell the loader's dataset (its augmentation seed) and sampler (its order) the epoch."""
    for part in (dl.dataset, dl.sampler):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def resume_position(dl: DataLoader, global_step: int, accumulate: int, epoch: int) -> None:
    """After a checkpoint restore: make the current epoch start at the batch the checkpoint reached."""
    if not isinstance(dl.sampler, EpochSampler):
        # Lightning wrapped the sampler (DDP): its own "not resumable" warning is silenced
        # (engine/console.py) because hetseg restores the position -- here it cannot, so say so.
        if global_step * accumulate % max(1, len(dl)):
            warnings.warn("hetseg: this sampler (e.g. DDP's) cannot be positioned inside the epoch, so the resumed "
                          "epoch's data order differs from an uninterrupted run's (docs/GUARANTEES.md, Resume)")
        return
    set_epoch(dl, epoch)  # Lightning does not rerun on_train_epoch_start for the epoch it resumes in
    skip = global_step * accumulate - epoch * len(dl)
    if 0 < skip < len(dl):
        dl.sampler.skip = skip * dl.batch_size


def fault_point(name: str) -> None:
    """Fault injection for the resume tests: SIGKILL this process when ``HETSEG_FAULT`` equals
    ``name`` (``step:<stage>:<n>``, ``saved:<stage>``, ``done:<stage>``); ``sigterm@`` or ``sigint@`` before
    the name sends that signal instead (a scheduler's preemption, Ctrl-C). Unset in normal use."""
    fault = os.environ.get("HETSEG_FAULT", "")
    sig, _, point = fault.rpartition("@")
    if point == name and sig in ("", "sigterm", "sigint"):
        os.kill(os.getpid(), {"": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[sig])


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint holds; None where there is no such file or it cannot be read (weights_only)."""
    if not path.is_file():
        return None
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # noqa: BLE001 - any failure: no step to name
        return None
    return step if isinstance(step, int) else None


def check_checkpoint(path: str | Path, stage: str | None = None,
                     shapes: dict[str, torch.Size] | None = None, own: bool = False, steps: int | None = None) -> None:
    """Refuse a checkpoint that is missing, not a Lightning checkpoint, corrupt, that would need
    unpickling, (given ``stage``) that another stage wrote, or (given ``shapes``, the resuming module's
    state-dict shapes) whose tensors do not fit the model (another method or data.num_classes: Lightning
    raised a traceback), before Lightning touches it (it then loads the same file with weights_only=True).
    ``own``: the run's own last.ckpt, found without --resume; only that one is worth deleting to restart
    the stage, a file passed by hand is the user's to keep. Given ``steps`` (the stage's budget), a checkpoint
    past it is refused: Lightning stopped at once and the run recorded more steps than its config says."""
    p = Path(path)
    fix = ("delete it to restart the stage from its beginning" if own else
           "give --resume a RUN/<stage>/checkpoints/last.ckpt that hetseg wrote (weights alone, such as "
           "model.safetensors, go to --init-from)")
    if not p.is_file():
        raise HetsegError(f"{p}: no such checkpoint; fix: give a RUN/<stage>/checkpoints/last.ckpt file")
    try:
        # mmap: the tensors are not read (Lightning reads the file once more, for real).
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure means "do not trust this file"
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise HetsegError(f"{p}: not a loadable checkpoint ({why}); fix: {fix}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise HetsegError(f"{p}: not a Lightning checkpoint written by hetseg; fix: {fix}")
    if steps is not None and isinstance(ckpt["global_step"], int) and ckpt["global_step"] > steps:
        raise HetsegError(f"{p}: at step {ckpt['global_step']}, past this stage's {steps} steps; fix: set the stage's "
                          f"steps to {ckpt['global_step']} or more, or " + (fix if own else "drop --resume"))
    # The stage it records; older checkpoints only say it by their folder (RUN/<stage>/checkpoints/).
    wrote = ckpt.get("hetseg_stage") or (p.parent.parent.name if p.parent.name == "checkpoints" else None)
    if stage is not None and wrote and wrote != stage:
        raise HetsegError(f"{p}: a checkpoint of stage '{wrote}', not of stage '{stage}'; fix: resume it with "
                          f"--stage {wrote} --run-dir RUN --config RUN/config.json (the run that wrote it)")
    if shapes is not None:
        theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
        odd = sorted(set(theirs) ^ set(shapes)) or sorted(k for k in theirs if theirs[k] != tuple(shapes[k]))
        if odd:
            k = odd[0]
            here = tuple(shapes[k]) if k in shapes else "absent"
            raise HetsegError(f"{p}: does not fit this run's model ({k}: {theirs.get(k, 'absent')} in the checkpoint, "
                              f"{here} here: another method, encoder or data.num_classes); fix: "
                              + (fix if own else "resume it with the config of the run that wrote it "
                                 "(--config RUN/config.json), or drop --resume"))
