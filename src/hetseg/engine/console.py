"""Console output a person can read: one progress bar with ETA per stage, no library chatter.

Lightning prints device-availability INFO lines on every ``Trainer``, an advertising "Tip" and
warnings about worker counts that a 2-core set-up chooses deliberately (``data.workers=0``). They
are silenced where they are emitted (their loggers and exact messages); other warnings still show.
"""

from __future__ import annotations

import logging
import sys
import warnings

from lightning.pytorch.callbacks import ProgressBar

_NOISE = (
    r".*does not have many workers.*",               # workers=0 is the 2-core default, on purpose
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",  # torch.utils._pytree, via Lightning
    r".*Checkpoint directory .* exists and is not empty.*",   # resuming writes into it by design
    r".*Experiment logs directory .* exists and is not empty.*",  # resumed: the old log is kept as
                                                                 # metrics.partN.csv; restarted from step 0:
                                                                 # the stale log is replaced (engine/train.py)
    r".*module\(s\) in eval mode at the start of training.*",  # the frozen parts, on purpose (stage.py)
    r".*You defined a `validation_step` but have no `val_dataloader`.*",  # stages validate only when given data
    r".*resuming from a checkpoint that ended before the epoch ended.*",  # hetseg restores the position
                                                # inside the epoch itself (engine/resume.py: resume_position)
    r"(?s).*The dirpath has changed from .*won't be reloaded.*",  # --resume FILE of another run dir: hetseg
                                                # keeps no best-k checkpoints, so nothing is lost
    # a resume after checkpoint_every changed: the saved ModelCheckpoint's key differs; it keeps no best-k
    # state (another callback named here is still said)
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided during "
    r"`Trainer` instantiation\. Please add the following callbacks: \[([\"']ModelCheckpoint\{[^}]*\}[\"'](, )?)+\]\.$",
)


def quiet_lightning() -> None:
    """Silence Lightning's INFO lines and the known harmless warnings (idempotent)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)


class StageProgress(ProgressBar):
    """One tqdm bar per stage counting optimizer steps (not epochs), with ETA and the loss."""

    def __init__(self, name: str, total: int) -> None:
        super().__init__()
        self.name, self.total, self._bar, self._enabled = name, total, None, True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, initial=trainer.global_step, desc=f"stage {self.name}", unit="step",
                         dynamic_ncols=True, leave=False, file=sys.stderr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is None:
            return
        self._bar.update(trainer.global_step - self._bar.n)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self._bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A stage stopped by an error (e.g. an image that fails to decode mid-stage): clear the bar's line
        # first, or the one "hetseg: error:" line is printed glued onto the bar's.
        self.on_train_end(trainer, pl_module)
