"""The generic training stage: a LightningModule around a plain model that knows no method.

A method's stage subclasses :class:`Stage`, says which parts train (``train_parts``), optionally
which parameters get lr multipliers (``param_groups``), and writes ``training_step``. The base
class freezes everything else, keeps the frozen parts in eval mode for the whole stage (so their
BatchNorm statistics and dropout never change: "frozen means frozen", docs/GUARANTEES.md; after a
validation run Lightning restores each submodule's own mode), builds
the optimizer once (:mod:`hetseg.engine.optim`), moves images to channels_last and tells
epoch-aware datasets the epoch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from hetseg.config import StageConfig
from hetseg.engine.optim import ParamGroup, configure_optimizer


def freeze(net: nn.Module, train: Sequence[nn.Module] | None) -> list[nn.Module]:
    """Make only ``train`` (None: all of ``net``) trainable; return the frozen parts to keep in eval.

    The frozen parts are the largest submodules without a trainable parameter (a module with a
    trainable descendant stays in train mode; its frozen children are listed instead).
    """
    if train is None:
        net.requires_grad_(True)
        return []
    net.requires_grad_(False)
    for m in train:
        m.requires_grad_(True)

    def frozen_parts(m: nn.Module) -> list[nn.Module]:
        if not any(p.requires_grad for p in m.parameters()):
            return [m]
        return [f for c in m.children() for f in frozen_parts(c)]

    return frozen_parts(net)


def masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax CE over pixels with 255 ignored, normalised by valid pixels (docs/REFERENCE.md §1.6).

    logits (N, C, H, W), target (N, H, W) int64. A batch whose pixels are all void gives 0 loss and
    0 gradient instead of NaN (the TransferNet Caffe patch does the same, docs/REFERENCE.md §3.6).
    """
    if not bool((target != 255).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=255)


class Stage(L.LightningModule):
    """Base of every stage. ``train_parts`` None trains the whole ``net``."""

    def __init__(self, net: nn.Module, sc: StageConfig, train_parts: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        self.net = net
        self.sc = sc
        self.frozen = freeze(net, train_parts)
        # A model's pretrained parts (Segmenter.pretrained_modules) learn at sc.pretrained_lr_mult.
        self.pretrained_parts = net.pretrained_modules() if hasattr(net, "pretrained_modules") else []
        if sc.pretrained_lr_mult == 0.0:
            # Multiplier 0 = a fixed pretrained encoder: frozen like any other frozen part (eval-mode
            # BN, no gradient computed through it), not merely given a zero learning rate.
            for m in self.pretrained_parts:
                if any(p.requires_grad for p in m.parameters()):
                    m.requires_grad_(False)
                    self.frozen.append(m)
        self.stage_name = ""  # set by run_stage (names fault points)
        # Training seconds of the sessions before a resume (from the checkpoint), and this session's start:
        # a stage killed and resumed reports the time of all its sessions, not of the last one only.
        self.wall_before, self._t_start = 0.0, time.perf_counter()
        # One entry per session of the stage -- {"from_step", "precision", "device"}, carried in the checkpoint --
        # since a stage resumed on another machine may go on in another precision (`precision: auto`).
        self.sessions: list[dict] = []
        self._step_seen, self._saved_on_sigterm = 0, False
        self.diverged_fix = "a lower lr"  # run_stage names the config section and run directory
        self._set_modes()

    def _set_modes(self) -> None:
        # Lightning (>= 2.2) keeps whatever mode each submodule is in when fit starts, so a part
        # that a previous stage kept frozen would stay in eval mode here: set every mode explicitly.
        self.net.train()
        for m in self.frozen:
            m.eval()

    def param_groups(self) -> list[ParamGroup]:
        """Override to give some parameters lr multipliers. Default: the parameters of the model's
        ``pretrained_modules()`` at ``sc.pretrained_lr_mult``, every other one at multiplier 1."""
        pre = {id(p) for m in self.pretrained_parts for p in m.parameters()}
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        mult = self.sc.pretrained_lr_mult
        return [ParamGroup([p for p in trainable if id(p) not in pre]),
                ParamGroup([p for p in trainable if id(p) in pre], mult, mult)]

    def configure_optimizers(self):
        return configure_optimizer(self.param_groups(), self.sc)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def on_train_start(self) -> None:
        self._t_start = time.perf_counter()  # after any checkpoint restore, before the first step
        self._step_seen = self.trainer.global_step
        from hetseg.engine.train import device_label  # train imports this module

        self.sessions.append({"from_step": self.trainer.global_step, "precision": self.trainer.precision,
                              "device": device_label()})
        self._set_modes()
        # After a checkpoint restore (global_step > 0), continue the data order where it stopped.
        if self.trainer.global_step > 0:
            from hetseg.engine.resume import resume_position

            resume_position(self.trainer.train_dataloader, self.trainer.global_step,
                            self.trainer.accumulate_grad_batches, self.trainer.current_epoch)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        from hetseg.engine.resume import fault_point

        step = self.trainer.global_step
        fault_point(f"step:{self.stage_name}:{step}")
        stepped, self._step_seen = step != self._step_seen, step
        # A SIGTERM (a scheduler's preemption) ends the stage after this batch (Lightning's SIGTERMException):
        # save this step first, so that the resume loses nothing. Not inside an accumulation (its first
        # batches would be lost from the epoch's position) and not under torchrun (save_checkpoint waits at a
        # barrier that ranks which have not seen the signal yet never reach): the last periodic save then.
        trainer = self.trainer
        if trainer.received_sigterm and stepped and trainer.world_size == 1 and not self._saved_on_sigterm:
            trainer.save_checkpoint(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt")
            self._saved_on_sigterm = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.refuse_diverged()  # before the checkpoint is written: last.ckpt keeps the last finite weights
        checkpoint["hetseg_stage"] = self.stage_name  # engine.resume.check_checkpoint: resumed by this stage only
        checkpoint["hetseg_wall_s"] = self.wall_before + time.perf_counter() - self._t_start
        checkpoint["hetseg_sessions"] = self.sessions

    def refuse_diverged(self) -> None:
        """Stop a stage whose weights (or BatchNorm statistics) hold NaN or inf: at each checkpoint save, before it is
        written, and once more when the stage's steps are done (``engine.train.run_stage``), before the method writes
        its model. A diverged stage trained to its last step and wrote a model that eval and predict refuse
        (engine/checkpoint.load_weights), hours later. Checked per save, not per step: no GPU sync per step, and a
        float16 run's skipped steps (inf gradients, finite weights) are not divergence."""
        from hetseg.engine.checkpoint import first_non_finite
        from hetseg.errors import HetsegError

        broken = first_non_finite(self.net.state_dict())
        if broken is not None:
            raise HetsegError(f"stage '{self.stage_name}': the weights hold NaN or inf at step {self.trainer.global_step} "
                              f"(first in {broken}): the training diverged, and no checkpoint was written with them; "
                              f"fix: {self.diverged_fix}")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Steps after the last checkpoint of a killed session are redone and counted once more, as they cost.
        self.wall_before = float(checkpoint.get("hetseg_wall_s", 0.0))
        # A checkpoint written before sessions were recorded: its sessions' precision and device are unknown.
        self.sessions = [dict(s) for s in checkpoint.get("hetseg_sessions")
                         or [{"from_step": 0, "precision": None, "device": None}]]

    def on_fit_start(self) -> None:
        if self.sc.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.sc.channels_last:  # images only; masks and label vectors are not 4-D
            batch = [b.contiguous(memory_format=torch.channels_last) if torch.is_tensor(b) and b.ndim == 4 else b
                     for b in batch]
        return batch

    def on_train_epoch_start(self) -> None:
        from hetseg.engine.resume import set_epoch

        set_epoch(self.trainer.train_dataloader, self.current_epoch)
