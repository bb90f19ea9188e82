"""What stops a training stage mid-way, said in one line (docs/GUARANTEES.md: "Bad input is one line", "Resume").

Each of these was a traceback through Lightning's frames, or (SIGTERM) a silent exit of status 0 that read as a
finished job. Generic: a stage is its directory name and its dotted config section (config.section_of)."""

from __future__ import annotations

import contextlib
import errno
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hetseg.config import StageConfig
from hetseg.engine.resume import checkpoint_step
from hetseg.errors import DataError, HetsegError

# refusals of a write into the stage's folder (others, e.g. too many open files, are not about it)
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
_WORKER_ERROR = re.compile(r"Caught \w+ in DataLoader worker process \d+")
_CHECK_THEN = ("; then hetseg data check with the same --config and settings finds any other bad file, and the same "
               "command resumes")


class WorkerGone(HetsegError):
    """A DataLoader worker died: after a SIGTERM to the process group, that is the SIGTERM (:func:`stops_kept`)."""


@contextlib.contextmanager
def stage_errors_said(name: str, section: str, sc: StageConfig, stage_dir: Path, workers: int = 0) -> Iterator[None]:
    """What stops a stage mid-way is one error line:

    - a bad file a batch draws (one corrupt past its header: only headers are read before the first step),
      also from a DataLoader worker, whose error reaches this process as torch's ``RuntimeError("Caught
      DataError in DataLoader worker process N. <traceback>")`` (every paper config sets data.workers); the
      fix names ``hetseg data check``, which finds every other bad file before the same command resumes;
    - a GPU out of memory: the fix halves the section's batch_size and doubles its accumulate (the same
      effective batch);
    - a DataLoader worker killed (torch: "DataLoader worker (pid N) is killed by signal: Bus error ..." or
      "... exited unexpectedly"), most often for shared memory in a container, and torch's "Too many open files"
      between workers and this process: the fix names the limit and data.workers, which a resume may change
      (config.RUNTIME_KEYS);
    - a disk's refusal without a file name (a checkpoint write on a full disk, over a quota): named by the stage's
      folder, so the CLI's one line for file-system errors says it (the last checkpoint is kept: Lightning
      writes it atomically)."""
    try:
        yield
    except DataError as e:
        if not e.path:  # not about a file: data check has nothing to find
            raise
        raise DataError(e.path, e.problem + ("" if e.fix else _CHECK_THEN), e.fix and e.fix + _CHECK_THEN) from None
    except torch.OutOfMemoryError:
        b, a = sc.batch_size, sc.accumulate
        elsewhere = " (in another run directory: this one holds its recipe)"
        fix = (f"{section}.batch_size={b // 2} {section}.accumulate={2 * a} keep the effective batch {a * b}{elsewhere}, "
               "or a GPU with more memory" if b % 2 == 0 else
               f"a smaller {section}.batch_size with a larger {section}.accumulate (their product is the effective "
               f"batch){elsewhere}, or a GPU with more memory" if b > 1 else
               "a GPU with more memory (a batch of one does not fit)")
        raise HetsegError(f"stage '{name}': out of GPU memory at batch_size {b}; fix: {fix}") from None
    except RuntimeError as e:
        text = str(e).strip()
        if text.startswith(("DataLoader worker (pid", "Too many open files.")) and workers:
            gone = WorkerGone if text.startswith("DataLoader worker (pid") else HetsegError
            raise gone(_worker_trouble(name, text, workers)) from None
        # a worker's own error: "Caught DataError in DataLoader worker process N. <traceback>", its last line
        qualname, sep, line = text.rsplit("\n", 1)[-1].partition(": ")
        module, _, cls_name = qualname.rpartition(".")
        cls = getattr(sys.modules.get(module), cls_name, None) if module.startswith("hetseg.") else None
        if not (_WORKER_ERROR.match(text) and sep and isinstance(cls, type) and issubclass(cls, DataError)):
            raise
        raise DataError(None, f"{line}{_CHECK_THEN}") from None
    except OSError as e:
        if e.filename is not None or e.filename2 is not None or e.errno not in _DISK_ERRNOS:
            raise
        raise OSError(e.errno, e.strerror, str(stage_dir)) from e


def _worker_trouble(name: str, text: str, workers: int) -> str:
    """The error line for torch's two messages about its DataLoader workers (not about a file or the recipe)."""
    resume = "; the same command resumes from the last checkpoint (data.workers may differ)"
    if text.startswith("Too many open files."):
        return (f"stage '{name}': too many open files between this process and its DataLoader workers (data.workers "
                f"{workers}); fix: raise the open-file limit (ulimit -n 65536) or set data.workers lower{resume}")
    first = text.split("\n", 1)[0].split(". ", 1)[0]  # torch's first sentence names the worker and its signal
    return (f"stage '{name}': {first} (data.workers {workers}); fix: a worker is most often killed for memory: give the "
            f"container more shared memory (docker run --shm-size=8g) or the machine more memory, or set data.workers "
            f"lower (0 loads batches in this process){resume}")


@contextlib.contextmanager
def stops_kept(trainer: L.Trainer) -> Iterator[None]:
    """Let :func:`stopped_line` speak for a stage Lightning stopped: on SIGTERM (a scheduler's preemption) it raises
    SIGTERMException, a SystemExit of status 0, and on Ctrl-C a silent SystemExit(1) from its KeyboardInterrupt
    handler. A SIGTERM sent to the process group also kills the DataLoader workers, which torch reports as a dead
    worker: that is the SIGTERM too. Any other exit or error goes on as it is."""
    try:
        yield
    except SystemExit as e:
        if not (isinstance(e, SIGTERMException) or isinstance(e.__context__, KeyboardInterrupt)):
            raise
    except WorkerGone:
        if not trainer.received_sigterm:
            raise


def stopped_line(name: str, trainer: L.Trainer, steps: int, ckpt_dir: Path, resume: str | None = None,
                 where: str = "") -> str:
    """The one line for a stage stopped before its end: where it stopped, and which step ``last.ckpt`` holds (the
    step a SIGTERM ended at, which ``Stage.on_train_batch_end`` saved; else the last periodic save). With
    ``--resume FILE`` the same command would start from FILE again, so the fix says to drop it."""
    how = ("by SIGTERM " if trainer.received_sigterm else "") + (where or f"at step {trainer.global_step}/{steps}")
    last = ckpt_dir / "last.ckpt"
    if not last.is_file():
        again = f" (it starts again from {resume})" if resume else ""
        return (f"{ckpt_dir.parent}: stage '{name}' stopped {how}, before any checkpoint of it was saved; fix: rerun "
                f"the same command{again}")
    held = checkpoint_step(last)
    if held is None:
        return f"{last}: stage '{name}' stopped {how}, and this checkpoint cannot be read; fix: rerun the same command"
    said = "" if held == trainer.global_step else f" (last.ckpt holds step {held})"
    fix = "rerun the same command without --resume" if resume else "rerun the same command to resume"
    return f"{last}: stage '{name}' stopped {how}{said}; fix: {fix}"


def diverged_fix(section: str, lr: float, precision: str, run_dir: Path) -> str:
    """The fix a diverged stage's line gives (``Stage.refuse_diverged``): the same recipe would diverge again on
    resume, so a lower lr (and float32 where it ran in another precision), into another run directory."""
    low = "" if precision in ("32-true", "64-true", "32", "64") else f", or {section}.precision=32-true"
    start = (f" (--init-from {run_dir} starts from its finished stages)" if (run_dir / "model.safetensors").is_file()
             else "")
    return f"a lower {section}.lr (it is {lr:g}){low}, trained into another run directory{start}"
